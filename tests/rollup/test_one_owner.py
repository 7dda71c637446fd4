"""The rollup protocol (shared/rollup/) is the only code that names the rollup's Redis keys:
every other module asks it (freshness, trim_bound, rollers_running, last_verification, ...)."""

from __future__ import annotations

import ast
from pathlib import Path

from shared import redis_keys

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ingest", "worker", "query_api", "shared", "abacus", "jobs")
OWNERS = (ROOT / "shared" / "rollup", ROOT / "shared" / "redis_keys.py")
# What redis_keys defines for the rollup (its keys, group names and the functions that name them),
# read from the module itself so a key added there is covered too.
ROLLUP_NAMES = {name for name in vars(redis_keys) if "rollup" in name.lower()} | {
    name for name in vars(redis_keys.StreamShard) if "rollup" in name.lower()
}
# Key and group names spelled out: "abacus:rollup:...", "abacus-rollup:<share>of<n>".
KEY_PREFIXES = ("abacus:rollup", "{abacus:rollup", "abacus-rollup:")


def rollup_key_uses(source: str) -> list[str]:
    """Each place ``source`` names a rollup key: a redis_keys rollup name (imported, or as an
    attribute), or a string literal that spells a rollup key."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ROLLUP_NAMES:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").endswith("redis_keys"):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name in ROLLUP_NAMES]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(KEY_PREFIXES):
            found.append(f"line {node.lineno}: {node.value!r}")
    return found


def test_the_check_sees_each_way_of_naming_a_rollup_key():
    assert {"ROLLUP_GROUP", "ROLLUP_REBUILD", "ROLLUP_ROLLERS", "ROLLUP_VERIFICATION", "rollup_step"} <= ROLLUP_NAMES
    assert len(rollup_key_uses("from shared import redis_keys\nredis_keys.ROLLUP_ROLLERS")) == 1
    assert len(rollup_key_uses("from shared.redis_keys import ROLLUP_REBUILD, stream_layout")) == 1
    assert len(rollup_key_uses("shard.rollup_step(0, 1)")) == 1
    assert len(rollup_key_uses("r.get('abacus:rollup:verification'); r.xgroup_create(s, 'abacus-rollup:0of2')")) == 2
    # Not keys: a thread named after the roller, the rollup's SQL, the protocol's own functions.
    assert rollup_key_uses("Thread(name='abacus-rollup'); ROLLUP_TOTALS_SQL; rollers_running(r, 0)") == []


def test_nothing_outside_the_rollup_protocol_names_its_keys():
    offenders = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if any(path == owner or owner in path.parents for owner in OWNERS):
                continue
            uses = rollup_key_uses(path.read_text(encoding="utf-8"))
            if uses:
                offenders[str(path.relative_to(ROOT))] = uses
    assert offenders == {}, "ask shared/rollup/protocol.py instead of reading or writing these keys"
