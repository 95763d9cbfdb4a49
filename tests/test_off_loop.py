"""What waits on the disk waits in the buffer's own thread, not on the agent's event loop (buffer.py,
"Threads"): checkpoints always, with `synchronous: full` every write. And nothing of "stored when it
returns, in the order asked, never twice, never lost" gives for it.

Each test uses a real buffer file and watches the statements SQLite runs, and on which thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import orjson
import pytest

from agent.committer import Committer
from agent.gaps import GapRecord
from tests.helpers import until
from uploader.buffer import Buffer, Row
from uploader.buffer.buffer import CHECKPOINT_PAGES
from uploader.file import FileSink
from uploader.forwarder import Batching, Forwarder

BIG = 1 << 34
PAD = b"x" * 200


def quick() -> Iterator[float]:
    return itertools.repeat(0.05)


def data(key: str, start: int, count: int) -> list[Row]:
    return [("data", key, float(n), b'{"n":%d,"p":"%s"}' % (n, PAD)) for n in range(start, start + count)]


def committer(buf: Buffer) -> Committer:
    return Committer([buf], delays=quick, timeout=1.0, report_s=60.0, quota_report=lambda _: [], on_stored=lambda: None)


def gap(n: int) -> GapRecord:
    return GapRecord("press", float(n), b'{"gap":%d}' % n, [])


def watch(buf: Buffer) -> list[tuple[str, str]]:
    """(thread name, statement) of every statement the buffer's connection runs from now on."""
    seen: list[tuple[str, str]] = []
    buf._store.conn.set_trace_callback(lambda sql: seen.append((threading.current_thread().name, sql)))
    return seen


@contextlib.contextmanager
def lock_held(buf: Buffer) -> Iterator[None]:
    """Another thread holds the buffer's lock until the block ends (for up to 60 s), as its own thread does while it
    checkpoints."""
    held, done = threading.Event(), threading.Event()

    def holding() -> None:
        with buf._lock:
            held.set()
            done.wait(60)

    thread = threading.Thread(target=holding)
    thread.start()
    try:
        assert held.wait(30)
        yield
    finally:
        done.set()
        thread.join()


@contextlib.contextmanager
def checkpoint_under_way(buf: Buffer) -> Iterator[None]:
    """The buffer's thread busy with a long checkpoint until the block ends."""
    with lock_held(buf):
        buf._checkpointing = True
        buf._in_thread(buf._checkpoint)
        yield


async def turns_while(task: asyncio.Future[object]) -> int:
    """How often the loop came round to this coroutine before `task` finished."""
    turns = 0
    while not task.done():
        turns += 1
        await asyncio.sleep(0)
    return turns


def test_checkpoints_run_in_the_buffers_thread_and_a_commit_meanwhile_waits_there_while_the_loop_goes_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"

    async def main() -> tuple[list[tuple[str, str]], int, int]:
        buf = Buffer(path, quota_bytes=BIG)
        seen = watch(buf)
        c = committer(buf)
        n = 0
        while not buf._queued:  # fill the WAL up to where a checkpoint is due
            assert await c.commit(data("press", n, 2_000))
            n += 2_000
        # The write that filled it queued a checkpoint in the buffer's thread; it cannot have ended yet (the
        # loop has not turned since), so the next commit waits behind it, and the loop turns meanwhile.
        after = asyncio.ensure_future(c.commit(data("press", n, 2_000)))
        turns = await turns_while(after)
        assert await after
        await until(lambda: not buf._queued, timeout=30, what="the buffer's thread idle")
        frames = buf.checkpoint_frames
        buf.close()
        return seen, turns, frames

    seen, turns, frames = asyncio.run(main())
    checkpoints = [thread for thread, sql in seen if "wal_checkpoint" in sql]
    assert checkpoints, "no checkpoint ran"
    assert all(t.startswith("buffer-") for t in checkpoints), f"a checkpoint ran on {checkpoints}"
    loop_thread = threading.main_thread().name
    assert any(t == loop_thread and sql.startswith("INSERT") for t, sql in seen), "commits run at once, on the loop"
    assert any(t.startswith("buffer-") and sql.startswith("INSERT") for t, sql in seen), "none waited behind it"
    assert turns > 2, f"the loop turned {turns} times while a commit waited for a checkpoint"
    # SQLite's own checkpoint (inside a commit, on the loop) runs at 2,000 pages: it never had to.
    assert CHECKPOINT_PAGES // 2 <= frames < 2 * CHECKPOINT_PAGES, f"the checkpoint found {frames} pages in the WAL"
    with Buffer(path, quota_bytes=BIG) as again:
        assert again.last_seq == again.pending()["data"] > 0


