"""The receiver's PostgreSQL store against a real PostgreSQL server: the SQLite store's tests run again
on it, and two receiver processes on one database store every record once and give a repeated
Idempotency-Key one answer, also when the two requests meet inside the database.

The server: $EDGE_AGENT_TEST_PG_DSN (postgresql://user:password@127.0.0.1:5432/dbname; the user
needs CREATE on the database, e.g. owns it; .ci/run sets it up), else a throwaway cluster this
module makes with the installed PostgreSQL (initdb into a temporary directory, pg_ctl on a free
port of 127.0.0.1, password authentication). Without either the tests are skipped, and fail
under CI=true. Each test gets its own schema (the DSN's search_path), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import psutil
import psycopg
import pytest
from psycopg import sql

import tests.test_cloud_receiver as sqlite_tests
import tests.test_http_sink as http_tests
from simulators.cloud.__main__ import main as receiver_main
from simulators.cloud.pgstore import PostgresStore, redact, without_password
from simulators.cloud.process import CloudReceiver
from simulators.cloud.store import Row, StoreBusy, StoreError, open_store
from simulators.factory import FactoryThread
from simulators.ports import free_port
from tests.helpers import unavailable, until, wait_until
from tests.test_cloud_receiver import ORIGIN, TOKEN, Answer, batch, ids, post, speeds
from uploader import wire

DSN_VARIABLE = "EDGE_AGENT_TEST_PG_DSN"
_SERVER_START_S = 60
_LOCK_WAIT_S = 30.0


# -- a server, a schema per test -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A DSN (with a password) of a database on a running PostgreSQL server on this machine."""
    dsn = os.environ.get(DSN_VARIABLE, "").strip()
    if dsn:
        if not dsn.startswith(("postgresql://", "postgres://")):
            unavailable(f"{DSN_VARIABLE} must be a URL like postgresql://user:password@127.0.0.1:5432/dbname")
        try:
            psycopg.connect(dsn, connect_timeout=10).close()
        except psycopg.Error as e:
            unavailable(f"cannot connect to {DSN_VARIABLE} ({redact(dsn)}): {' '.join(str(e).split())}")
        yield dsn
        return
    yield from _throwaway_cluster()


