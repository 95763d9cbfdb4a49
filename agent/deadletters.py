"""The `edge-agent dead-letter` commands: show what a far end refused for good, and send it again."""

from __future__ import annotations

from datetime import UTC, datetime

import click
import orjson

from agent import usage
from agent.config import Config
from agent.lock import DataDirBusy, DataDirLock
from uploader.buffer import Buffer, BufferError
from uploader.deadletter import DeadLetters

MIB = 1024 * 1024
FILE = "dead-letters.db"


def show(cfg: Config, sink: str | None, limit: int, as_json: bool) -> int:
    path = cfg.agent.data_dir / FILE
    if not path.exists():
        click.echo(f"no dead letters ({path} does not exist)")
        return 0
    try:
        store = DeadLetters(path, readonly=True)
    except BufferError as e:
        click.echo(f"cannot read the dead letters: {e}", err=True)
        return 2
    try:
        letters = store.list(sink, limit)
        total = store.count()
    finally:
        store.close()
    for d in letters:
        when = datetime.fromtimestamp(d.time, UTC).isoformat(timespec="seconds")
        if as_json:
            doc = {
                "id": d.id,
                "time": when,
                "sink": d.sink,
                "lane": d.lane,
                "asset": d.key,
                "recordId": d.record_id,
                "reason": d.reason,
                "record": orjson.loads(d.body),
            }
            click.echo(orjson.dumps(doc).decode())
        else:
            click.echo(f"{d.id:>6} {when} {d.sink}/{d.key}/{d.lane} {d.record_id}: {d.reason} ({len(d.body)} bytes)")
    if not as_json:
        click.echo(f"{len(letters)} shown of {total} dead letters in {path}")
    if letters:
        _note(cfg, usage.READ, sum(len(d.body) for d in letters), "edge-agent dead-letter list")
    return 0


def _note(cfg: Config, use: str, data_bytes: int, action: str) -> None:
    problem = usage.note(cfg.agent.data_dir, use, data_bytes, action)
    if problem:
        click.echo(problem, err=True)


def replay(cfg: Config, sink: str | None) -> int:
    path = cfg.agent.data_dir / FILE
    if not path.exists():
        click.echo("no dead letters to replay")
        return 0
    sinks = {s.id: s for s in cfg.sinks}
    if sink is not None and sink not in sinks:
        click.echo(f"no sink {sink!r} in the config; sinks: {', '.join(sinks)}", err=True)
        return 2
    try:
        lock = DataDirLock(cfg.agent.data_dir, purpose="dead-letter replay").acquire()
    except DataDirBusy as e:
        click.echo(f"cannot replay while the agent runs: {e}", err=True)
        return 2
    replayed = replayed_bytes = 0
    try:
        store = DeadLetters(path)
        quota = int(cfg.buffer.quota_mb * MIB / len(cfg.sinks))
        for sink_id, s in sinks.items():
            if sink is not None and sink_id != sink:
                continue
            letters = store.list(sink_id)
            if not letters:
                continue
            with Buffer(
                cfg.agent.data_dir / f"buffer-{sink_id}.db",
                quota_bytes=quota,
                synchronous=cfg.buffer.synchronous,
                chunk_records=s.batch.max_message_records,
            ) as buf:
                buf.add([(d.lane, d.key, d.ts, d.body) for d in letters])
            store.remove([d.id for d in letters])  # after the buffer committed: a crash between only duplicates
            replayed += len(letters)
            replayed_bytes += sum(len(d.body) for d in letters)
            click.echo(f"{sink_id}: {len(letters)} records back in the buffer, sent at the next start (new ids)")
        orphans = [d for d in store.list() if d.sink not in sinks]
        store.close()
    except BufferError as e:
        click.echo(f"replay failed: {e}", err=True)
        return 2
    finally:
        lock.release()
    if orphans:
        click.echo(f"{len(orphans)} dead letters belong to sinks no longer in the config; left as they are", err=True)
    click.echo(f"replayed {replayed} dead letters")
    if replayed:
        _note(cfg, usage.UPDATE, replayed_bytes, "edge-agent dead-letter replay")
    return 0


__all__ = ["replay", "show"]