def test_with_synchronous_full_every_write_waits_in_the_buffers_thread(tmp_path: Path) -> None:
    async def main() -> tuple[list[tuple[str, str]], int]:
        with Buffer(tmp_path / "b.db", quota_bytes=BIG, synchronous="full") as buf:
            seen = watch(buf)
            c = committer(buf)
            commit = asyncio.ensure_future(c.commit(data("press", 0, 20_000)))
            turns = await turns_while(commit)
            assert await commit
            batch = await buf.in_order(buf.begin, "data", 500)
            assert batch is not None
            await buf.in_order(buf.end, batch, [r.seq for r in batch.items])
            return seen, turns

    seen, turns = asyncio.run(main())
    writes = [t for t, sql in seen if sql.startswith(("INSERT", "DELETE", "COMMIT"))]
    assert writes and all(t.startswith("buffer-") for t in writes), writes
    assert turns > 2  # the commit (and its fsync) did not hold the loop


def test_commits_asked_at_once_get_their_seqs_in_the_order_asked_with_checkpoints_between(tmp_path: Path) -> None:
    async def main() -> tuple[list[float], int]:
        with Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf:
            seen = watch(buf)
            c = committer(buf)
            # Each commit's rows carry its number as their time; large ones fill the WAL, so checkpoints queue
            # in between and the commits after them wait in the buffer's thread, the small ones among them.
            sizes = [9_000, 1, 50, 3, 9_000, 7, 2, 9_000, 1, 5] * 3
            results = await asyncio.gather(
                *(c.commit([("data", "press", float(i), PAD)] * n) for i, n in enumerate(sizes))
            )
            assert all(results)
            batch = buf.begin("data", BIG)
            assert batch is not None
            assert [r.seq for r in batch.items] == list(range(1, sum(sizes) + 1))
            return [r.ts for r in batch.items], sum("wal_checkpoint" in sql for _, sql in seen)

    times, checkpoints = asyncio.run(main())
    assert checkpoints >= 2
    assert times == sorted(times), "a later commit's rows were numbered before an earlier one's"


def test_a_gap_held_while_a_commit_waits_in_the_buffers_thread_is_written_by_the_next_commit(tmp_path: Path) -> None:
    async def main() -> None:
        with Buffer(tmp_path / "b.db", quota_bytes=BIG, synchronous="full") as buf:
            c = committer(buf)
            c.hold_gaps([gap(1)])
            commit = asyncio.ensure_future(c.commit(data("press", 0, 20_000)))
            await until(lambda: buf._queued, timeout=30, what="the commit in the buffer's thread")
            c.hold_gaps([gap(2)])  # e.g. a source lost meanwhile
            assert await commit
            assert buf.pending()["gap"] == 1
            assert await c.commit(data("press", 20_000, 1))
            batch = buf.begin("gap", BIG)
            assert batch is not None
            assert [orjson.loads(r.body)["gap"] for r in batch.items] == [1, 2]

    asyncio.run(main())


def test_a_commit_whose_caller_is_cancelled_is_stored_in_full_and_its_held_records_once(tmp_path: Path) -> None:
    path = tmp_path / "b.db"

    async def main() -> None:
        buf = Buffer(path, quota_bytes=BIG, synchronous="full")
        c = committer(buf)
        c.hold_gaps([gap(1)])
        caller = asyncio.ensure_future(c.commit(data("press", 0, 20_000)))
        await until(lambda: buf._queued, timeout=30, what="the commit in the buffer's thread")
        caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        assert caller.cancelled()
        await c.close()  # the commit went on without its caller
        assert buf.pending()["data"] == 20_000
        assert await c.commit(data("press", 20_000, 1))  # would write gap 1 again had the first left it held
        assert (buf.pending()["data"], buf.pending()["gap"]) == (20_001, 1)
        buf.close()

    asyncio.run(main())
    with Buffer(path, quota_bytes=BIG) as again:
        assert again.pending()["data"] == 20_001


def test_closing_a_buffer_waits_for_a_write_still_in_its_thread(tmp_path: Path) -> None:
    path = tmp_path / "b.db"

    async def main() -> None:
        buf = Buffer(path, quota_bytes=BIG, synchronous="full")
        write = asyncio.ensure_future(buf.in_order(buf.add, data("press", 0, 20_000)))
        await until(lambda: buf._queued, timeout=30, what="the write in the buffer's thread")
        write.cancel()  # the wait, not the write
        buf.close()

    asyncio.run(main())
    with Buffer(path, quota_bytes=BIG) as again:
        assert again.pending()["data"] == 20_000
        assert again.last_seq == 20_000


