"""`abacus status`: the stream's state (shared/stream_status.py) as one screen of text."""

from __future__ import annotations

import os
import sys

from shared.stream_status import StreamStatus


def print_report(text: str) -> bool:
    """Print ``text``; False once the reader has closed stdout (`abacus status | head -1`).

    That is the reader's choice, not a failure: the command ends quietly (exit 0). Python would
    flush stdout again at exit and report the broken pipe, so stdout is pointed at /dev/null."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return False
    return True


def format_status(status: StreamStatus, worker_group: str) -> str:
    lines = [
        f"stream        {status.stream}: {status.length} entries",
        f"dead letters  {status.dead_letters}"
        + ("  (list and replay: POST /api/v1/admin/dead-letters/replay)" if status.dead_letters else ""),
        f"registry      generation {status.registry_generation if status.registry_generation is not None else '- (never published)'}",
        f"rollers       {status.rollers} running",
        "",
        f"{'group':32s} {'consumers':>9s} {'pending':>9s} {'undelivered':>11s} {'lag':>10s}",
    ]
    if not status.groups:
        lines.append("(no consumer groups yet: no worker has read this stream)")
    workers = next((g for g in status.groups if g.name == worker_group), None)
    for group in status.groups:
        undelivered = "?" if group.undelivered is None else str(group.undelivered)
        role = "workers" if group.name == worker_group else "rollup" if group.is_rollup else ""
        lines.append(
            f"{group.name:32s} {group.consumers:9d} {group.pending:9d} {undelivered:>11s} {_age(group.lag_s):>10s}  {role}"
        )
        if group.is_rollup and workers is not None and None not in (group.undelivered, workers.undelivered):
            behind = max(0, group.undelivered - workers.undelivered)  # type: ignore[operator]
            lines.append(f"{'':32s} rollup share behind the workers by {behind} entries")
    return "\n".join(lines)


def _age(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
