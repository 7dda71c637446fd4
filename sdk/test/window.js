// A window for abacus.js under Node: a cookie jar, a localStorage, a manual clock, and a fetch
// whose answers each test decides. The real browser is driven by tests/browser/test_sdk_browser.py.
"use strict";
const { create } = require("../abacus.js");

const REGISTRY = [
  {
    experiment_key: "homepage_hero_test", name: "Hero", description: "", cookie_name: "exp_homepage_hero", enabled: true,
    eligible_routes: ["/"],
    variants: [
      { variant_key: "control", label: "Original", allocation: 50, is_control: true },
      { variant_key: "tiny_gang_social_proof", label: "Social proof", allocation: 50, is_control: false },
    ],
  },
  {
    experiment_key: "pricing_cta_test", name: "Pricing", description: "", cookie_name: "exp_pricing_cta", enabled: true,
    eligible_routes: ["/our-pricing"],
    variants: [
      { variant_key: "control", label: "Original", allocation: 50, is_control: true },
      { variant_key: "meet_greet_emphasis", label: "Meet", allocation: 50, is_control: false },
    ],
  },
  {
    experiment_key: "paused_test", name: "Off", description: "", cookie_name: "exp_paused", enabled: false, eligible_routes: [],
    variants: [
      { variant_key: "control", label: "A", allocation: 50, is_control: true },
      { variant_key: "b", label: "B", allocation: 50, is_control: false },
    ],
  },
];

class Storage {
  constructor() { this.items = new Map(); }
  getItem(key) { return this.items.has(key) ? this.items.get(key) : null; }
  setItem(key, value) { this.items.set(key, String(value)); }
  removeItem(key) { this.items.delete(key); }
}

function response(status, body, headers = {}) {
  return {
    ok: status >= 200 && status < 300, status,
    json: async () => body,
    headers: { get: (name) => (name.toLowerCase() in headers ? String(headers[name.toLowerCase()]) : null) },
  };
}

function makeWindow({ pathname = "/", protocol = "https:", storage = new Storage(), cookies = {}, registry = REGISTRY } = {}) {
  const jar = new Map(Object.entries(cookies).map(([k, v]) => [k, { value: v, attributes: "" }]));
  const listeners = {}, timers = [];
  const win = {
    now: 0, storage, jar, listeners, timers, requests: [], beacons: [], warnings: [], registry,
    // What ingest answers to the next batch POSTs, one entry per request; then 202.
    answers: [],
    location: { pathname, protocol },
    crypto: globalThis.crypto,
    localStorage: storage,
    console: { warn: (message) => win.warnings.push(message) },
    navigator: {
      sendBeacon(url, body) {
        win.beacons.push({ url, body: JSON.parse(body), bytes: Buffer.byteLength(body) });
        return true;
      },
    },
    setTimeout(fn, ms) {
      const timer = { fn, due: win.now + (ms || 0), id: timers.length + 1 };
      timers.push(timer);
      return timer.id;
    },
    clearTimeout(id) {
      const timer = timers.find((t) => t.id === id);
      if (timer) timer.cancelled = true;
    },
    addEventListener(type, fn) { (listeners[type] = listeners[type] || []).push(fn); },
    async fetch(url, options = {}) {
      const path = url.replace(/^https?:\/\/[^/]+/, "");
      const request = { url, path, options, body: options.body ? JSON.parse(options.body) : undefined };
      win.requests.push(request);
      if (path === "/api/experiments") {
        if (win.registry instanceof Error) throw win.registry;
        return response(200, win.registry);
      }
      const answer = path === "/api/experiments/batch" && win.answers.length ? win.answers.shift() : 202;
      if (answer instanceof Error) throw answer;
      return Array.isArray(answer) ? response(answer[0], {}, answer[1]) : response(answer, { ok: true });
    },
    document: {
      readyState: "complete", visibilityState: "visible", currentScript: null, head: { appendChild() {} },
      get cookie() { return [...jar].map(([k, c]) => `${k}=${c.value}`).join("; "); },
      set cookie(text) {
        const [pair, ...attributes] = text.split("; ");
        const eq = pair.indexOf("=");
        jar.set(pair.slice(0, eq), { value: pair.slice(eq + 1), attributes: attributes.join("; ") });
      },
      createElement: () => ({ style: {} }),
      getElementById: () => null,
      querySelectorAll: () => [],
      addEventListener(type, fn) { (listeners[type] = listeners[type] || []).push(fn); },
    },
  };
  return win;
}

// Lets promise callbacks run: fetch answers and the SDK's reactions to them.
async function settle() {
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
}

// Moves the manual clock on by ms, running each timer that falls due, in order.
async function advance(win, ms) {
  const end = win.now + ms;
  for (;;) {
    await settle();
    const due = win.timers.filter((t) => !t.cancelled && !t.ran && t.due <= end).sort((a, b) => a.due - b.due)[0];
    if (!due) break;
    win.now = due.due;
    due.ran = true;
    due.fn();
  }
  win.now = end;
  await settle();
}

function batches(win) {
  return win.requests.filter((r) => r.path === "/api/experiments/batch");
}

function queued(win) {
  return JSON.parse(win.storage.getItem("abacus_queue") || "[]");
}

async function started(options = {}, initOptions = {}) {
  const win = makeWindow(options);
  const sdk = create(win);
  const loaded = await sdk.init({ endpoint: "https://ingest.example/", ...initOptions });
  return { win, sdk, loaded };
}

module.exports = { REGISTRY, Storage, makeWindow, advance, settle, batches, queued, started, create };
