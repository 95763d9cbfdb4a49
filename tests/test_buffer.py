"""The durable buffer, on real files and a real SQLite: delivery, ordering, chunks, crashes, quota, broken disks."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.helpers import fill, small_disk
from uploader.buffer import (
    SCHEMA_VERSION,
    Batch,
    Buffer,
    BufferCeilingError,
    BufferCorruptError,
    BufferFormatError,
    BufferFullError,
    BufferIOError,
    BufferLockedError,
    Dropped,
    Row,
    StoredRecord,
)
from uploader.buffer.records import MAX_HEAD
from uploader.buffer.recover import open_buffer
from uploader.buffer.safety import free_bytes

ROOT = Path(__file__).resolve().parents[1]
BIG = 1 << 30


def body(n: int, size: int = 300) -> bytes:
    head = b'{"n":%d,"v":"' % n
    return head + b"x" * (size - len(head) - 2) + b'"}'


def rows(lane: str, start: int, count: int, keys: tuple[str, ...] = ("press-01",)) -> list[Row]:
    """`count` rows numbered from `start`; ts = number, so time ranges are easy to predict."""
    return [(lane, keys[n % len(keys)], float(n), body(n)) for n in range(start, start + count)]


def grouped(added: list[Row]) -> list[Row]:
    """The rows of one add() in the order it gives them seqs: by (lane, key) as each first appears."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in added:
        groups.setdefault((row[0], row[1]), []).append(row)
    return [row for group in groups.values() for row in group]


def chunks(buf: Buffer, lane: str) -> list[tuple[int, str, int]]:
    """(first seq, key, records) of every chunk row stored for `lane` (the buffer holds the file's lock)."""
    return buf._store.conn.execute(f"SELECT seq, key, n FROM lane_{lane} ORDER BY seq").fetchall()


def done_rows(buf: Buffer) -> list[tuple[str, int, bytes]]:
    return buf._store.conn.execute("SELECT lane, chunk, mask FROM done ORDER BY lane, chunk").fetchall()


def drain(buf: Buffer, lane: str) -> list[StoredRecord]:
    """Everything stored in `lane` and not in an open batch, oldest first, left pending."""
    batch = buf.begin(lane, 1 << 20)
    if batch is None:
        return []
    buf.end(batch, [])
    return list(batch.items)


def merge(total: dict[str, tuple[int, float, float]], dropped: Dropped) -> None:
    for key, (count, first, last) in dropped.by_key.items():
        if key in total:
            n, f, la = total[key]
            total[key] = (n + count, min(f, first), max(la, last))
        else:
            total[key] = (count, first, last)


def by_key_of(dropped: Iterable[Row]) -> dict[str, tuple[int, float, float]]:
    """What Dropped.by_key must say for these rows."""
    result: dict[str, tuple[int, float, float]] = {}
    for _, key, ts, _ in dropped:
        n, first, last = result.get(key, (0, ts, ts))
        result[key] = (n + 1, min(first, ts), max(last, ts))
    return result


def expected_by_key(added: list[Row], dropped_seqs: set[int]) -> dict[str, tuple[int, float, float]]:
    """What Dropped must report, from the rows in seq order (seq n is added[n - 1] in a fresh file)."""
    return by_key_of(added[seq - 1] for seq in dropped_seqs)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "buffer.db"


@pytest.fixture
def buf(path: Path) -> Iterator[Buffer]:
    with Buffer(path, quota_bytes=BIG) as buffer:
        yield buffer


# --- delivery ---------------------------------------------------------------------------------


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_added_records_come_back_in_order_and_are_deleted_when_accepted(path: Path, synchronous: str) -> None:
    with Buffer(path, quota_bytes=BIG, synchronous=synchronous) as buf:  # type: ignore[arg-type]
        added = rows("data", 0, 5, keys=("a", "b"))
        assert buf.add(added) == Dropped(0, {})
        batch = buf.begin("data", 10)
        assert batch is not None
        assert batch.lane == "data"
        # Seqs go to all of key a's rows, then key b's; each key's rows keep their order.
        assert [(i.lane, i.key, i.ts, i.body) for i in batch.items] == grouped(added)
        assert [(i.seq, i.key, i.ts) for i in batch.items] == [
            (1, "a", 0.0),
            (2, "a", 2.0),
            (3, "a", 4.0),
            (4, "b", 1.0),
            (5, "b", 3.0),
        ]
        assert buf.begin("data", 10) is None
        assert buf.pending()["data"] == 5

        buf.end(batch, [i.seq for i in batch.items])

        assert buf.pending()["data"] == 0
        assert buf.begin("data", 10) is None
        stats = buf.stats()
        assert stats.added["data"] == stats.delivered["data"] == 5
        assert len(buf.origin) == 12
        int(buf.origin, 16)


def test_lanes_are_isolated_and_listed_in_priority_order(buf: Buffer) -> None:
    assert Buffer.LANES == ("status", "gap", "event", "usage", "analysis", "data")
    mixed = [row for n in range(3) for lane in Buffer.LANES for row in rows(lane, n, 1, keys=(lane,))]
    buf.add(mixed)

    assert list(buf.pending()) == list(Buffer.LANES)
    assert buf.pending() == dict.fromkeys(Buffer.LANES, 3)
    for lane in Buffer.LANES:
        batch = buf.begin(lane, 100)
        assert batch is not None
        assert {i.lane for i in batch.items} == {lane}
        assert {i.key for i in batch.items} == {lane}
        assert [i.ts for i in batch.items] == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="unknown lane 'dta'"):
        buf.add([("dta", "k", 0.0, b"{}")])
    with pytest.raises(ValueError, match="unknown lane"):
        buf.begin("dta", 1)


def test_partly_accepted_batch_gives_the_rest_back_in_order_before_newer_records(buf: Buffer) -> None:
    buf.add(rows("data", 0, 10))
    first = buf.begin("data", 6)
    assert first is not None
    seqs = [i.seq for i in first.items]

    buf.end(first, accepted=seqs[0::2])

    again = buf.begin("data", 5)
    assert again is not None
    assert [i.seq for i in again.items] == [*seqs[1::2], 7, 8]
    assert buf.pending()["data"] == 7


def test_rejected_records_are_deleted_and_counted(buf: Buffer) -> None:
    buf.add(rows("event", 0, 4))
    batch = buf.begin("event", 4)
    assert batch is not None

    buf.end(batch, accepted=[1, 2], rejected=[3])

    stats = buf.stats()
    assert (stats.delivered["event"], stats.rejected["event"], stats.pending["event"]) == (2, 1, 1)
    rest = buf.begin("event", 4)
    assert rest is not None
    assert [i.seq for i in rest.items] == [4]