def _throwaway_cluster() -> Iterator[str]:
    """initdb + pg_ctl start in a temporary directory, as the postgres user when we are root."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        unavailable(
            f"no PostgreSQL server: set {DSN_VARIABLE}=postgresql://user:password@127.0.0.1:5432/dbname, "
            "or install PostgreSQL (apt-get install postgresql) for a throwaway cluster"
        )
    bindir = found[-1].parent
    as_owner: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no postgres user to run a throwaway PostgreSQL cluster as")
        as_owner = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="edge-agent-pg-"))
    data, password, port = base / "data", secrets.token_hex(16), free_port()
    (base / "password").write_text(password + "\n")
    if owner is not None:
        for p in (base, base / "password"):
            os.chown(p, owner.pw_uid, owner.pw_gid)

    def pg(*args: str) -> None:
        done = subprocess.run([*as_owner, *args], capture_output=True, text=True, timeout=_SERVER_START_S)
        if done.returncode != 0:
            log = base / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            unavailable(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")

    started = False
    try:
        pg(
            str(bindir / "initdb"),
            *("-D", str(data), "-U", "postgres", "--pwfile", str(base / "password")),
            *("-A", "scram-sha-256", "-E", "UTF8", "--no-locale", "--no-instructions"),
        )
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base}"
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-o", options, "-w", "start")
        started = True
        yield f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(
                [*as_owner, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                timeout=_SERVER_START_S,
                check=False,
            )
        shutil.rmtree(base, ignore_errors=True)


def with_params(dsn: str, **params: str) -> str:
    return dsn + ("&" if "?" in dsn else "?") + urlencode(params, quote_via=quote)


@pytest.fixture
def schema(pg_server: str) -> Iterator[str]:
    """A fresh schema for this test, dropped with its tables afterwards."""
    name = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pg_dsn(pg_server: str, schema: str) -> str:
    """The DSN a store of this test uses: the server's, its tables in the test's schema."""
    return with_params(pg_server, options=f"-c search_path={schema}")


def stored_ids(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as c:
        return sorted(row[0] for row in c.execute("SELECT id FROM records"))


def lock_waits(dsn: str, application: str) -> list[str]:
    """What the sessions named `application...` wait on a lock in: "INSERT INTO records", "INSERT INTO idempotency"."""
    with psycopg.connect(dsn, autocommit=True) as c:
        found = c.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE %s AND wait_event_type = 'Lock'",
            (application + "%",),
        ).fetchall()
    return sorted(" ".join(row[0].split()[:3]) for row in found)


def two_receivers(tmp_path: Path, dsn: str, schema: str) -> tuple[CloudReceiver, CloudReceiver]:
    """Receivers a and b on one database; each names its sessions `{schema}-a` / `{schema}-b`."""
    return (
        CloudReceiver(tmp_path / "a", db=with_params(dsn, application_name=f"{schema}-a"), tokens=[TOKEN], name="a"),
        CloudReceiver(tmp_path / "b", db=with_params(dsn, application_name=f"{schema}-b"), tokens=[TOKEN], name="b"),
    )


# -- the SQLite store's tests, on PostgreSQL ----------------------------------------------------------------

# The tests of tests/test_cloud_receiver.py that are about what is stored and read back (not about
# HTTP handling), run unchanged with PostgresStore where they open SQLiteStore and read the ids back
# from PostgreSQL where they read the SQLite file.
STORE_TESTS: list[Callable[[Path], None]] = [
    sqlite_tests.test_a_batch_is_stored_and_queryable_latest_range_gaps_and_status,
    sqlite_tests.test_a_resent_batch_stores_no_duplicate,
    sqlite_tests.test_a_record_failing_the_schema_is_rejected_with_its_path_and_its_neighbours_stored,
    sqlite_tests.test_nan_infinities_64_bit_integers_and_empty_strings_survive_to_the_query_answer,
    sqlite_tests.test_chosen_ids_and_elements_are_rejected_with_the_given_reason,
]


@pytest.mark.parametrize("sqlite_test", STORE_TESTS, ids=lambda t: t.__name__)
def test_the_sqlite_store_tests_pass_on_postgresql(
    sqlite_test: Callable[[Path], None], pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[PostgresStore] = []

    def store(_path: Path) -> PostgresStore:
        opened.append(PostgresStore(pg_dsn))
        return opened[-1]

    monkeypatch.setattr(sqlite_tests, "SQLiteStore", store)
    monkeypatch.setattr(sqlite_tests, "stored_ids", lambda _db: stored_ids(pg_dsn))
    sqlite_test(tmp_path)
    assert opened, "the test did not open a store: it is not a store test"


# -- the store on its own ---------------------------------------------------------------------------------


def test_a_postgresql_dsn_opens_the_postgresql_store_and_a_refusal_never_shows_the_password(
    pg_server: str, pg_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(pg_dsn)
    try:
        assert isinstance(store, PostgresStore)
        assert store.assets() == []
    finally:
        store.close()

    secret = "s3cret-" + secrets.token_hex(6)
    nobody = f"postgresql://edge:{secret}@127.0.0.1:{free_port()}/cloud"
    with pytest.raises(StoreError) as refused:
        open_store(nobody)
    assert f"postgresql://edge@127.0.0.1:{nobody.rsplit(':', 1)[1]}" in str(refused.value)
    assert "Connection refused" in str(refused.value) and secret not in str(refused.value)

    # libpq's own message for a DSN it cannot parse quotes the password: it is not passed on.
    with pytest.raises(StoreError) as invalid:
        open_store(f"postgresql://edge:{secret}%zz@127.0.0.1/cloud")
    assert "not valid" in str(invalid.value) and secret not in str(invalid.value)

    _, password = without_password(pg_server)
    if password is not None:  # a server that checks passwords
        wrong = pg_server.replace(quote(password, safe=""), secret)
        with pytest.raises(StoreError, match="password authentication failed") as denied:
            open_store(wrong)
        assert secret not in str(denied.value) and redact(wrong) in str(denied.value)

    with caplog.at_level(logging.ERROR, logger="simulators.cloud"):
        assert receiver_main(["--db", nobody, "--token", TOKEN]) == 2
        assert receiver_main(["--db", str(tmp_path / "cloud.sqlite3")]) == 2
    assert "cannot open the PostgreSQL store postgresql://edge@127.0.0.1:" in caplog.text
    assert "no bearer token" in caplog.text
    assert secret not in caplog.text


def test_a_dsn_without_its_password_names_the_same_connection() -> None:
    for dsn in (
        "postgresql://edge:p%40ss%2Fw%3Ard@db.example:5433/edge_test?sslmode=require&options=-c%20search_path%3Dx",
        "postgres://recv%C3%A9r:pw@[::1]/cloud?application_name=receiver-a",
        "postgresql:///cloud?host=/var/run/postgresql&user=edge&password=pw",
        "postgresql://edge@h1:5432,h2:5433/cloud?target_session_attrs=read-write",
    ):
        url, password = without_password(dsn)
        assert url.startswith("postgresql://") and "pw" not in url and "p@ss" not in url
        assert password in ("p@ss/w:rd", "pw", None)
        expected = psycopg.conninfo.conninfo_to_dict(dsn)
        expected.pop("password", None)
        assert psycopg.conninfo.conninfo_to_dict(url) == expected, url
        assert redact(dsn) == url
    assert redact("postgresql://edge:pw@db.example:5433/edge_test") == "postgresql://edge@db.example:5433/edge_test"
    assert redact("postgresql://edge@db.example/cloud?sslpassword=key-pw&sslmode=verify-full") == (
        "postgresql://edge@db.example/cloud?sslmode=verify-full"
    )


def _row(seq: int) -> Row:
    rid = f"{ORIGIN}-{seq}"
    return Row(rid, ORIGIN, "test-site", "cnc01", "data", "sm", "Spindle.Speed", seq, b'{"id": "%s"}' % rid.encode())


def test_a_lost_connection_is_store_busy_without_the_password_and_the_next_call_reconnects(
    pg_dsn: str, schema: str
) -> None:
    store = PostgresStore(with_params(pg_dsn, application_name=f"{schema}-lost"))
    try:
        assert store.ingest("k1", "d1", [_row(1)], []).answer.accepted == 1
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            killed = c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                (f"{schema}-lost",),
            ).fetchall()
        assert killed == [(True,)]
        with pytest.raises(StoreBusy, match="lost the connection to the PostgreSQL store postgresql://") as busy:
            store.ingest("k2", "d2", [_row(2)], [])
        _, password = without_password(pg_dsn)
        assert password is None or password not in str(busy.value)
        assert store.ingest("k2", "d2", [_row(2)], []).answer.accepted == 1
        assert store.ingest("k1", "d1", [_row(1)], []).replayed
    finally:
        store.close()
    assert stored_ids(pg_dsn) == ids([1, 2])


# -- several receiver processes on one database ------------------------------------------------------------


async def _send(url: str, body: bytes, key: str) -> Answer:
    async with aiohttp.ClientSession(base_url=url) as session:
        return await post(session, body, key=key)


def test_two_receiver_processes_on_one_database_store_every_record_once(
    pg_dsn: str, schema: str, tmp_path: Path
) -> None:
    # 30 batches of 40 records, each overlapping the next by half. Every batch goes to both receivers
    # at once three times: under a key of each receiver's own, and under one key shared by both.
    batches = [batch(speeds(range(i * 20, i * 20 + 40))) for i in range(30)]
    unique = {s for i in range(30) for s in range(i * 20, i * 20 + 40)}

    async def send_all(a: str, b: str) -> list[tuple[str, Answer]]:
        posts = [(url, key.format(i), body) for i, body in enumerate(batches) for url, key in (
            (a, "a-{}"), (b, "b-{}"), (a, "same-{}"), (b, "same-{}"),
        )]  # fmt: skip
        answers = await asyncio.gather(*(_send(url, body, key) for url, key, body in posts))
        return [(key, answer) for (_, key, _), answer in zip(posts, answers, strict=True)]

    a, b = two_receivers(tmp_path, pg_dsn, schema)
    with a, b:
        # The DSN's password reaches the receivers through their environment, not their command lines.
        _, password = without_password(pg_dsn)
        commands = [" ".join(p.cmdline()) for p in psutil.Process().children() if "simulators.cloud" in p.cmdline()]
        assert len(commands) == 2 and all("--db postgresql://" in c for c in commands)
        assert password is None or not any(password in c for c in commands)
        answered = asyncio.run(send_all(a.url, b.url))
    assert [x.status for _, x in answered] == [200] * len(answered)

    first = [x for _, x in answered if "Idempotent-Replayed" not in x.headers]
    assert sum(x.json["accepted"] for x in first) == len(unique)
    assert sum(x.json["accepted"] + x.json["duplicates"] for x in first) == 3 * 30 * 40
    for i in range(30):
        shared = [x for key, x in answered if key == f"same-{i}"]
        assert shared[0].body == shared[1].body, f"same-{i} got two different answers"
        assert sorted(x.headers.get("Idempotent-Replayed", "") for x in shared) == ["", "true"]
    assert stored_ids(pg_dsn) == ids(unique)

    for receiver in (a, b):
        assert password is None or password not in receiver.log()
        assert "storing into postgresql://" in receiver.log()


@pytest.mark.parametrize(("blocker_ends", "accepted"), [("rollback", 10), ("commit", 9)])
def test_the_same_key_racing_inside_the_database_at_two_receivers_gets_one_answer(
    pg_dsn: str, schema: str, tmp_path: Path, blocker_ends: str, accepted: int
) -> None:
    """Receiver a claims the key and is held inside its transaction (a test transaction holds one of the
    batch's ids); b, given the same key and body, waits on a's claim, then answers what a answered."""
    body = batch(speeds(range(1, 11)))
    a, b = two_receivers(tmp_path, pg_dsn, schema)

    async def race(blocker: psycopg.Connection[Any]) -> tuple[Answer, Answer]:
        at_a = asyncio.ensure_future(_send(a.url, body, "race"))
        await until(lambda: lock_waits(pg_dsn, schema) == ["INSERT INTO records"], _LOCK_WAIT_S, "a")
        at_b = asyncio.ensure_future(_send(b.url, body, "race"))
        expected = ["INSERT INTO idempotency", "INSERT INTO records"]
        await until(lambda: lock_waits(pg_dsn, schema) == expected, _LOCK_WAIT_S, "b waiting on a's claim")
        assert not at_a.done() and not at_b.done()
        if blocker_ends == "commit":  # a's record 5 becomes a duplicate
            blocker.commit()
        else:
            blocker.rollback()
        return await at_a, await at_b

    with a, b, psycopg.connect(pg_dsn) as blocker:
        blocker.execute(
            "INSERT INTO records (id, origin, site, asset, lane, received_us, record)"
            " VALUES (%s, %s, 'test-site', 'cnc01', 'data', 0, '{}')",
            (f"{ORIGIN}-5", ORIGIN),
        )
        first, second = asyncio.run(race(blocker))
    assert (first.status, second.status) == (200, 200)
    assert first.json == {"accepted": accepted, "duplicates": 10 - accepted, "rejected": []}
    assert second.body == first.body
    assert "Idempotent-Replayed" not in first.headers and second.headers["Idempotent-Replayed"] == "true"
    assert stored_ids(pg_dsn) == ids(range(1, 11))


def test_a_deadlock_between_two_receivers_is_run_again_and_both_are_answered(
    pg_dsn: str, schema: str, tmp_path: Path
) -> None:
    """Records 1, 2, 3 at a and 3, 1 at b: a holds 1 and waits on 2 (held by a test transaction), b holds 3
    and waits on 1. Releasing 2 sends a on to 3: a deadlock, which PostgreSQL breaks by aborting one."""
    a, b = two_receivers(tmp_path, pg_dsn, schema)

    async def deadlock(blocker: psycopg.Connection[Any]) -> tuple[Answer, Answer]:
        at_a = asyncio.ensure_future(_send(a.url, batch(speeds([1, 2, 3])), "a-123"))
        await until(lambda: lock_waits(pg_dsn, f"{schema}-a") == ["INSERT INTO records"], _LOCK_WAIT_S)
        at_b = asyncio.ensure_future(_send(b.url, batch(speeds([3, 1])), "b-31"))
        await until(lambda: len(lock_waits(pg_dsn, schema)) == 2, _LOCK_WAIT_S, "b waiting on a")
        blocker.rollback()
        return await at_a, await at_b

    with a, b, psycopg.connect(pg_dsn) as blocker:
        blocker.execute(
            "INSERT INTO records (id, origin, site, lane, received_us, record) VALUES (%s, %s, 'x', 'data', 0, '{}')",
            (f"{ORIGIN}-2", ORIGIN),
        )
        answers = asyncio.run(deadlock(blocker))
        logs = a.log() + b.log()
    assert [x.status for x in answers] == [200, 200]
    assert sum(x.json["accepted"] for x in answers) == 3
    assert [x.json["accepted"] + x.json["duplicates"] for x in answers] == [3, 2]
    assert re.search(r"PostgreSQL aborted it \(deadlock detected.*running it again \(1 of 5\)", logs)
    assert stored_ids(pg_dsn) == ids([1, 2, 3])


# -- the agent, over HTTP, into PostgreSQL ------------------------------------------------------------------


class _PgBench(http_tests.Bench):
    """test_http_sink's bench with the receiver's records read from PostgreSQL."""

    def __init__(self, dsn: str, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.dsn = dsn

    def count(self) -> int:
        with psycopg.connect(self.dsn) as c:
            row = c.execute("SELECT count(*) FROM records").fetchone()
            return int(row[0]) if row else 0


def test_the_agent_stores_every_record_once_in_postgresql_through_failures_drops_and_lost_answers(
    tmp_path: Path, pg_dsn: str
) -> None:
    with (
        CloudReceiver(tmp_path / "cloud", db=pg_dsn, tokens=[TOKEN]) as cloud,
        http_tests.Hop(cloud.port) as hop,
        FactoryThread(port=free_port(), period=0.1, machines=1) as factory,
    ):
        bench = _PgBench(pg_dsn, tmp_path, cloud, factory.port, TOKEN, url=f"http://127.0.0.1:{hop.port}")
        with bench.agent() as agent:
            http_tests.grows(bench, 100, 60)
            mark = len(cloud.log())
            hop.eating = True  # stored, but the answers are lost: sent again, and not stored twice
            wait_until("requests whose answers were lost", lambda: len(http_tests.requests(cloud, mark)) >= 2, 20)
            hop.eating = False
            cloud.set_faults(fail_next=3)
            http_tests.grows(bench)
            mark = len(cloud.log())
            cloud.set_faults(drop_next=3)
            wait_until("dropped connections", lambda: cloud.log()[mark:].count("dropping the connection") == 3, 20)
            cloud.set_faults(throttle_next=1, retry_after=1)
            http_tests.grows(bench)
            assert agent.stop() == 0, agent.log()[-3000:]
        origin, last, _ = bench.buffer()
        waiting = _pending_ids(bench)  # on a loaded machine the 5 s drain at SIGTERM may not finish
    with psycopg.connect(pg_dsn) as c:
        ids = [r[0] for r in c.execute("SELECT id FROM records WHERE origin = %s", (origin,))]
    assert len(ids) == len(set(ids)), "a record stored twice"
    assert set(ids) | waiting == {wire.record_id(origin, n) for n in range(1, last + 1)}, "every record stored or kept"
    assert len(ids) > 200


def _pending_ids(bench: http_tests.Bench) -> set[str]:
    """Ids of the records still in the stopped agent's buffer (they go at its next start)."""
    from uploader.buffer import Buffer

    with Buffer(bench.data_dir / "buffer-cloud.db", quota_bytes=2**40) as buf:
        seqs: list[int] = []
        for lane in Buffer.LANES:
            while (batch := buf.begin(lane, 100_000)) is not None:
                seqs += [r.seq for r in batch.items]
        return {wire.record_id(buf.origin, s) for s in seqs}
