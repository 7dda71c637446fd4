"""The roller: folds the stream, in order, into the per-minute totals the results endpoint reads.

Experiments are split into shares (``ABACUS_ROLLUP_SHARDS``, by a hash of experiment_key); every
roller process takes its fair number of shares (shares / rollers running), each under a Redis lock,
and a dead roller's shares are taken over when its locks lapse. The protocol (locks, bookmarks,
rebuild requests) is ``shared.rollup.protocol``'s. A share reads only entries the workers have
already stored in ClickHouse, so the totals never count what ``abacus.events`` does not hold; it
skips dead-lettered entries for the same reason. Per step:

1. load the touched sessions' states (a cache, else ``abacus.rollup_events`` as of the step's
   start) and apply the events, sending the folded events to ``abacus.rollup_events`` as it goes,
   each row marked with the stream entry it was folded up to;
2. record the stream range folded (so a crash redoes exactly that range);
3. insert the rest of the events and ``contribution(after) - contribution(before)`` per variant
   and cohort minute, each under a token named after the range: a redone step that already
   reached ClickHouse is dropped;
4. move its bookmark past the range.

A redone step reads its sessions back as of its start: only rows folded up to the entry the step
starts after count, so the rows it (or a step after it) sent before crashing are passed over, and
it computes the same differences whichever of its inserts had landed; those are dropped by token.
Nothing is counted twice, and nothing the totals lack is ever taken for counted.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
import zlib

from clickhouse_connect.driver.exceptions import ClickHouseError
from redis.exceptions import RedisError

from shared.clickhouse import ClickHouse
from shared.rollup.protocol import RollupProtocol
from worker.metrics import RollerMetrics
from worker.rollup_share import LostLock, ShareRoller, step_token
from worker.rollup_stream import RollupStream
from worker.sink import RejectedBatch, RetryableSinkError

log = logging.getLogger(__name__)

_LOCK_TTL_MS = 10_000
_MAX_BACKOFF_S = 30.0

__all__ = ["LostLock", "Roller", "step_token"]


class Roller:
    """One roller process: elects itself for its fair number of shares and folds them in turn."""

    def __init__(
        self,
        protocol: RollupProtocol,
        stream: RollupStream,
        clickhouse: ClickHouse,
        cache_sessions: int,
        idle_wait_ms: int,
        owner: str | None = None,
        metrics: RollerMetrics | None = None,
    ) -> None:
        self.protocol = protocol
        self.metrics = metrics or RollerMetrics()
        self.stream = stream
        self.redis = stream.redis
        self.idle_wait_s = idle_wait_ms / 1000
        self.stopping = threading.Event()
        self.owner = owner or uuid.uuid4().hex
        self.shares = [
            ShareRoller(protocol.share(i), stream, clickhouse, cache_sessions, self.owner) for i in range(protocol.shards)
        ]
        # Shares in the order this roller prefers them, starting at one picked by its name, so
        # rollers starting together do not all reach for the same share first.
        first = zlib.crc32(self.owner.encode()) % protocol.shards
        self._preference = [(first + i) % protocol.shards for i in range(protocol.shards)]
        self.held: set[int] = set()

    @property
    def folded_events(self) -> int:
        return sum(share.folded_events for share in self.shares)

    def request_stop(self) -> None:
        self.stopping.set()

    def run(self, until_caught_up: bool = False) -> None:
        """Fold until asked to stop (or, with ``until_caught_up``, until this roller holds its fair
        number of shares and none has anything left that the workers stored). Stands by while
        other processes hold every share."""
        backoff = 0.5
        renewing_done = threading.Event()
        renewer = threading.Thread(target=self._keep_locks, args=(renewing_done,), name="abacus-rollup-lock", daemon=True)
        renewer.start()
        try:
            while not self.stopping.is_set():
                try:
                    worked, fair = self.run_once()
                    backoff = 0.5
                    if not worked:
                        if until_caught_up and len(self.held) >= fair:
                            return
                        self.stopping.wait(self.idle_wait_s)
                    continue
                except (RedisError, OSError, ClickHouseError, RetryableSinkError, RejectedBatch) as exc:
                    self.metrics.failures.inc()
                    log.warning("rollup step failed (%s); retrying in %.1fs", exc, backoff)
                except Exception:
                    # A bug must not silently end the rollup: results would quietly fall back to
                    # the slow path. Log it loudly and keep trying, like any other failure.
                    self.metrics.failures.inc()
                    log.exception("rollup step failed; retrying in %.1fs", backoff)
                for share in self.shares:
                    share.forget()  # after a failure, what ClickHouse holds is the truth
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
        finally:
            renewing_done.set()
            renewer.join()  # before releasing: it would otherwise take a free lock again
            self._settle_all()
            self._release_all()

    def run_once(self) -> tuple[bool, int]:
        """Elect, then one step of each share held; (whether any folded something, fair share)."""
        fair = self.elect()
        worked = False
        self.metrics.shares_held.set(len(self.held))
        for shard in sorted(self.held):
            share = self.shares[shard]
            started, folded_before = time.perf_counter(), share.folded_events
            if share.run_once():
                worked = True
                self.metrics.step_seconds.observe(time.perf_counter() - started)
                self.metrics.folded_events.inc(share.folded_events - folded_before)
        return worked, fair

    # ----- election ---------------------------------------------------------------------------
    def elect(self) -> int:
        """Keep the shares held, take free ones up to the fair number, give back any beyond it
        (another roller joined). Returns the fair number."""
        rollers = self.protocol.heartbeat(self.owner, _LOCK_TTL_MS)
        fair = math.ceil(self.protocol.shards / rollers)
        for shard in self._preference:
            share = self.shares[shard]
            if shard not in self.held and len(self.held) >= fair:
                continue
            taken = share.share.hold(self.owner, _LOCK_TTL_MS)
            if taken and shard not in self.held:
                log.info("this process now folds rollup share %d of %d", shard, self.protocol.shards)
                share.new_tenure()
                self.held.add(shard)
            elif not taken:
                self.held.discard(shard)
        for shard in reversed(self._preference):
            if len(self.held) <= fair:
                break
            if shard in self.held:
                log.info("giving rollup share %d of %d back to another roller", shard, self.protocol.shards)
                self._release(shard)
        return fair

    def _settle_all(self) -> None:
        """Let the steps being written land (or fail) before letting go of their shares."""
        for shard in list(self.held):
            try:
                self.shares[shard].settle()
            except Exception as exc:  # noqa: BLE001 - a step that did not land is redone by the next roller
                log.warning("rollup share %d: the last step did not land (%s); its next roller redoes it", shard, exc)
                self.shares[shard].forget()

    def _release(self, shard: int) -> None:
        try:
            self.shares[shard].settle()
        except Exception:  # noqa: BLE001 - its next roller redoes the recorded step
            self.shares[shard].forget()
        self.held.discard(shard)
        try:
            self.shares[shard].share.release(self.owner)
        except RedisError:
            pass  # it expires on its own

    def _release_all(self) -> None:
        for shard in list(self.held):
            self._release(shard)
        try:
            self.protocol.leave(self.owner)
        except RedisError:
            pass

    def _keep_locks(self, done: threading.Event) -> None:
        """Renew the locks every third of their lifetime, so a step or a rebuild whose ClickHouse
        statements run long does not let them lapse (run()'s thread)."""
        while not done.wait(_LOCK_TTL_MS / 3000):
            try:
                self.protocol.heartbeat(self.owner, _LOCK_TTL_MS)
                for shard in list(self.held):
                    if not self.shares[shard].share.renew(self.owner, _LOCK_TTL_MS):
                        self.held.discard(shard)  # taken over; its next step notices and stands by
            except RedisError:
                pass  # the step itself will fail on the same outage and back off
