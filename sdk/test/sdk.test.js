// abacus.js over a window of its own: cookies, assignment, the queue, retries and beacons.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { REGISTRY, Storage, makeWindow, advance, batches, queued, started, create } = require("./window.js");
const vectors = require("./vectors.json");

const VISITOR = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
// The shared vectors say which variant this visitor gets in homepage_hero_test.
const HERO = vectors.assignments.find(([seed, id]) => seed === "homepage_hero_test" && id === VISITOR)[4];
const HERO_VARIANT = REGISTRY[0].variants[HERO].variant_key;

test("a new visitor gets 128 random bits in a 400-day first-party cookie, mirrored in localStorage", async () => {
  const { win, sdk, loaded } = await started();
  assert.equal(loaded, true);
  const id = sdk.visitorId();
  assert.match(id, /^[0-9a-f]{32}$/);
  assert.equal(win.jar.get("abacus_id").value, id);
  assert.equal(win.jar.get("abacus_id").attributes, "Max-Age=34560000; Path=/; SameSite=Lax; Secure");
  assert.equal(JSON.parse(win.storage.getItem("abacus_id")), id);
  const other = await started();
  assert.notEqual(other.sdk.visitorId(), id);
});

test("no Secure attribute on http pages; a cookie domain when configured", async () => {
  const { win, sdk } = await started({ protocol: "http:" }, { cookieDomain: "example.com" });
  sdk.visitorId();
  assert.equal(win.jar.get("abacus_id").attributes, "Max-Age=34560000; Path=/; SameSite=Lax; Domain=example.com");
});

test("the visitor id comes back from localStorage when the cookie is gone", async () => {
  const storage = new Storage();
  storage.setItem("abacus_id", JSON.stringify(VISITOR));
  const { win, sdk } = await started({ storage });
  assert.equal(sdk.visitorId(), VISITOR);
  assert.equal(win.jar.get("abacus_id").value, VISITOR);
});

test("assignment is the shared vectors' and sticky in the experiment's cookie", async () => {
  const { win, sdk } = await started({ cookies: { abacus_id: VISITOR } });
  assert.equal(sdk.variant("homepage_hero_test"), HERO_VARIANT);
  assert.equal(win.jar.get("exp_homepage_hero").value, HERO_VARIANT);
  const other = REGISTRY[0].variants[1 - HERO].variant_key;
  const honoured = await started({ cookies: { abacus_id: VISITOR, exp_homepage_hero: other } });
  assert.equal(honoured.sdk.variant("homepage_hero_test"), other);
  const invalid = await started({ cookies: { abacus_id: VISITOR, exp_homepage_hero: "gone_variant" } });
  assert.equal(invalid.sdk.variant("homepage_hero_test"), HERO_VARIANT);
  assert.equal(invalid.win.jar.get("exp_homepage_hero").value, HERO_VARIANT);
});

test("one impression per experiment per page view, with the visitor id as session_id", async () => {
  const { win, sdk } = await started({ cookies: { abacus_id: VISITOR } });
  sdk.variant("homepage_hero_test");
  sdk.variant("homepage_hero_test");
  await sdk.flush();
  const sent = batches(win).flatMap((r) => r.body);
  assert.equal(sent.length, 1);
  assert.deepEqual(
    { ...sent[0], timestamp: undefined, event_id: undefined },
    { experiment_key: "homepage_hero_test", variant_key: HERO_VARIANT, session_id: VISITOR, path: "/", event_name: "impression", timestamp: undefined, event_id: undefined },
  );
  assert.match(sent[0].event_id, /^[0-9a-f]{32}$/);
  const options = batches(win)[0].options;
  assert.equal(options.headers["Content-Type"], "text/plain");
  assert.equal(options.keepalive, true);
  assert.deepEqual(queued(win), []);
});