def test_two_open_batches_in_one_lane_never_overlap(buf: Buffer) -> None:
    buf.add(rows("data", 0, 30))
    one = buf.begin("data", 10)
    two = buf.begin("data", 10)
    assert one is not None and two is not None
    assert [i.seq for i in one.items] == list(range(1, 11))
    assert [i.seq for i in two.items] == list(range(11, 21))

    buf.end(one, accepted=range(1, 6))
    three = buf.begin("data", 10)

    assert three is not None
    assert [i.seq for i in three.items] == [6, 7, 8, 9, 10, 21, 22, 23, 24, 25]
    assert not {i.seq for i in three.items} & {i.seq for i in two.items}
    buf.end(two, accepted=[i.seq for i in two.items])
    buf.end(three, accepted=[i.seq for i in three.items])
    assert [i.seq for i in drain(buf, "data")] == [26, 27, 28, 29, 30]


def test_max_bytes_caps_a_batch_but_one_oversized_record_still_goes(buf: Buffer) -> None:
    buf.add([("data", "k", 0.0, b"x" * 5000), *rows("data", 1, 10)])
    big = buf.begin("data", 10, max_bytes=1000)
    assert big is not None
    assert [i.seq for i in big.items] == [1]
    small = buf.begin("data", 10, max_bytes=1000)
    assert small is not None
    assert [i.seq for i in small.items] == [2, 3, 4]


def test_end_refuses_a_batch_that_is_not_open_and_seqs_outside_it(buf: Buffer) -> None:
    buf.add(rows("data", 0, 3))
    batch = buf.begin("data", 2)
    assert batch is not None
    with pytest.raises(ValueError, match=r"seqs \[3\] are not in this batch"):
        buf.end(batch, accepted=[1, 3])
    with pytest.raises(ValueError, match="both accepted and rejected"):
        buf.end(batch, accepted=[1], rejected=[1])
    buf.end(batch, accepted=[1, 2])
    with pytest.raises(ValueError, match="not open"):
        buf.end(batch, accepted=[])
    with pytest.raises(ValueError, match="not open"):
        buf.end(Batch("data", ()), accepted=[])
    assert buf.pending()["data"] == 1


def test_wrongly_typed_row_is_refused_and_nothing_is_written(buf: Buffer) -> None:
    good = rows("data", 0, 3)
    bad: list[Row] = [*good, ("data", "k", 1.0, "not bytes")]  # type: ignore[list-item]
    with pytest.raises(TypeError, match="body: bytes"):
        buf.add(bad)
    assert buf.pending()["data"] == 0
    assert buf.last_seq == 0
    buf.add(good)
    assert [i.seq for i in drain(buf, "data")] == [1, 2, 3]


def test_a_body_containing_a_newline_is_refused_and_nothing_is_written(buf: Buffer) -> None:
    bad: list[Row] = [*rows("data", 0, 3), ("event", "line-1", 3.0, b'{"message":"two\nlines"}')]
    with pytest.raises(ValueError, match="lane 'event', key 'line-1' contains a newline"):
        buf.add(bad)
    assert buf.pending() == dict.fromkeys(Buffer.LANES, 0)
    assert buf.last_seq == 0
    buf.add(rows("data", 0, 3))
    assert [i.seq for i in drain(buf, "data")] == [1, 2, 3]


# --- chunks -------------------------------------------------------------------------------------


def test_one_add_is_stored_as_one_row_per_chunk_of_a_lane_and_key(path: Path) -> None:
    with Buffer(path, quota_bytes=BIG, chunk_records=4) as buf:
        added = rows("data", 0, 10, keys=("a", "b")) + rows("event", 10, 3, keys=("a",))
        buf.add(added)

        assert chunks(buf, "data") == [(1, "a", 4), (5, "a", 1), (6, "b", 4), (10, "b", 1)]
        assert chunks(buf, "event") == [(11, "a", 3)]
        in_order = grouped(added)
        for lane in ("data", "event"):
            items = drain(buf, lane)
            assert [(i.lane, i.key, i.ts, i.body) for i in items] == [row for row in in_order if row[0] == lane]
            assert [i.seq for i in items] == [seq for seq, row in enumerate(in_order, 1) if row[0] == lane]


def test_a_chunk_handed_out_across_two_batches_is_deleted_when_its_last_record_is_accepted(path: Path) -> None:
    with Buffer(path, quota_bytes=BIG, chunk_records=10) as buf:
        buf.add(rows("data", 0, 10))
        buf.add(rows("data", 10, 10))
        one = buf.begin("data", 6)
        two = buf.begin("data", 6)
        assert one is not None and two is not None
        assert [i.seq for i in one.items] == [1, 2, 3, 4, 5, 6]
        assert [i.seq for i in two.items] == [7, 8, 9, 10, 11, 12]
        assert [i.ts for i in two.items] == [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]

        buf.end(one, accepted=[i.seq for i in one.items])
        assert chunks(buf, "data") == [(1, "press-01", 10), (11, "press-01", 10)]
        assert buf.pending()["data"] == 14

        buf.end(two, accepted=[i.seq for i in two.items])
        assert chunks(buf, "data") == [(11, "press-01", 10)]
        assert done_rows(buf) == [("data", 11, b"\x01\x01" + bytes(8))]
        rest = buf.begin("data", 100)
        assert rest is not None
        assert [i.seq for i in rest.items] == list(range(13, 21))
        buf.end(rest, accepted=[i.seq for i in rest.items])
        assert chunks(buf, "data") == [] and done_rows(buf) == []
        assert buf.pending()["data"] == 0


def stored(buf: Buffer) -> set[int]:
    """Seqs of every record stored and not done, read from the chunk rows and their done masks."""
    masks = {(lane, chunk): mask for lane, chunk, mask in done_rows(buf)}
    found: set[int] = set()
    for lane in Buffer.LANES:
        for seq, _, n in chunks(buf, lane):
            mask = masks.get((lane, seq), bytes(n))
            found.update(seq + i for i in range(n) if not mask[i])
    return found