def test_without_an_event_loop_the_buffer_checkpoints_in_place(tmp_path: Path) -> None:
    with Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf:
        seen = watch(buf)
        for n in range(0, 60_000, 2_000):
            buf.add(data("press", n, 2_000))
        threads = {t for t, sql in seen if "wal_checkpoint" in sql}
        assert threads == {threading.current_thread().name}, threads
        assert buf.checkpoint_frames < 2 * CHECKPOINT_PAGES


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_commits_and_a_forwarder_sharing_a_buffer_deliver_every_record_once_and_in_order(
    tmp_path: Path, synchronous: Literal["normal", "full"]
) -> None:
    """Commits and the forwarder's batches, at once on the loop or queued in the buffer's thread behind
    checkpoints, and reads of the counts from the loop: nothing gets lost, doubled or reordered."""
    out = tmp_path / "out.jsonl"
    keys = ["press", "lathe", "oven"]
    per_commit, commits = 1_500, 40

    async def main() -> tuple[dict[str, int], int]:
        with Buffer(tmp_path / "b.db", quota_bytes=BIG, chunk_records=100, synchronous=synchronous) as buf:
            seen = watch(buf)
            c = committer(buf)
            sink = FileSink(out)
            fwd = Forwarder(
                buf, sink, site="s", batching=Batching(max_records=700, max_delay=0.05, in_flight=3), delays=quick
            )
            tasks = [asyncio.create_task(sink.run()), asyncio.create_task(fwd.run())]
            start = dict.fromkeys(keys, 0)
            for i in range(commits):
                key = keys[i % len(keys)]
                assert await c.commit(data(key, start[key], per_commit))
                start[key] += per_commit
                fwd.wake()
                if i % 4 == 0:
                    await asyncio.sleep(0)  # let the forwarder take batches between some of the commits
            await until(lambda: not sum(buf.pending().values()), timeout=60, what="the buffer drained")
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await sink.stop()
            assert buf.checkpoint_frames < 2 * CHECKPOINT_PAGES, "SQLite's own checkpoint had to run inside a commit"
            return buf.stats().delivered, sum("wal_checkpoint" in sql for _, sql in seen)

    delivered, checkpoints = asyncio.run(main())
    assert checkpoints >= 1
    assert delivered["data"] == per_commit * commits
    seen: dict[str, list[int]] = {k: [] for k in keys}
    ids: list[object] = []
    for line in out.read_bytes().splitlines():
        message = orjson.loads(line)
        for record in message["records"]:
            ids.append(record["id"])
            seen[message["asset"]].append(record["n"])
    assert len(ids) == len(set(ids)) == per_commit * commits, "a record was lost or sent twice"
    for key, ns in seen.items():
        assert ns == list(range(len(ns))), f"{key}'s records left out of order or with a hole"


def test_stats_do_not_wait_while_the_buffers_thread_has_the_file(tmp_path: Path) -> None:
    """A status page or a metrics scrape during a checkpoint answers with the file's size as last seen."""
    with Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf:
        buf.add(data("press", 0, 1_000))
        before = buf.stats()
        with lock_held(buf):  # what the buffer's thread does while it checkpoints
            began = time.monotonic()
            during = buf.stats()
            took = time.monotonic() - began
        assert took < 30, "stats() waited for the lock"
        assert (during.db_bytes, during.used_bytes, during.pending) == (
            before.db_bytes,
            before.used_bytes,
            before.pending,
        )
        buf.add(data("press", 1_000, 5_000))
        assert buf.stats().db_bytes > before.db_bytes  # with the thread idle, it looks again


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_a_call_whose_wait_is_cancelled_still_runs_in_its_turn(
    tmp_path: Path, synchronous: Literal["normal", "full"]
) -> None:
    async def main() -> tuple[int, int]:
        with Buffer(tmp_path / "b.db", quota_bytes=BIG, synchronous=synchronous) as buf:
            with checkpoint_under_way(buf):
                adding = asyncio.ensure_future(buf.in_order(buf.add, data("press", 0, 100)))
                await asyncio.sleep(0)
                adding.cancel()
                await asyncio.gather(adding, return_exceptions=True)
                queued = buf._queued  # the checkpoint and the add: both still to come
            await until(lambda: not buf._queued, timeout=30, what="the buffer's thread idle")
            return queued, buf.pending()["data"]

    queued, stored = asyncio.run(main())
    assert queued == 2
    assert stored == 100, "the add was taken back from the thread's queue"


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_a_release_given_in_order_also_releases_a_batch_whose_taker_was_cancelled_while_it_waited(
    tmp_path: Path, synchronous: Literal["normal", "full"]
) -> None:
    """A forwarder cancelled while its `begin()` waits in the buffer's thread leaves that batch open; the next
    run's (or the drain's) `release()`, given after it, gives its records back, so nothing stays held."""

    async def main() -> tuple[int, int]:
        with Buffer(tmp_path / "b.db", quota_bytes=BIG, synchronous=synchronous) as buf:
            buf.add(data("press", 0, 100))
            with checkpoint_under_way(buf):
                taking = asyncio.ensure_future(buf.in_order(buf.begin, "data", 10))
                await asyncio.sleep(0)
                taking.cancel()
                await asyncio.gather(taking, return_exceptions=True)
                releasing = asyncio.ensure_future(buf.in_order(buf.release))
                await asyncio.sleep(0)
            return await releasing, buf.waiting()["data"]

    released, waiting = asyncio.run(main())
    assert released == 10
    assert waiting == 100