test("ineligible pages, disabled and unknown experiments give no variant and send nothing", async () => {
  const { win, sdk } = await started({ pathname: "/our-pricing/" });
  assert.equal(sdk.variant("homepage_hero_test"), null);
  assert.equal(sdk.variant("paused_test"), null);
  assert.equal(sdk.variant("no_such_test"), null);
  assert.notEqual(sdk.variant("pricing_cta_test"), null); // trailing slash ignored
  assert.equal(sdk.track("conversion", { experiment_key: "paused_test" }), 0);
  await sdk.flush();
  assert.deepEqual(batches(win).flatMap((r) => r.body.map((e) => e.experiment_key)), ["pricing_cta_test"]);
});

test("the kill switch (an empty registry): no assignment and no beacon at all, not even old ones", async () => {
  const storage = new Storage();
  const old = { experiment_key: "homepage_hero_test", variant_key: "control", session_id: VISITOR, path: "/", event_name: "cta_click", event_id: "e1" };
  storage.setItem("abacus_queue", JSON.stringify([old]));
  const { win, sdk, loaded } = await started({ storage, registry: [] });
  assert.equal(loaded, true);
  assert.equal(sdk.variant("homepage_hero_test"), null);
  assert.equal(sdk.track("conversion"), 0);
  await sdk.flush();
  await advance(win, 5000);
  win.listeners.pagehide.forEach((fn) => fn());
  assert.deepEqual(batches(win), []);
  assert.deepEqual(win.beacons, []);
  assert.deepEqual(queued(win), [old]);
});

test("track records for the visitor's experiments, or only the one named", async () => {
  const { win, sdk } = await started({ cookies: { abacus_id: VISITOR, exp_pricing_cta: "control" } });
  sdk.variant("homepage_hero_test");
  assert.equal(sdk.track("conversion", { value: 12.5, metadata: { plan: "pro", seats: 3, trial: false } }), 2);
  assert.equal(sdk.track("cta_click", { experiment_key: "pricing_cta_test" }), 1);
  await sdk.flush();
  const sent = batches(win).flatMap((r) => r.body).map((e) => [e.experiment_key, e.event_name, e.value, e.metadata]);
  assert.deepEqual(sent, [
    ["homepage_hero_test", "impression", undefined, undefined],
    ["homepage_hero_test", "conversion", 12.5, { plan: "pro", seats: 3, trial: false }],
    ["pricing_cta_test", "conversion", 12.5, { plan: "pro", seats: 3, trial: false }],
    ["pricing_cta_test", "cta_click", undefined, undefined],
  ]);
});

test("events ingest would refuse are refused by track, with a warning", async () => {
  const { win, sdk } = await started({ cookies: { abacus_id: VISITOR } });
  sdk.variant("homepage_hero_test");
  const bad = [
    ["Conversion", {}], ["", {}], ["conversion", { value: -1 }], ["conversion", { value: Infinity }], ["conversion", { value: "3" }],
    ["conversion", { metadata: [1] }], ["conversion", { metadata: { nested: { a: 1 } } }], ["conversion", { metadata: { n: NaN } }],
    ["conversion", { metadata: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, i])) }],
    ["conversion", { metadata: { big: "x".repeat(4100) } }],
  ];
  for (const [name, options] of bad) assert.equal(sdk.track(name, options), 0, `${name} ${JSON.stringify(options).slice(0, 40)}`);
  assert.equal(win.warnings.length, bad.length);
  assert.equal(queued(win).length, 1); // the impression only
});

test("events are batched: at most 50 per request, and sent 1 s after the first", async () => {
  const { win, sdk } = await started({ cookies: { abacus_id: VISITOR } });
  sdk.variant("homepage_hero_test");
  await advance(win, 900);
  assert.equal(batches(win).length, 0);
  await advance(win, 100);
  assert.deepEqual(batches(win).map((r) => r.body.length), [1]);
  for (let i = 0; i < 120; i++) sdk.track("cta_click");
  await advance(win, 0); // a full batch goes at once
  await advance(win, 1000);
  assert.deepEqual(batches(win).map((r) => r.body.length), [1, 50, 50, 20]);
  const ids = batches(win).flatMap((r) => r.body.map((e) => e.event_id));
  assert.equal(new Set(ids).size, 121);
});