class BufferModel(RuleBasedStateMachine):
    """Random adds, batches, partial ends, quota drops and restarts against a dict of what must be pending.

    Hypothesis shrinks a failure to the shortest sequence of operations that shows it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="buffer-model-"))
        self.path = self.dir / "buffer.db"
        self.model: dict[int, Row] = {}
        self.opened: list[Batch] = []
        self.n = 0
        self.quota = BIG
        self.buf: Buffer | None = None

    @initialize(quota=st.sampled_from([150_000, BIG]), chunk_records=st.integers(1, 60))
    def open(self, quota: int, chunk_records: int) -> None:
        self.quota = quota
        self.buf = Buffer(self.path, quota_bytes=quota, chunk_records=chunk_records, protected_ceiling=BIG)

    @property
    def b(self) -> Buffer:
        assert self.buf is not None
        return self.buf

    @rule(
        lanes=st.lists(
            st.tuples(st.sampled_from(("data", "data", "event", "status", "gap")), st.sampled_from("abc")),
            min_size=1,
            max_size=200,
        )
    )
    def add(self, lanes: list[tuple[str, str]]) -> None:
        added: list[Row] = []
        for lane, key in lanes:
            if lane == "data" and self.n % 3:
                # A (head, tail) body, as the pipeline gives data records: a few heads per key, kept once.
                head = b'{"key":"%s","element":%d,' % (key.encode(), self.n % 5)
                added.append((lane, key, float(self.n), (head, b'"n":%d,"v":"%s"}' % (self.n, b"x" * 50))))
            else:
                added.append((lane, key, float(self.n), b'{"n":%d,"v":"%s"}' % (self.n, b"x" * 250)))
            self.n += 1
        first = self.b.last_seq
        dropped = self.b.add(added)
        # What begin() must give back: every body whole.
        whole = [(r[0], r[1], r[2], r[3] if isinstance(r[3], bytes) else b"".join(r[3])) for r in added]
        new = dict(enumerate(grouped(whole), first + 1))
        model = self.model
        model |= new
        in_flight = {i.seq for batch in self.opened for i in batch.items}
        gone = set(model) - stored(self.b)
        assert not gone & (in_flight | set(new)), "dropped a record in flight or one just added"
        assert {model[seq][0] for seq in gone} <= {"data", "event"}, "dropped a protected record"
        assert dropped.count == len(gone)
        assert dropped.by_key == by_key_of(model[seq] for seq in gone)
        for lane in ("data", "event"):
            lost = [seq for seq in gone if model[seq][0] == lane]
            kept = [s for s, r in model.items() if r[0] == lane and s not in gone | in_flight | set(new)]
            assert not lost or not kept or max(lost) < min(kept), "dropped a newer chunk before an older one"
        for seq in gone:
            del model[seq]

    @rule(lane=st.sampled_from(Buffer.LANES), max_records=st.integers(1, 300))
    def begin(self, lane: str, max_records: int) -> None:
        batch = self.b.begin(lane, max_records)
        in_flight = {i.seq for open_batch in self.opened for i in open_batch.items}
        waiting = sorted(seq for seq, row in self.model.items() if row[0] == lane and seq not in in_flight)
        if batch is None:
            assert not waiting
            return
        assert [i.seq for i in batch.items] == waiting[:max_records]
        assert [(i.lane, i.key, i.ts, i.body) for i in batch.items] == [self.model[i.seq] for i in batch.items]
        self.opened.append(batch)

    @precondition(lambda self: bool(self.opened))
    @rule(data=st.data())
    def end(self, data: st.DataObject) -> None:
        batch = self.opened.pop(data.draw(st.integers(0, len(self.opened) - 1)))
        seqs = [i.seq for i in batch.items]
        accepted = data.draw(st.lists(st.sampled_from(seqs), unique=True)) if seqs else []
        rest = [seq for seq in seqs if seq not in accepted]
        rejected = data.draw(st.lists(st.sampled_from(rest), unique=True)) if rest else []
        self.b.end(batch, accepted, rejected)
        for seq in accepted + rejected:
            del self.model[seq]

    @rule(chunk_records=st.integers(1, 60))
    def reopen(self, chunk_records: int) -> None:
        self.b.close()
        self.opened = []
        self.buf = Buffer(self.path, quota_bytes=self.quota, chunk_records=chunk_records, protected_ceiling=BIG)

    @invariant()
    def pending_and_stored_match_the_model(self) -> None:
        if self.buf is None:
            return
        model = self.model
        assert self.b.pending() == {lane: sum(row[0] == lane for row in model.values()) for lane in Buffer.LANES}
        assert stored(self.b) == set(model)

    def teardown(self) -> None:
        if self.buf is not None:
            self.buf.close()
            with Buffer(self.path, quota_bytes=self.quota) as buf:
                for lane in Buffer.LANES:
                    expected = sorted(seq for seq, row in self.model.items() if row[0] == lane)
                    assert [i.seq for i in drain(buf, lane)] == expected
        shutil.rmtree(self.dir, ignore_errors=True)


BufferModel.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_random_adds_batches_quota_and_restarts_match_a_simple_model = BufferModel.TestCase


# --- restarts and crashes -----------------------------------------------------------------------


def test_open_batches_are_forgotten_at_restart_so_everything_is_pending_again(path: Path) -> None:
    with Buffer(path, quota_bytes=BIG) as buf:
        buf.add(rows("data", 0, 5) + rows("usage", 5, 2))
        in_flight = buf.begin("data", 3)
        assert in_flight is not None
        partly = buf.begin("usage", 2)
        assert partly is not None
        buf.end(partly, accepted=[6])

    with Buffer(path, quota_bytes=BIG) as buf:
        assert buf.pending() == {"status": 0, "gap": 0, "event": 0, "usage": 1, "analysis": 0, "data": 5}
        assert [i.seq for i in drain(buf, "data")] == [1, 2, 3, 4, 5]
        assert [i.seq for i in drain(buf, "usage")] == [7]


def test_seq_is_never_reused_after_everything_is_delivered_and_the_file_reopened(path: Path) -> None:
    with Buffer(path, quota_bytes=BIG) as buf:
        origin = buf.origin
        buf.add(rows("data", 0, 4) + rows("gap", 4, 1))
        for lane in ("data", "gap"):
            batch = buf.begin(lane, 10)
            assert batch is not None
            buf.end(batch, [i.seq for i in batch.items])
        assert buf.pending() == dict.fromkeys(Buffer.LANES, 0)

    with Buffer(path, quota_bytes=BIG) as buf:
        assert buf.origin == origin
        assert buf.last_seq == 5
        buf.add(rows("data", 5, 2))
        assert [i.seq for i in drain(buf, "data")] == [6, 7]


CHILD_ADDS_UNTIL_KILLED = textwrap.dedent(
    """
    import sys
    from uploader.buffer import Buffer

    buf = Buffer(sys.argv[1], quota_bytes=1 << 30)
    n = buf.last_seq
    while True:
        buf.add([("data", "k", float(n + i), b'{"n":%d}' % (n + i)) for i in range(200)])
        n += 200
        print(buf.last_seq, flush=True)
    """
)


def test_every_add_that_returned_survives_sigkill_without_duplicates(path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD_ADDS_UNTIL_KILLED, str(path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        try:
            printed = [int(child.stdout.readline()) for _ in range(25)]
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        printed += [int(line) for line in child.stdout.read().split()]
        child.stdout.close()
        last_returned = printed[-1]

        with Buffer(path, quota_bytes=BIG) as buf:
            items = drain(buf, "data")
            seqs = [i.seq for i in items]
            # One more add may have committed between its return and the kill, before the print.
            assert len(seqs) in (last_returned, last_returned + 200)
            assert seqs == list(range(1, len(seqs) + 1))
            assert [i.body for i in items] == [b'{"n":%d}' % n for n in range(len(seqs))]
            assert buf.pending()["data"] == len(seqs) == buf.last_seq


CHILD_ACCEPTS_PART_OF_A_CHUNK_THEN_HANGS = textwrap.dedent(
    """
    import sys, time
    from uploader.buffer import Buffer

    buf = Buffer(sys.argv[1], quota_bytes=1 << 30, chunk_records=100)
    buf.add([("data", "k", float(n), b'{"n":%d}' % n) for n in range(100)])
    first = buf.begin("data", 60)
    seqs = [i.seq for i in first.items]
    # 1..60: multiples of 3 are not confirmed, except multiples of 6, which are rejected.
    buf.end(first, accepted=[s for s in seqs if s % 3], rejected=[s for s in seqs if s % 6 == 0])
    in_flight = buf.begin("data", 15)
    print(",".join(str(i.seq) for i in in_flight.items), flush=True)
    time.sleep(60)
    """
)


def test_records_accepted_inside_a_chunk_stay_deleted_after_sigkill_and_the_rest_comes_back(path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_ACCEPTS_PART_OF_A_CHUNK_THEN_HANGS, str(path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        in_flight = [int(seq) for seq in child.stdout.readline().split(",")]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
    left = [seq for seq in range(1, 61) if seq % 3 == 0 and seq % 6] + list(range(61, 101))
    assert in_flight == left[:15]

    with Buffer(path, quota_bytes=BIG) as buf:
        assert buf.pending()["data"] == len(left) == 50
        items = drain(buf, "data")
        assert [i.seq for i in items] == left
        assert [i.body for i in items] == [b'{"n":%d}' % (seq - 1) for seq in left]
        assert [i.ts for i in items] == [float(seq - 1) for seq in left]
        assert buf.last_seq == 100
        batch = buf.begin("data", 100)
        assert batch is not None
        buf.end(batch, accepted=[i.seq for i in batch.items])
        assert chunks(buf, "data") == [] and done_rows(buf) == []


# --- quota --------------------------------------------------------------------------------------


def test_quota_drops_the_oldest_data_first_and_reports_it_per_key(path: Path) -> None:
    quota = 400_000
    keys = ("press-01", "press-02", "oven-07")
    added: list[Row] = []
    reported: dict[str, tuple[int, float, float]] = {}
    with Buffer(path, quota_bytes=quota) as buf:
        protected = rows("gap", 0, 20) + rows("usage", 20, 20) + rows("status", 40, 20) + rows("event", 60, 50)
        buf.add(protected)
        added += grouped(protected)
        for start in range(110, 3110, 100):
            batch = rows("data", start, 100, keys)
            dropped = buf.add(batch)
            added += grouped(batch)
            merge(reported, dropped)
            assert buf.stats().used_bytes <= quota + 100 * 340

        remaining = [i.seq for i in drain(buf, "data")]
        data_seqs = [seq for seq, row in enumerate(added, 1) if row[0] == "data"]
        assert remaining == data_seqs[-len(remaining) :]
        dropped_seqs = set(data_seqs) - set(remaining)
        stats = buf.stats()
        assert len(dropped_seqs) > 1000
        assert stats.dropped == {
            "status": 0,
            "gap": 0,
            "event": 0,
            "usage": 0,
            "analysis": 0,
            "data": len(dropped_seqs),
        }
        assert reported == expected_by_key(added, dropped_seqs)
        assert {lane: stats.pending[lane] for lane in ("status", "gap", "event", "usage")} == {
            "status": 20,
            "gap": 20,
            "event": 50,
            "usage": 20,
        }
        assert stats.pending["data"] == len(remaining)
        assert not stats.over_quota


def test_quota_drops_events_after_data_and_never_protected_records(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    added: list[Row] = []
    with Buffer(path, quota_bytes=300_000) as buf:
        # The quota drops whole chunks: events added 20 at a time can be dropped in part.
        event_adds = [rows("event", start, 20, ("line-1",)) for start in range(0, 200, 20)]
        for batch in [*event_adds, rows("data", 200, 300, ("press-01",))]:
            assert buf.add(batch).count == 0
            added += batch

        usage = rows("usage", 500, 700, ("agent",))
        dropped = buf.add(usage)
        added += usage

        events = [i.seq for i in drain(buf, "event")]
        assert buf.pending()["data"] == 0
        assert 0 < len(events) < 200
        assert events == list(range(201 - len(events), 201))
        dropped_seqs = set(range(1, 501)) - set(events)
        assert dropped.count == len(dropped_seqs)
        assert dropped.by_key == expected_by_key(added, dropped_seqs)
        assert not buf.stats().over_quota

        with caplog.at_level(logging.WARNING, logger="uploader.buffer"):
            more = rows("gap", 1200, 800, ("press-01",))
            dropped = buf.add(more)
            added += more
        assert dropped.by_key == expected_by_key(added, set(events))
        stats = buf.stats()
        assert stats.over_quota
        assert stats.used_bytes > 300_000
        assert stats.pending == {"status": 0, "gap": 800, "event": 0, "usage": 700, "analysis": 0, "data": 0}
        assert stats.dropped["event"] == 200 and stats.dropped["data"] == 300
        assert any("over its quota" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)


def test_quota_never_drops_records_in_an_open_batch_and_drops_given_back_ones_first(path: Path) -> None:
    added: list[Row] = []
    with Buffer(path, quota_bytes=200_000) as buf:
        first = rows("data", 0, 300)
        buf.add(first)
        added += first
        one = buf.begin("data", 50)
        two = buf.begin("data", 50)
        assert one is not None and two is not None
        buf.end(one, accepted=[])

        more = rows("data", 300, 300)
        dropped = buf.add(more)
        added += more

        remaining = {i.seq for i in drain(buf, "data")} | {i.seq for i in two.items}
        dropped_seqs = set(range(1, 601)) - remaining
        assert set(range(1, 51)) <= dropped_seqs
        assert not {i.seq for i in two.items} & dropped_seqs
        assert dropped_seqs - set(range(1, 51)) == set(range(101, 101 + len(dropped_seqs) - 50))
        assert dropped.count == len(dropped_seqs)
        assert dropped.by_key == expected_by_key(added, dropped_seqs)

        buf.end(two, accepted=[i.seq for i in two.items])
        assert buf.stats().delivered["data"] == 50
        assert buf.pending()["data"] == len(remaining) - 50
        assert chunks(buf, "data") == [(301, "press-01", 300)]

    with Buffer(path, quota_bytes=200_000) as buf:
        assert [i.seq for i in drain(buf, "data")] == sorted(remaining - {i.seq for i in two.items})


def test_quota_counts_only_the_records_not_done_of_a_chunk_partly_sent_before_a_restart(path: Path) -> None:
    with Buffer(path, quota_bytes=BIG, chunk_records=100) as buf:
        buf.add(rows("data", 0, 100, ("press-01",)))
        batch = buf.begin("data", 30)
        assert batch is not None
        buf.end(batch, accepted=[i.seq for i in batch.items])
        size = buf.stats().used_bytes

    with Buffer(path, quota_bytes=size + 10_000) as buf:
        dropped = buf.add(rows("usage", 100, 100, ("agent",)))
        assert dropped == Dropped(70, {"press-01": (70, 30.0, 99.0)})
        assert buf.stats().dropped["data"] == 70
        assert buf.pending()["data"] == 0
        assert chunks(buf, "data") == [] and done_rows(buf) == []


def test_space_freed_by_delivery_is_given_back_to_the_file_system(buf: Buffer) -> None:
    for start in range(0, 60_000, 500):
        buf.add(rows("data", start, 500))
    full = buf.stats().db_bytes
    assert full > 16 * 2**20
    while (batch := buf.begin("data", 1000)) is not None:
        buf.end(batch, [i.seq for i in batch.items])
    stats = buf.stats()
    assert stats.db_bytes < full / 2
    # What stays free is about the 8 MiB kept for the next adds to reuse.
    assert stats.db_bytes - stats.used_bytes <= 9 * 2**20


# --- broken disks and files ---------------------------------------------------------------------


def test_full_disk_raises_a_clear_error_and_writes_nothing(path: Path) -> None:
    with Buffer(path, quota_bytes=BIG) as buf:
        buf.add(rows("data", 0, 100))
        pages = buf.stats().db_bytes // 4096
        # The honest stand-in for a full disk without root: SQLite refuses to grow past this size.
        buf._store.conn.execute(f"PRAGMA max_page_count = {pages + 1}")

        with pytest.raises(BufferFullError) as failed:
            buf.add(rows("gap", 100, 10) + rows("data", 110, 1000))

        message = str(failed.value)
        assert str(path) in message and "full" in message and "Nothing was written" in message
        assert buf.pending() == {"status": 0, "gap": 0, "event": 0, "usage": 0, "analysis": 0, "data": 100}
        assert buf.last_seq == 100
        buf._store.conn.execute("PRAGMA max_page_count = 1073741823")
        buf.add(rows("gap", 100, 10))
        assert [i.seq for i in drain(buf, "gap")] == list(range(101, 111))

    with Buffer(path, quota_bytes=BIG) as buf:
        assert buf.pending() == {"status": 0, "gap": 10, "event": 0, "usage": 0, "analysis": 0, "data": 100}
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


CHILD_HITS_FILE_SIZE_LIMIT = textwrap.dedent(
    """
    import resource, signal, sys
    from uploader.buffer import Buffer, BufferIOError

    buf = Buffer(sys.argv[1], quota_bytes=1 << 30)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, hard))
    try:
        while True:
            buf.add([("data", "k", 0.0, b"x" * 300)] * 100)
    except BufferIOError as exc:
        print(buf.last_seq, exc, sep="\\n", flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    buf.add([("usage", "agent", 0.0, b"{}")])
    buf.close()
    """
)


def test_write_error_from_the_os_rolls_the_add_back_and_the_buffer_carries_on(path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD_HITS_FILE_SIZE_LIMIT, str(path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    last_seq, message = done.stdout.splitlines()[:2]
    assert str(path) in message and "I/O error" in message
    with Buffer(path, quota_bytes=BIG) as buf:
        assert buf.pending()["data"] == int(last_seq)
        assert [i.seq for i in drain(buf, "usage")] == [int(last_seq) + 1]


def test_garbage_file_is_refused_with_an_error_naming_it(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 400)
    with pytest.raises(BufferCorruptError, match="move the file aside") as failed:
        Buffer(path, quota_bytes=BIG)
    assert str(path) in str(failed.value)


def test_damaged_pages_surface_as_a_corrupt_buffer_not_a_raw_sqlite_error(path: Path) -> None:
    with Buffer(path, quota_bytes=BIG) as buf:
        buf.add(rows("data", 0, 2000))
    with path.open("r+b") as raw:
        raw.seek(40 * 4096)
        raw.write(b"\xa5" * (100 * 4096))
    with pytest.raises(BufferCorruptError, match=str(path)), Buffer(path, quota_bytes=BIG) as buf:
        drain(buf, "data")


def test_another_applications_database_is_refused(path: Path) -> None:
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE customers (name TEXT)")
    other.close()
    with pytest.raises(BufferFormatError, match="not an edge-agent buffer"):
        Buffer(path, quota_bytes=BIG)


def test_a_newer_schema_is_refused(path: Path) -> None:
    Buffer(path, quota_bytes=BIG).close()
    newer = sqlite3.connect(path)
    newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer.close()
    with pytest.raises(BufferFormatError, match="newer agent"):
        Buffer(path, quota_bytes=BIG)


def test_a_buffer_of_the_first_schema_one_row_per_record_is_refused(path: Path) -> None:
    Buffer(path, quota_bytes=BIG).close()
    older = sqlite3.connect(path)
    older.execute("PRAGMA user_version = 1")
    older.close()
    with pytest.raises(BufferFormatError, match=r"unknown buffer schema 1 \(this agent knows 5\); move the file aside"):
        Buffer(path, quota_bytes=BIG)


def test_a_buffer_of_schema_2_is_upgraded_in_place_and_keeps_its_records(path: Path) -> None:
    """Schema 2 had no analysis lane. A file written then (made here by taking the lane out again)
    opens as schema 3 with every record, its origin and its numbering as they were."""
    with Buffer(path, quota_bytes=BIG) as b:
        b.add(rows("data", 0, 5) + rows("gap", 0, 2))
        origin, first = b.origin, b.begin("data", 1)
        assert first is not None
        b.end(first, accepted=[first.items[0].seq])
    old = sqlite3.connect(path)
    old.execute("DROP TABLE lane_analysis")
    old.execute("ALTER TABLE state DROP COLUMN pending_analysis")
    old.execute("PRAGMA user_version = 2")
    old.commit()
    old.close()
    with Buffer(path, quota_bytes=BIG) as b:
        assert b.origin == origin
        assert b.pending()["data"] + b.pending()["gap"] == 6 and b.pending()["analysis"] == 0
        b.add(rows("analysis", 0, 1) + rows("data", 5, 1))
        seqs = []
        for lane in Buffer.LANES:
            while batch := b.begin(lane, 100):
                seqs += [r.seq for r in batch.items]
                b.end(batch, accepted=[r.seq for r in batch.items])
        assert len(seqs) == 8 and len(set(seqs)) == 8 and first.items[0].seq not in seqs
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5


def test_a_second_buffer_on_the_same_file_is_refused_while_the_first_is_open(buf: Buffer, path: Path) -> None:
    with pytest.raises(BufferLockedError, match="Only one agent"):
        Buffer(path, quota_bytes=BIG, busy_timeout=0.05)
    buf.add(rows("data", 0, 1))
    assert buf.pending()["data"] == 1


def test_missing_directory_is_reported_with_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "buffer.db"
    with pytest.raises(BufferIOError, match="directory exists"):
        Buffer(missing, quota_bytes=BIG)


def test_an_empty_file_becomes_a_new_buffer(path: Path) -> None:
    path.touch()
    with Buffer(path, quota_bytes=BIG) as buf:
        assert buf.pending() == dict.fromkeys(Buffer.LANES, 0)


# --- a disk that lies or fills: high-water mark, integrity, recovery, reserve, ceiling ------------

CHILD_ADDS_AND_IS_KILLED = textwrap.dedent(
    """
    import os, sys
    from uploader.buffer import Buffer

    buf = Buffer(sys.argv[1], quota_bytes=1 << 30)
    for n in range(20):
        buf.add([("data", "k", float(n), b'{"n":%d}' % n)] * 50)
    print(buf.last_seq, flush=True)
    os.kill(os.getpid(), 9)  # the WAL holds the commits; nothing is checkpointed
    """
)


def test_a_lost_wal_is_detected_and_no_id_is_handed_out_twice(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Buffer(path, quota_bytes=BIG).close()  # the file exists, its WAL checkpointed: seq 0 on disk
    done = subprocess.run(
        [sys.executable, "-c", CHILD_ADDS_AND_IS_KILLED, str(path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == -signal.SIGKILL
    handed_out = int(done.stdout.strip())
    assert handed_out == 1000
    Path(f"{path}-wal").unlink()  # lost after the kill (or the .db restored without it)
    with Buffer(path, quota_bytes=BIG) as buf:
        assert buf.rolled_back == (0, 1000)
        assert buf.pending()["data"] == 0, "the WAL's records are gone"
        buf.add(rows("data", 0, 3))
        assert [i.seq for i in drain(buf, "data")] == [1001, 1002, 1003]
    assert "Numbering continues after 1000" in caplog.text
    with Buffer(path, quota_bytes=BIG) as buf:
        assert buf.rolled_back is None, "an ordinary restart is not a rollback"


def _damage(path: Path, at_page: int, pages: int) -> None:
    with path.open("r+b") as raw:
        raw.seek(at_page * 4096)
        raw.write(b"\xa5" * (pages * 4096))


def test_a_file_that_fails_its_integrity_check_is_moved_aside_and_what_reads_cleanly_is_kept(path: Path) -> None:
    with Buffer(path, quota_bytes=BIG, chunk_records=100) as buf:
        buf.add(rows("data", 0, 3000) + rows("gap", 5000, 20) + rows("status", 6000, 5))
        batch = buf.begin("data", 150)
        assert batch is not None
        buf.end(batch, [i.seq for i in batch.items])  # done before the damage: must not come back
        pages = buf.stats().db_bytes // 4096
    _damage(path, pages // 2, 3)
    with pytest.raises(BufferCorruptError, match="integrity check failed"):
        Buffer(path, quota_bytes=BIG)
    buf, recovery = open_buffer(path, quota_bytes=BIG)
    with buf:
        assert (
            recovery is not None
            and recovery.damaged.exists()
            and recovery.damaged.name.startswith("buffer.db.damaged-")
        )
        got = {lane: [orjson.loads(i.body)["n"] for i in drain(buf, lane)] for lane in ("data", "gap", "status")}
    assert got["gap"] == list(range(5000, 5020)) and got["status"] == list(range(6000, 6005))
    assert set(got["data"]) <= set(range(150, 3000)), "records done before the damage stayed done"
    assert len(got["data"]) == recovery.recovered - 25 and recovery.unreadable >= 1
    assert 3000 - 150 - len(got["data"]) <= 100 * (recovery.unreadable + 1), "only the damaged chunks are lost"
    assert got["data"] == sorted(got["data"])


def test_a_truncated_file_is_recovered_too(path: Path) -> None:
    with Buffer(path, quota_bytes=BIG, chunk_records=100) as buf:
        buf.add(rows("data", 0, 2000))
    size = path.stat().st_size
    with path.open("r+b") as raw:
        raw.truncate(size // 2)
    buf, recovery = open_buffer(path, quota_bytes=BIG)
    with buf:
        data = [orjson.loads(i.body)["n"] for i in drain(buf, "data")]
    assert recovery is not None
    assert data == list(range(len(data))), "a prefix of the records survives, in order"


def test_on_a_full_disk_the_reserve_lets_records_be_stored_and_delivered_ones_deleted(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 24) as disk:
        buf = Buffer(disk / "b.db", quota_bytes=BIG, min_free_bytes=0, reserve_bytes=4 * 2**20)
        buf.add(rows("data", 0, 2000))
        assert (disk / "b.db.reserve").exists()
        fill(disk)
        buf.add(rows("gap", 9000, 500))  # ENOSPC, then the reserve goes and the add succeeds
        assert not (disk / "b.db.reserve").exists()
        while (batch := buf.begin("data", 500)) is not None:
            buf.end(batch, [i.seq for i in batch.items])
        assert buf.pending()["data"] == 0 and buf.pending()["gap"] == 500
        buf.close()


def test_near_a_full_disk_the_oldest_data_is_dropped_instead_of_failing(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 20) as disk:
        buf = Buffer(disk / "b.db", quota_bytes=BIG, min_free_bytes=4 * 2**20, reserve_bytes=0)
        dropped = 0
        for start in range(0, 200_000, 1000):
            dropped += buf.add(rows("data", start, 1000)).count
        stats = buf.stats()
        assert dropped > 0 and stats.dropped["data"] == dropped
        assert buf.pending()["data"] + dropped == 200_000
        assert free_bytes(disk) >= 2 * 2**20, "the buffer kept away from the disk's last bytes"
        buf.close()


def test_protected_records_over_their_ceiling_refuse_new_data_not_drop_protected(path: Path) -> None:
    with Buffer(path, quota_bytes=1_000_000, protected_ceiling=30_000) as buf:
        buf.add(rows("gap", 0, 150))
        with pytest.raises(BufferCeilingError, match="never dropped"):
            buf.add(rows("data", 1000, 10))
        buf.add(rows("status", 2000, 5))  # protected records are still taken
        while (batch := buf.begin("gap", 100)) is not None:
            buf.end(batch, [i.seq for i in batch.items])
        buf.add(rows("data", 1000, 10))
        assert buf.pending() == {"status": 5, "gap": 0, "event": 0, "usage": 0, "analysis": 0, "data": 10}


def test_marks_read_back_as_last_saved_across_log_folds_deletions_and_reopens(path: Path) -> None:
    """Each add() logs its marks in one row and every 64 rows the log is folded into the marks table;
    whatever the point, in memory or after a reopen, marks() is the last value saved per key."""
    rng = random.Random(7)
    model: dict[str, str] = {}
    b = Buffer(path, quota_bytes=BIG)
    try:
        for i in range(300):
            keys = [f"last:m/E{rng.randrange(40)}" for _ in range(rng.randrange(0, 12))]
            marks = {k: f"{i}|{rng.random()!r}" for k in keys}
            unmark = [f"last:m/E{rng.randrange(40)}" for _ in range(rng.randrange(0, 3))]
            b.add(rows("data", i, 1) if i % 3 else [], marks.items(), unmark=unmark)
            model.update(marks)
            for k in unmark:
                model.pop(k, None)
            if i % 37 == 0:
                assert b.marks() == model, i
            if i % 53 == 0:
                b.close()
                b = Buffer(path, quota_bytes=BIG)
                assert b.marks() == model, f"after reopen at {i}"
    finally:
        b.close()
    with Buffer(path, quota_bytes=BIG) as again:
        assert again.marks() == model
    with sqlite3.connect(path) as c:  # the log was folded on the way, not kept growing
        assert c.execute("SELECT count(*) FROM mark_log").fetchone()[0] < 64
        assert c.execute("SELECT count(*) FROM marks").fetchone()[0] > 0


def test_a_buffer_of_schema_3_keeps_its_marks_when_upgraded(path: Path) -> None:
    """Schema 3 kept marks in their table alone (one row per key, upserted at every add)."""
    with Buffer(path, quota_bytes=BIG) as b:
        b.add(rows("data", 0, 2))
    old = sqlite3.connect(path)
    old.executemany("INSERT INTO marks VALUES (?, ?)", [("last:m/A", "1|0|source|5"), ("last:m/B", "2|0|source|6")])
    old.execute("DROP TABLE mark_log")
    old.execute("PRAGMA user_version = 3")
    old.commit()
    old.close()
    with Buffer(path, quota_bytes=BIG) as b:
        assert b.marks() == {"last:m/A": "1|0|source|5", "last:m/B": "2|0|source|6"}
        b.add([], [("last:m/A", "3|0|source|7")])
        assert b.pending()["data"] == 2
    with Buffer(path, quota_bytes=BIG) as b:
        assert b.marks()["last:m/A"] == "3|0|source|7"


# --- heads: the part of a record many records share, kept once per file --------------------------

HEAD_A = b'{"shell":"urn:x:aas:press-01","submodel":"urn:x:sm:press-01:OperationalData","path":"Temperature",'
HEAD_B = b'{"shell":"urn:x:aas:press-01","submodel":"urn:x:sm:press-01:OperationalData","path":"Pressure",'


def split_rows(start: int, count: int, head: bytes = HEAD_A) -> list[Row]:
    return [("data", "press-01", float(n), (head, b'"value":%d,"status":0}' % n)) for n in range(start, start + count)]


def test_a_head_is_stored_once_and_every_body_comes_back_whole(buf: Buffer, path: Path) -> None:
    buf.add(split_rows(0, 300) + split_rows(300, 300, HEAD_B) + rows("gap", 0, 2))
    conn = buf._store.conn
    assert sorted(h for (h,) in conn.execute("SELECT head FROM heads")) == sorted([HEAD_A, HEAD_B])
    blob = b"".join(b for (b,) in conn.execute("SELECT bodies FROM lane_data"))
    assert HEAD_A not in blob and HEAD_B not in blob and blob.count(b"#") == 600
    whole = [(r[0], r[1], r[2], b"".join(r[3])) for r in split_rows(0, 300) + split_rows(300, 300, HEAD_B)]
    assert [(i.lane, i.key, i.ts, i.body) for i in drain(buf, "data")] == whole
    assert all(orjson.loads(i.body)["value"] == i.ts for i in drain(buf, "data"))
    # The file holds about a third of what the bodies would take whole.
    assert len(blob) < sum(len(r[3]) for r in whole) / 3


def test_heads_survive_a_restart_and_new_ones_do_not_take_an_old_number(path: Path) -> None:
    with Buffer(path, quota_bytes=BIG) as buf:
        buf.add(split_rows(0, 10))
    with Buffer(path, quota_bytes=BIG) as buf:
        buf.add(split_rows(10, 10, HEAD_B) + split_rows(20, 10))
        numbers = dict(buf._store.conn.execute("SELECT head, id FROM heads"))
        assert len(numbers) == 2 and numbers[HEAD_A] != numbers[HEAD_B]
        got = [i.body for i in drain(buf, "data")]
    assert got == [b"".join(r[3]) for r in split_rows(0, 10) + split_rows(10, 10, HEAD_B) + split_rows(20, 10)]


def test_an_add_that_fails_numbers_no_head_and_a_retry_stores_it(buf: Buffer) -> None:
    with pytest.raises(ValueError, match="newline"):
        buf.add([*split_rows(0, 3), ("data", "press-01", 9.0, b'{"bad":"\n"}')])
    assert buf._store.heads.tags == {} and buf.pending()["data"] == 0
    with pytest.raises(ValueError, match="starts with '#'"):
        buf.add([*split_rows(0, 3), ("data", "press-01", 9.0, b"#1:{}")])
    with pytest.raises(ValueError, match=r"head .* contains a newline"):
        buf.add([("data", "press-01", 9.0, (b'{"a":\n', b"1}"))])
    with pytest.raises(ValueError, match=r"head .* starts with '#'"):
        buf.add([("data", "press-01", 9.0, (b'#000001:{"a":', b"1}"))])
    with pytest.raises(TypeError, match="head, tail"):
        buf.add([("data", "press-01", 9.0, ("text", b"1}"))])  # type: ignore[list-item]
    buf.add(split_rows(0, 3))
    assert [i.body for i in drain(buf, "data")] == [b"".join(r[3]) for r in split_rows(0, 3)]


def test_heads_are_forgotten_at_open_once_no_record_is_pending(path: Path) -> None:
    with Buffer(path, quota_bytes=BIG) as buf:
        buf.add(split_rows(0, 5))
    with Buffer(path, quota_bytes=BIG) as buf:  # pending records: their heads stay
        assert buf._store.heads.tags
        batch = buf.begin("data", 10)
        assert batch is not None
        buf.end(batch, [i.seq for i in batch.items])
    with Buffer(path, quota_bytes=BIG) as buf:
        assert buf._store.heads.tags == {}
        assert buf._store.conn.execute("SELECT count(*) FROM heads").fetchone()[0] == 0
        buf.add(split_rows(5, 2, HEAD_B))
        assert [i.body for i in drain(buf, "data")] == [b"".join(r[3]) for r in split_rows(5, 2, HEAD_B)]


def test_a_record_whose_head_is_missing_is_a_damaged_buffer_and_salvage_keeps_the_rest(path: Path) -> None:
    with Buffer(path, quota_bytes=BIG, chunk_records=100) as buf:
        buf.add(split_rows(0, 200) + split_rows(200, 200, HEAD_B) + rows("gap", 0, 3))
    with sqlite3.connect(path) as c:
        c.execute("DELETE FROM heads WHERE head = ?", (HEAD_B,))
    c.close()
    with Buffer(path, quota_bytes=BIG, chunk_records=100) as buf:
        first = buf.begin("data", 200)
        assert first is not None and [i.body for i in first.items] == [b"".join(r[3]) for r in split_rows(0, 200)]
        buf.end(first, [])
        with pytest.raises(BufferCorruptError, match="refers to a record head the file does not have"):
            buf.begin("data", 400)


def test_salvage_of_a_damaged_file_gives_the_bodies_whole(path: Path) -> None:
    with Buffer(path, quota_bytes=BIG, chunk_records=100) as buf:
        buf.add(split_rows(0, 2000) + rows("gap", 5000, 5))
        pages = buf.stats().db_bytes // 4096
    _damage(path, pages // 2, 1)
    buf, recovery = open_buffer(path, quota_bytes=BIG)
    with buf:
        assert recovery is not None and recovery.recovered >= 1000
        data = drain(buf, "data")
    expected = {r[2]: b"".join(r[3]) for r in split_rows(0, 2000)}
    assert data and all(i.body == expected[i.ts] for i in data)


def test_a_buffer_of_schema_4_is_upgraded_and_keeps_its_records(path: Path) -> None:
    with Buffer(path, quota_bytes=BIG) as buf:
        buf.add(rows("data", 0, 3))
    old = sqlite3.connect(path)
    old.execute("DROP TABLE heads")
    old.execute("PRAGMA user_version = 4")
    old.commit()
    old.close()
    with Buffer(path, quota_bytes=BIG) as buf:
        buf.add(split_rows(3, 2))
        assert [i.body for i in drain(buf, "data")] == [body(n) for n in range(3)] + [
            b"".join(r[3]) for r in split_rows(3, 2)
        ]
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5


def test_past_the_last_head_number_records_are_stored_whole_and_still_come_back(buf: Buffer) -> None:
    buf._store.heads.last = MAX_HEAD  # as if the file had numbered every head it can
    buf.add(split_rows(0, 3, HEAD_B))
    blob = b"".join(b for (b,) in buf._store.conn.execute("SELECT bodies FROM lane_data"))
    assert blob.count(HEAD_B) == 3 and buf._store.conn.execute("SELECT count(*) FROM heads").fetchone()[0] == 0
    assert [i.body for i in drain(buf, "data")] == [b"".join(r[3]) for r in split_rows(0, 3, HEAD_B)]


def test_a_disk_too_full_to_forget_the_heads_still_opens_and_keeps_storing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At open a drained buffer forgets its heads; on a full disk that delete fails, and must cost nothing
    but the heads' bytes: the buffer opens, and what it stores after comes back whole."""
    with small_disk(tmp_path / "disk", 24) as disk:
        path = disk / "b.db"
        with Buffer(path, quota_bytes=BIG, min_free_bytes=0, reserve_bytes=4 * 2**20) as buf:
            buf.add(split_rows(0, 2000) + split_rows(2000, 2000, HEAD_B))
            while (batch := buf.begin("data", 1000)) is not None:
                buf.end(batch, [i.seq for i in batch.items])
        filler = fill(disk)
        with Buffer(path, quota_bytes=BIG, min_free_bytes=0, reserve_bytes=4 * 2**20) as buf:
            assert "could not forget the heads" in caplog.text, "the scenario did not happen"
            assert buf.pending()["data"] == 0
            buf.add(split_rows(5000, 3, HEAD_A))  # a known or a new head: either way whole on the way out
            assert [i.body for i in drain(buf, "data")] == [b"".join(r[3]) for r in split_rows(5000, 3, HEAD_A)]
        filler.unlink()
        with Buffer(path, quota_bytes=BIG, min_free_bytes=0, reserve_bytes=4 * 2**20) as buf:
            assert [i.body for i in drain(buf, "data")] == [b"".join(r[3]) for r in split_rows(5000, 3, HEAD_A)]
