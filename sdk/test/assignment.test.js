// The shared vectors (also checked by tests/test_assignment.py against ingest/assignment.py).
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const Abacus = require("../abacus.js");
const vectors = require("./vectors.json");

test("hash matches GrowthBook's published cases", () => {
  for (const [seed, value, version, expected] of vectors.growthbook_hash) {
    assert.equal(Abacus.hash(seed, value, version), expected, `${seed} ${value} v${version}`);
  }
});

test("version 2 is the default hash", () => {
  assert.equal(Abacus.hash("seed", "a"), Abacus.hash("seed", "a", 2));
});

test("bucket ranges follow GrowthBook's rules", () => {
  for (const [name, [count, coverage, weights], expected] of vectors.growthbook_bucket_ranges) {
    const ranges = Abacus.bucketRanges(count, coverage, weights);
    assert.equal(ranges.length, expected.length, name);
    ranges.forEach((range, i) => {
      assert.ok(Math.abs(range[0] - expected[i][0]) < 1e-9 && Math.abs(range[1] - expected[i][1]) < 1e-9, `${name}: ${range}`);
    });
  }
});

test("chooseVariant takes the first range holding n", () => {
  for (const [name, n, ranges, expected] of vectors.growthbook_choose_variation) {
    assert.equal(Abacus.chooseVariant(n, ranges), expected, name);
  }
});

test("eligible route matching", () => {
  for (const [route, path, expected] of vectors.routes) {
    assert.equal(Abacus.routeMatches(route, path), expected, `${route} vs ${path}`);
  }
});

test("assignments agree with the vectors computed by both languages", () => {
  for (const [seed, visitor, allocations, n, index] of vectors.assignments) {
    assert.equal(Abacus.hash(seed, visitor, 2), n, `${seed} ${visitor}`);
    const weights = allocations.map((a) => a / 100);
    assert.equal(Abacus.chooseVariant(n, Abacus.bucketRanges(weights.length, 1, weights)), index);
  }
});

test("hash walks UTF-16 code units, as GrowthBook's does", () => {
  // An astral character is two code units; hashing its surrogates one by one must give the same.
  assert.equal(Abacus.hash("s", "\ud83d\ude00", 2), Abacus.hash("s", String.fromCharCode(0xd83d, 0xde00), 2));
  assert.notEqual(Abacus.hash("s", "\ud83d\ude00", 2), Abacus.hash("s", "\ud83d", 2));
});