test("a 503 is retried after Retry-After with back-off, then counted once; the queue is kept meanwhile", async () => {
  const { win, sdk } = await started({ cookies: { abacus_id: VISITOR } });
  win.answers.push([503, { "retry-after": "3" }], new TypeError("Failed to fetch"), [503, { "retry-after": "1" }]);
  sdk.variant("homepage_hero_test");
  sdk.track("conversion");
  await sdk.flush();
  assert.equal(batches(win).length, 1);
  assert.equal(queued(win).length, 2);
  await advance(win, 2900);
  assert.equal(batches(win).length, 1, "not before Retry-After");
  await advance(win, 100);
  assert.equal(batches(win).length, 2);
  await advance(win, 60000);
  assert.equal(batches(win).length, 4);
  const [first, ...retries] = batches(win).map((r) => JSON.stringify(r.body));
  assert.ok(retries.every((body) => body === first), "every retry carries the same events and ids");
  assert.deepEqual(queued(win), []);
  await advance(win, 120000);
  assert.equal(batches(win).length, 4, "nothing more once accepted");
});

test("a 4xx is never retried", async () => {
  const { win, sdk } = await started({ cookies: { abacus_id: VISITOR } });
  win.answers.push(400);
  sdk.variant("homepage_hero_test");
  await sdk.flush();
  await advance(win, 120000);
  assert.equal(batches(win).length, 1);
  assert.deepEqual(queued(win), []);
  assert.match(win.warnings[0], /400/);
});

test("back-off doubles with jitter up to its ceiling and never undercuts Retry-After", async () => {
  const { sdk } = await started();
  const { backoff } = sdk._internal;
  for (let attempt = 1; attempt <= 10; attempt++) {
    const ceiling = Math.min(60000, 1000 * 2 ** (attempt - 1));
    for (let i = 0; i < 20; i++) {
      const delay = backoff(attempt, 0);
      assert.ok(delay >= ceiling / 2 && delay <= ceiling, `${attempt}: ${delay}`);
    }
  }
  assert.ok(backoff(1, 30) >= 30000);
});

test("what is unsent survives a reload and is sent by the next page", async () => {
  const storage = new Storage();
  const first = await started({ storage, cookies: { abacus_id: VISITOR } });
  first.win.answers.push(503);
  first.sdk.variant("homepage_hero_test");
  first.sdk.track("conversion");
  await first.sdk.flush();
  const lost = queued(first.win).map((e) => e.event_id);
  assert.equal(lost.length, 2);
  const second = await started({ storage, cookies: { abacus_id: VISITOR } });
  await advance(second.win, 0);
  assert.deepEqual(batches(second.win).flatMap((r) => r.body.map((e) => e.event_id)), lost);
  assert.deepEqual(queued(second.win), []);
});

test("the queue is bounded, the oldest events giving way", async () => {
  const { win, sdk } = await started({ cookies: { abacus_id: VISITOR } });
  win.answers.push(...Array(10).fill(503));
  sdk.variant("homepage_hero_test");
  await sdk.flush();
  for (let i = 0; i < 520; i++) sdk.track("step_" + i);
  const names = queued(win).map((e) => e.event_name);
  assert.equal(names.length, 500);
  assert.equal(names[0], "step_20");
  assert.equal(names[499], "step_519");
});

test("pagehide sends by sendBeacon in chunks under 64 KB; beaconed events are sent again by the next page", async () => {
  const storage = new Storage();
  const { win, sdk } = await started({ storage, cookies: { abacus_id: VISITOR } });
  sdk.variant("homepage_hero_test");
  const metadata = Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`k${i}`, "v".repeat(120)]));
  for (let i = 0; i < 40; i++) sdk.track("form_start", { metadata });
  win.listeners.pagehide.forEach((fn) => fn());
  assert.ok(win.beacons.length >= 2, `${win.beacons.length} beacons`);
  assert.ok(win.beacons.every((b) => b.bytes < 64 * 1024 && b.body.length <= 50));
  assert.equal(win.beacons.flatMap((b) => b.body).length, 41);
  assert.equal(batches(win).length, 0);
  win.listeners.pagehide.forEach((fn) => fn());
  assert.equal(win.beacons.flatMap((b) => b.body).length, 41, "nothing beaconed twice by one page");
  const next = await started({ storage, cookies: { abacus_id: VISITOR } });
  await advance(next.win, 1000);
  assert.equal(batches(next.win).flatMap((r) => r.body).length, 41);
  assert.deepEqual(queued(next.win), []);
});

