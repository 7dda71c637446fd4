/*! Abacus browser SDK: deterministic sticky assignment, beacons counted once. Apache-2.0 */
(function (root, factory) {
  var api = factory(root);
  if (typeof module == "object" && module.exports) {
    api.create = factory; // for tests: an instance over a window of their own
    module.exports = api;
  } else root.Abacus = api;
})(typeof self != "undefined" ? self : this, function (win) {
  "use strict";
  var doc = win.document, nav = win.navigator || {}, loc = win.location || {};
  var ID = "abacus_id", QUEUE = "abacus_queue", DAY = 864e5, BATCH = 50, MAX_BYTES = 60000;
  var VALID_ID = /^[A-Za-z0-9_.:-]{1,128}$/;
  var opts = { timeout: 1500, cacheTtl: DAY, maxBackoff: 60000, maxQueue: 500 };
  var registry = [], paused = false, started = null, applied = false, vid = null, store = null, mem = {};
  var seen = {}, chosen = {}, inflight = {}, beaconed = {}, timer = 0, retrying = false, failures = 0, sending;

  // GrowthBook's hash and bucket ranges (growthbook/growthbook packages/sdk-js/src/util.ts)
  function fnv(text) {
    for (var h = 0x811c9dc5, i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
    return h >>> 0;
  }
  function hash(seed, value, version) {
    seed = String(seed);
    value = String(value);
    if (version == null || version === 2) return (fnv(fnv(seed + value) + "") % 10000) / 10000;
    return version === 1 ? (fnv(value + seed) % 1000) / 1000 : null;
  }
  function bucketRanges(count, coverage, weights) {
    coverage = coverage == null ? 1 : Math.min(Math.max(coverage, 0), 1);
    var equal = [], total = 0, cum = 0;
    for (var i = 0; i < count; i++) equal.push(1 / count);
    if (!weights || weights.length !== count) weights = equal;
    weights.forEach(function (w) { total += w; });
    if (total < 0.99 || total > 1.01) weights = equal;
    return weights.map(function (w) {
      var start = cum;
      cum += w;
      return [start, start + coverage * w];
    });
  }
  function chooseVariant(n, ranges) {
    for (var i = 0; i < ranges.length; i++) if (n >= ranges[i][0] && n < ranges[i][1]) return i;
    return -1;
  }
  // Exact path, trailing slash ignored; a trailing "*" matches a prefix.
  function trim(path) { return path.replace(/\/+$/, "") || "/"; }
  function routeMatches(route, path) {
    var prefix = route.slice(0, -1);
    if (route.slice(-1) == "*") return path.indexOf(prefix) == 0 || trim(path) == trim(prefix);
    return trim(route) == trim(path);
  }

  try {
    (store = win.localStorage).setItem(ID + "_t", 1);
  } catch (e) { store = null; }
  function load(key) {
    try { return store ? JSON.parse(store.getItem(key)) : mem[key]; } catch (e) { return null; }
  }
  function save(key, value) {
    if (!store) mem[key] = value;
    else try { store.setItem(key, JSON.stringify(value)); } catch (e) { /* full */ }
  }
  function getCookie(name) {
    var parts = doc ? String(doc.cookie || "").split(/; */) : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) == name) try { return decodeURIComponent(parts[i].slice(eq + 1)); } catch (e) { return null; }
    }
    return null;
  }
  function setCookie(name, value) {
    // 400 days: the most browsers keep (Safari: 7, hence serverCookie)
    if (doc) doc.cookie = name + "=" + encodeURIComponent(value) + "; Max-Age=34560000; Path=/; SameSite=Lax" +
      (opts.cookieDomain ? "; Domain=" + opts.cookieDomain : "") + (loc.protocol == "https:" ? "; Secure" : "");
  }
  function randomId() {
    var b = new Uint8Array(16), out = "", i;
    if (win.crypto && win.crypto.getRandomValues) win.crypto.getRandomValues(b);
    else for (i = 0; i < 16; i++) b[i] = Math.random() * 256;
    for (i = 0; i < 16; i++) out += (b[i] + 256).toString(16).slice(1);
    return out;
  }
  function post(path, body, credentials) {
    return win.fetch(opts.endpoint + path, {
      method: "POST", body: JSON.stringify(body), keepalive: true, credentials: credentials || "omit",
      headers: { "Content-Type": "text/plain" } // CORS-safelisted: no preflight
    });
  }
  function visitorId() {
    if (!vid) {
      var cookie = getCookie(ID), kept = load(ID), last = load(ID + "_sync");
      vid = cookie && VALID_ID.test(cookie) ? cookie : kept && VALID_ID.test(kept) ? kept : randomId();
      setCookie(ID, vid); // each page view moves the expiry on
      save(ID, vid);
      if (opts.serverCookie && !(last && last.id == vid && Date.now() - last.at < DAY))
        post("/api/experiments/visitor", { visitor_id: vid, domain: opts.cookieDomain }, "include").then(function (r) {
          if (r.ok) save(ID + "_sync", { id: vid, at: Date.now() });
        }, function () {});
    }
    return vid;
  }

  function loadRegistry() {
    return new Promise(function (resolve) {
      function fromCache() {
        var cached = load("abacus_registry");
        resolve(cached && Date.now() - cached.at < opts.cacheTtl ? cached.list : null);
      }
      win.setTimeout(fromCache, opts.timeout);
      win.fetch(opts.endpoint + "/api/experiments", { credentials: "omit" })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(); })
        .then(function (list) {
          save("abacus_registry", { at: Date.now(), list: list });
          resolve(list);
        }, fromCache);
    });
  }
  function find(key) {
    return registry.filter(function (e) { return e.experiment_key === key; })[0];
  }
  function sticky(e) {
    var key = chosen[e.experiment_key] || getCookie(e.cookie_name);
    return e.variants.some(function (v) { return v.variant_key === key; }) ? key : null;
  }
  function variant(key) {
    var e = find(key), routes = e && e.eligible_routes;
    if (!e || !e.enabled || (routes.length && !routes.some(function (r) { return routeMatches(r, loc.pathname); }))) return null;
    var value = sticky(e);
    if (!value) {
      var weights = e.variants.map(function (v) { return v.allocation / 100; });
      var index = chooseVariant(hash(e.hash_seed || key, visitorId(), 2), bucketRanges(weights.length, 1, weights));
      if (index < 0) return null;
      value = e.variants[index].variant_key;
    }
    chosen[key] = value;
    setCookie(e.cookie_name, value);
    if (!seen[key]) {
      seen[key] = 1; // one impression per page view
      record(e, value, "impression", {});
    }
    return value;
  }
  function track(name, o) {
    o = o || {};
    var problem = invalid(name, o), count = 0;
    if (problem) warn("track: invalid " + problem + ", not recorded");
    else (o.experiment_key ? [find(o.experiment_key)] : registry).forEach(function (e) {
      var value = e && e.enabled && sticky(e);
      if (value) count += record(e, value, name, o);
    });
    return count;
  }
  // Ingest refuses a whole batch for one bad beacon: refuse it here
  function invalid(name, o) {
    var meta = o.metadata, v = o.value;
    if (!/^[a-z][a-z0-9_]{0,63}$/.test(name)) return "name";
    if (v != null && !(typeof v == "number" && v >= 0 && v < 1 / 0)) return "value";
    if (meta == null) return "";
    if (typeof meta != "object" || Array.isArray(meta) || Object.keys(meta).length > 32) return "metadata";
    for (var k in meta) {
      v = meta[k];
      if (typeof v != "string" && typeof v != "boolean" && !(typeof v == "number" && isFinite(v))) return "metadata." + k;
    }
    return bytes(JSON.stringify(meta)) > 4096 ? "metadata" : "";
  }
  function warn(text) {
    if (win.console) win.console.warn("Abacus " + text);
  }

  // The queue stays in localStorage until ingest answers: it outlives reloads and outages.
  function bytes(text) { return encodeURIComponent(text).replace(/%../g, "x").length; }
  function record(e, value, name, o) {
    var event = {
      experiment_key: e.experiment_key, variant_key: value, session_id: visitorId(),
      path: (loc.pathname || "/").slice(0, 2048), event_name: name, timestamp: new Date().toISOString(),
      event_id: randomId() // every retry is counted once
    };
    if (o.value != null) event.value = o.value;
    if (o.metadata) event.metadata = o.metadata;
    var queue = (load(QUEUE) || []).concat([event]);
    save(QUEUE, queue.slice(-opts.maxQueue));
    schedule(unsent().length < BATCH && 1000);
    return 1;
  }
  function unsent() {
    return (load(QUEUE) || []).filter(function (e) { return !inflight[e.event_id] && !beaconed[e.event_id]; });
  }
  function chunk(events) {
    for (var batch = [], size = 2, i = 0; i < events.length && batch.length < BATCH; i++) {
      size += bytes(JSON.stringify(events[i])) + 1;
      if (batch.length && size > MAX_BYTES) break;
      batch.push(events[i]);
    }
    return batch;
  }
  function backoff(attempt, retryAfterS) {
    var delay = Math.min(opts.maxBackoff, 1000 * Math.pow(2, attempt - 1)) * (0.5 + Math.random() / 2);
    return Math.max(delay, (retryAfterS || 0) * 1000);
  }
  function schedule(ms) {
    if (retrying || paused || !started || (timer && ms)) return;
    win.clearTimeout(timer);
    timer = win.setTimeout(flush, ms || 0);
  }
  function flush() {
    win.clearTimeout(timer);
    timer = 0;
    retrying = false;
    if (paused || !opts.endpoint) return Promise.resolve();
    return sending || (sending = sendAll().then(function () { sending = null; }));
  }
  function sendAll() {
    var batch = chunk(unsent());
    if (!batch.length) return Promise.resolve();
    batch.forEach(function (e) { inflight[e.event_id] = 1; });
    return post("/api/experiments/batch", batch).then(null, function () {}).then(function (r) {
      var ids = {};
      batch.forEach(function (e) { delete inflight[e.event_id]; ids[e.event_id] = 1; });
      if (r && r.status < 500) {
        // Answered; a 4xx is never retried
        if (r.status >= 400) warn("ingest refused a batch: " + r.status);
        save(QUEUE, (load(QUEUE) || []).filter(function (e) { return !ids[e.event_id]; }));
        failures = 0;
        return sendAll();
      }
      retrying = true;
      win.clearTimeout(timer);
      timer = win.setTimeout(flush, backoff(++failures, r && parseFloat(r.headers.get("retry-after"))));
    });
  }
  function beaconAll() {
    // What it sends stays queued until a later page's fetch is answered (counted once).
    for (var events = unsent(), batch; !paused && opts.endpoint && nav.sendBeacon && events.length; events = events.slice(batch.length)) {
      batch = chunk(events);
      if (nav.sendBeacon(opts.endpoint + "/api/experiments/batch", JSON.stringify(batch)))
        batch.forEach(function (e) { beaconed[e.event_id] = 1; });
    }
  }

  function whenReady(fn) {
    if (doc.readyState == "loading") doc.addEventListener("DOMContentLoaded", fn);
    else fn();
  }
  function applyMarked() {
    var shown = {}, style = doc.getElementById("abacus-anti-flicker");
    if (applied) return;
    applied = true;
    doc.querySelectorAll("[data-abacus-experiment][data-abacus-variant]").forEach(function (el) {
      var key = el.getAttribute("data-abacus-experiment"), e = find(key);
      // No assignment: the control's content
      if (!(key in shown)) shown[key] = variant(key) || (e ? e.variants.filter(function (v) { return v.is_control; })[0].variant_key : "control");
      if (el.getAttribute("data-abacus-variant") !== shown[key]) {
        el.hidden = true;
        el.style.setProperty("display", "none", "important");
      }
    });
    if (style) style.parentNode.removeChild(style);
  }

  function init(options) {
    if (started) return started;
    for (var k in options || {}) opts[k] = options[k];
    opts.endpoint = String(opts.endpoint || "").replace(/\/+$/, "");
    if (!opts.endpoint) warn("init: no endpoint (the ingest origin) given");
    started = (opts.endpoint ? loadRegistry() : Promise.resolve(null)).then(function (list) {
      registry = (list || []).filter(function (e) { return e && e.variants; });
      paused = !!list && !list.length; // kill switch: no beacons at all
      if (!paused) visitorId(); // renews abacus_id's expiry on every page view
      if (doc) whenReady(applyMarked);
      if (!paused && unsent().length) schedule(0); // left by earlier pages
      return !!list;
    });
    if (doc) {
      doc.addEventListener("visibilitychange", function () { if (doc.visibilityState == "hidden") beaconAll(); });
      win.addEventListener("pagehide", beaconAll);
      win.addEventListener("online", flush);
    }
    return started;
  }

  var tag = doc && doc.currentScript, attr = function (name) { return tag && tag.getAttribute("data-" + name); };
  if (doc) {
    var style = doc.createElement("style");
    style.id = "abacus-anti-flicker";
    style.textContent = "[data-abacus-experiment][data-abacus-variant]{visibility:hidden!important}";
    (doc.head || doc.documentElement).appendChild(style);
    win.setTimeout(function () { whenReady(applyMarked); }, +attr("anti-flicker") || 1000);
  }
  if (attr("endpoint"))
    init({ endpoint: attr("endpoint"), serverCookie: attr("server-cookie") == "true", cookieDomain: attr("cookie-domain") });

  return {
    version: "1.0.0", init: init, variant: variant, track: track, flush: flush, visitorId: visitorId,
    hash: hash, bucketRanges: bucketRanges, chooseVariant: chooseVariant, routeMatches: routeMatches,
    _internal: { chunk: chunk, backoff: backoff, invalid: invalid }
  };
});