test("visibilitychange to hidden sends by sendBeacon too", async () => {
  const { win, sdk } = await started({ cookies: { abacus_id: VISITOR } });
  sdk.variant("homepage_hero_test");
  win.document.visibilityState = "hidden";
  win.listeners.visibilitychange.forEach((fn) => fn());
  assert.equal(win.beacons.length, 1);
  assert.equal(win.beacons[0].url, "https://ingest.example/api/experiments/batch");
});

test("offline, a fresh cached registry is used; a stale one is not", async () => {
  const storage = new Storage();
  await started({ storage });
  const offline = await started({ storage, registry: new TypeError("Failed to fetch") });
  assert.equal(offline.loaded, true);
  assert.notEqual(offline.sdk.variant("homepage_hero_test"), null);
  const cached = JSON.parse(storage.getItem("abacus_registry"));
  storage.setItem("abacus_registry", JSON.stringify({ ...cached, at: Date.now() - 2 * 864e5 }));
  const stale = await started({ storage, registry: new TypeError("Failed to fetch") });
  assert.equal(stale.loaded, false);
  assert.equal(stale.sdk.variant("homepage_hero_test"), null);
});

test("a registry slower than the timeout gives way to the cache", async () => {
  const win = makeWindow();
  win.fetch = () => new Promise(() => {});
  const sdk = create(win);
  const init = sdk.init({ endpoint: "https://ingest.example", timeout: 200 });
  await advance(win, 200);
  assert.equal(await init, false);
});

test("serverCookie asks ingest to set the visitor cookie, once a day", async () => {
  const storage = new Storage();
  const { win, sdk } = await started({ storage }, { serverCookie: true, cookieDomain: "example.com" });
  const id = sdk.visitorId();
  await advance(win, 0);
  const calls = win.requests.filter((r) => r.path === "/api/experiments/visitor");
  assert.equal(calls.length, 1);
  assert.deepEqual(calls[0].body, { visitor_id: id, domain: "example.com" });
  assert.equal(calls[0].options.credentials, "include");
  const again = await started({ storage, cookies: { abacus_id: id } }, { serverCookie: true });
  again.sdk.visitorId();
  await advance(again.win, 0);
  assert.equal(again.win.requests.filter((r) => r.path === "/api/experiments/visitor").length, 0);
});

test("init without an endpoint resolves false and sends nothing", async () => {
  const win = makeWindow();
  const sdk = create(win);
  assert.equal(await sdk.init({}), false);
  assert.equal(sdk.variant("homepage_hero_test"), null);
  assert.deepEqual(win.requests, []);
  assert.match(win.warnings[0], /endpoint/);
});

test("chunk keeps batches under the beacon limit", async () => {
  const { sdk } = await started();
  const event = { metadata: { big: "é".repeat(2000) } }; // 4 KB of UTF-8
  const batch = sdk._internal.chunk(Array(50).fill(event));
  assert.ok(Buffer.byteLength(JSON.stringify(batch)) <= 60000);
  assert.ok(batch.length >= 10 && batch.length < 50);
});

test("a steady trickle of events does not keep putting the send off", async () => {
  const { win, sdk } = await started({ cookies: { abacus_id: VISITOR } });
  sdk.variant("homepage_hero_test");
  for (let i = 0; i < 4; i++) {
    await advance(win, 400);
    sdk.track("cta_click");
  }
  assert.ok(batches(win).length >= 1, "sent within a second of the first event");
  assert.equal(batches(win)[0].body.length, 3);
});
