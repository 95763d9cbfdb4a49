"""The reference cloud receiver: real payloads in, each record stored once, read back exactly.

Most tests run the aiohttp application on 127.0.0.1 in the test's own event loop; the tests of
authentication and logging, of two processes on one SQLite file and of command-line faults run
`python -m simulators.cloud` as real processes. Every answer is also checked against the OpenAPI
document, so the document and the receiver cannot say different things.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import math
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiohttp.test_utils import TestServer
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from simulators.cloud.__main__ import main as receiver_main
from simulators.cloud.app import make_app
from simulators.cloud.process import CloudReceiver
from simulators.cloud.store import SQLiteStore
from uploader import wire

ROOT = Path(__file__).resolve().parents[1]
OPENAPI = ROOT / "docs" / "openapi" / "cloud-ingest.yaml"
WIRE_SCHEMA = ROOT / "uploader" / "schema" / wire.SCHEMA_FILE
TOKEN = "tok-5f0c9a7e41d2"
ORIGIN = "0123456789ab"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


# -- building real payloads ---------------------------------------------------------------------------


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def element(path: str, xs: str = "xs:double", *, asset: str = "cnc01") -> wire.Element:
    return wire.Element(
        shell=f"urn:test:aas:{asset}",
        submodel=f"urn:test:aas:{asset}/sm/OperationalData",
        path=path,
        value_type=xs,
        node=f"ns=2;s={asset}.{path}",
    )


def header(lane: str, *, asset: str | None = "cnc01", origin: str = ORIGIN) -> dict[str, Any]:
    head: dict[str, Any] = {"origin": origin, "site": "test-site"}
    if asset is not None:
        head["asset"] = asset
    return {**head, "lane": lane, "sent": at(60)}


def data(e: wire.Element, items: Iterable[tuple[int, Any, datetime | None]], *, origin: str = ORIGIN) -> bytes:
    """A data message of element `e`: (seq, plain value, source time) per record, encoded as the agent does."""
    prefix, encode = wire.data_prefix(e), wire.value_encoder(e.value_type)
    rows = list(items)
    ids = [wire.record_id(origin, seq) for seq, _, _ in rows]
    bodies = [wire.data_body(prefix, encode(v), t, at(100), 0) for _, v, t in rows]
    asset = e.shell.rsplit(":", 1)[-1]
    return wire.payload(header("data", asset=asset, origin=origin), ids, bodies)


def gap(seq: int, path: str) -> bytes:
    body = wire.gap_body(
        shell="urn:test:aas:cnc01",
        submodel="urn:test:aas:cnc01/sm/OperationalData",
        start=at(4),
        end=at(10),
        reason="connection lost: ConnectionError transport lost",
        elements=[wire.GapElement(path, at(4), at(10), "source")],
        events=["alarms"],
    )
    return wire.payload(header("gap"), [wire.record_id(ORIGIN, seq)], [body])


def status(seq: int) -> bytes:
    body = wire.status_body(at(0), "agent-started", "edge agent started", version="0.1.0")
    return wire.payload(header("status", asset=None), [wire.record_id(ORIGIN, seq)], [body])


def batch(*messages: bytes) -> bytes:
    return b"[" + b",".join(messages) + b"]"


def speeds(seqs: Iterable[int]) -> bytes:
    """Spindle.Speed records; the value of seq s is s * 10.0 at source time T0 + s seconds."""
    return data(element("Spindle.Speed"), [(s, s * 10.0, at(s)) for s in seqs])


def stored_ids(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as c:
        return sorted(row[0] for row in c.execute("SELECT id FROM records"))


def ids(seqs: Iterable[int]) -> list[str]:
    return sorted(wire.record_id(ORIGIN, s) for s in seqs)


# -- talking to a receiver ------------------------------------------------------------------------------


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.json: Any = orjson.loads(body) if body else None


async def post(
    session: aiohttp.ClientSession,
    body: bytes,
    *,
    key: str | None,
    token: str | None = TOKEN,
    compress: bool = False,
    content_type: str = "application/json",
    timeout: float = 30.0,
) -> Answer:
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["Idempotency-Key"] = key
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if compress:
        headers["Content-Encoding"] = "gzip"
        body = gzip.compress(body)
    async with session.post(
        "/v1/ingest", data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as r:
        return Answer(r.status, dict(r.headers), await r.read())


async def get(session: aiohttp.ClientSession, path: str, *, token: str | None = TOKEN) -> Answer:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with session.get(path, headers=headers) as r:
        return Answer(r.status, dict(r.headers), await r.read())


async def set_faults(session: aiohttp.ClientSession, **settings: Any) -> Answer:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with session.post("/_faults", data=orjson.dumps(settings), headers=headers) as r:
        return Answer(r.status, dict(r.headers), await r.read())


@asynccontextmanager
async def served(db: Path, **options: Any) -> AsyncIterator[aiohttp.ClientSession]:
    """The receiver's application (make_app `options`, test controls on) on 127.0.0.1 in this event loop,
    and a client session to it."""
    app = make_app(SQLiteStore(db), tokens=[TOKEN], **{"test_controls": True, **options})
    async with (
        TestServer(app, host="127.0.0.1") as server,
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{server.port}") as session,
    ):
        yield session


def run(db: Path, scenario: Callable[[aiohttp.ClientSession], Awaitable[None]]) -> None:
    async def go() -> None:
        async with served(db) as session:
            await scenario(session)

    asyncio.run(go())


# -- the OpenAPI document as a checker ------------------------------------------------------------------


class Contract:
    """docs/openapi/cloud-ingest.yaml, with its $refs (also into the wire schema) resolvable."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = yaml.safe_load(OPENAPI.read_text())
        self.uri = OPENAPI.as_uri()
        wire_schema = Resource.from_contents(wire.schema())
        self.registry: Registry[Any] = Registry().with_resources(
            [
                (self.uri, DRAFT202012.create_resource(self.doc)),
                (WIRE_SCHEMA.as_uri(), wire_schema),
                (str(wire_schema.id()), wire_schema),
            ]
        )

    def routes(self, *, test_controls: bool) -> set[tuple[str, str]]:
        return {
            (method.upper(), path)
            for path, item in self.doc["paths"].items()
            if test_controls or not item.get("x-test-controls")
            for method in item
            if method in HTTP_METHODS
        }

    def check(self, path: str, method: str, answer: Answer) -> None:
        """The answer's status is documented for this operation and its JSON body fits the documented schema."""
        responses = self.doc["paths"][path][method]["responses"]
        assert str(answer.status) in responses, f"{method.upper()} {path} answered {answer.status}, not documented"
        pointer = ["paths", path, method, "responses", str(answer.status)]
        ref = responses[str(answer.status)].get("$ref")
        if ref is not None:
            pointer = ref.lstrip("#/").split("/")
        schema_ref = f"{self.uri}#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in pointer)
        validator = Draft202012Validator(
            {"$ref": schema_ref + "/content/application~1json/schema"}, registry=self.registry
        )
        validator.validate(answer.json)


CONTRACT = Contract()


# -- ingest and query -----------------------------------------------------------------------------------


def test_a_batch_is_stored_and_queryable_latest_range_gaps_and_status(tmp_path: Path) -> None:
    db = tmp_path / "cloud.sqlite3"
    # Record ids (arrival order) deliberately disagree with source times: seq 1 is the newest value.
    speed = data(element("Spindle.Speed"), [(1, 14.0, at(4)), (2, 10.0, at(0)), (3, 12.0, at(2)), (4, 11.0, at(1))])
    more = data(element("Spindle.Speed"), [(5, 13.0, at(3))])
    temperature = data(element("Temperature"), [(6, 41.5, at(1)), (7, 40.0, at(0))])
    body = batch(speed, temperature, gap(8, "Spindle.Speed"), status(9), more)

    async def scenario(s: aiohttp.ClientSession) -> None:
        answer = await post(s, body, key="batch-1")
        assert (answer.status, answer.json) == (200, {"accepted": 9, "duplicates": 0, "rejected": []})
        CONTRACT.check("/v1/ingest", "post", answer)

        assets = await get(s, "/v1/assets")
        CONTRACT.check("/v1/assets", "get", assets)
        summary = {(a["site"], a["asset"]): (a["lanes"], a["records"]) for a in assets.json["assets"]}
        assert summary == {
            ("test-site", "cnc01"): ({"data": 7, "gap": 1}, 8),
            ("test-site", None): ({"status": 1}, 1),
        }

        latest = await get(s, "/v1/assets/cnc01/latest")
        CONTRACT.check("/v1/assets/{asset}/latest", "get", latest)
        newest = {e["path"]: (e["value"], e["sourceTime"], e["id"]) for e in latest.json["elements"]}
        assert newest == {
            "Spindle.Speed": (14.0, "2026-11-30T12:00:04Z", "0123456789ab-1"),
            "Temperature": (41.5, "2026-11-30T12:00:01Z", "0123456789ab-6"),
        }

        # [from, to): T0+1 s and T0+2 s, oldest first; the same bounds written in KST select the same.
        for query in (
            "from=2026-11-30T12:00:01Z&to=2026-11-30T12:00:03Z",
            "from=2026-11-30T21:00:01%2B09:00&to=2026-11-30T21:00:03.000%2B09:00",
        ):
            window = await get(s, f"/v1/assets/cnc01/records?element=Spindle.Speed&{query}")
            CONTRACT.check("/v1/assets/{asset}/records", "get", window)
            assert [(r["sourceTime"], r["value"]) for r in window.json["records"]] == [
                ("2026-11-30T12:00:01Z", 11.0),
                ("2026-11-30T12:00:02Z", 12.0),
            ]
            assert window.json["truncated"] is False
        everything = await get(s, "/v1/assets/cnc01/records?element=Spindle.Speed&limit=4")
        assert [r["value"] for r in everything.json["records"]] == [10.0, 11.0, 12.0, 13.0]
        assert everything.json["truncated"] is True

        gaps = await get(s, "/v1/gaps?asset=cnc01")
        CONTRACT.check("/v1/gaps", "get", gaps)
        [only] = gaps.json["gaps"]
        assert only["asset"] == "cnc01" and only["origin"] == ORIGIN
        assert only["record"]["elements"] == [
            {"path": "Spindle.Speed", "start": "2026-11-30T12:00:04Z", "end": "2026-11-30T12:00:10Z", "clock": "source"}
        ]
        assert (await get(s, "/v1/gaps?asset=press07")).json["gaps"] == []

        states = await get(s, "/v1/status")
        CONTRACT.check("/v1/status", "get", states)
        [state] = states.json["status"]
        assert (state["asset"], state["record"]["kind"], state["record"]["version"]) == (None, "agent-started", "0.1.0")

        unknown = await get(s, "/v1/assets/press07/latest")
        CONTRACT.check("/v1/assets/{asset}/latest", "get", unknown)
        assert unknown.status == 404 and "press07" in unknown.json["reason"]
        for query, wanted in (("from=2026-11-30T12:00:01Z", "element"), ("element=X&from=yesterday", "from=")):
            refused = await get(s, f"/v1/assets/cnc01/records?{query}")
            CONTRACT.check("/v1/assets/{asset}/records", "get", refused)
            assert refused.status == 400 and wanted in refused.json["reason"]

    run(db, scenario)
    assert stored_ids(db) == ids(range(1, 10))


def test_a_resent_batch_stores_no_duplicate(tmp_path: Path) -> None:
    db = tmp_path / "cloud.sqlite3"

    async def scenario(s: aiohttp.ClientSession) -> None:
        first = await post(s, batch(speeds(range(1, 11))), key="batch-1")
        assert first.json == {"accepted": 10, "duplicates": 0, "rejected": []}
        assert "Idempotent-Replayed" not in first.headers

        again = await post(s, batch(speeds(range(1, 11))), key="batch-1")
        assert (again.status, again.body) == (200, first.body)
        assert again.headers["Idempotent-Replayed"] == "true"

        overlapping = await post(s, batch(speeds(range(6, 16))), key="batch-2")
        assert overlapping.json == {"accepted": 5, "duplicates": 5, "rejected": []}

        twice_in_one = await post(s, batch(speeds([16]), speeds([16])), key="batch-3")
        assert twice_in_one.json == {"accepted": 1, "duplicates": 1, "rejected": []}

        conflict = await post(s, batch(speeds(range(6, 17))), key="batch-2")
        CONTRACT.check("/v1/ingest", "post", conflict)
        assert conflict.status == 422 and "batch-2" in conflict.json["reason"]

    run(db, scenario)
    assert stored_ids(db) == ids(range(1, 17))


def test_two_receiver_processes_on_one_sqlite_file_store_no_duplicate(tmp_path: Path) -> None:
    db = tmp_path / "shared.sqlite3"
    # 30 batches of 40 records, each overlapping the next by half; every batch goes to both receivers at once.
    batches = [batch(speeds(range(i * 20, i * 20 + 40))) for i in range(30)]
    unique = {s for i in range(30) for s in range(i * 20, i * 20 + 40)}

    async def send_all(urls: Sequence[str]) -> list[Answer]:
        sessions = [aiohttp.ClientSession(base_url=u) for u in urls]
        try:
            return await asyncio.gather(
                *(
                    post(session, body, key=f"r{n}-b{i}")
                    for i, body in enumerate(batches)
                    for n, session in enumerate(sessions)
                )
            )
        finally:
            for session in sessions:
                await session.close()

    with (
        CloudReceiver(tmp_path / "a", db=db, tokens=[TOKEN], name="a") as a,
        CloudReceiver(tmp_path / "b", db=db, tokens=[TOKEN], name="b") as b,
    ):
        answers = asyncio.run(send_all([a.url, b.url]))
    assert [x.status for x in answers] == [200] * 60
    assert sum(x.json["accepted"] for x in answers) == len(unique)
    assert sum(x.json["accepted"] + x.json["duplicates"] for x in answers) == 2 * 30 * 40
    assert stored_ids(db) == ids(unique)


def test_gzip_bodies_are_read_and_a_broken_one_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "cloud.sqlite3"

    async def scenario(s: aiohttp.ClientSession) -> None:
        packed = await post(s, batch(speeds(range(1, 201))), key="gz-1", compress=True)
        assert packed.json == {"accepted": 200, "duplicates": 0, "rejected": []}
        async with s.post(
            "/v1/ingest",
            data=b"this is not gzip",
            headers={
                "Authorization": f"Bearer {TOKEN}",
                "Idempotency-Key": "gz-2",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
            },
        ) as r:
            broken = Answer(r.status, dict(r.headers), await r.read())
        CONTRACT.check("/v1/ingest", "post", broken)
        assert broken.status == 400 and "gzip" in broken.json["reason"]

    run(db, scenario)
    assert stored_ids(db) == ids(range(1, 201))


def test_authentication_is_required_and_no_token_ever_reaches_the_log(tmp_path: Path) -> None:
    right, second, wrong = "right-3b8f1d0c", "second-77aa41e9", "wrong-c0ffee5e"

    async def scenario(url: str) -> None:
        async with aiohttp.ClientSession(base_url=url) as s:
            missing = await post(s, batch(speeds([1])), key="k1", token=None)
            CONTRACT.check("/v1/ingest", "post", missing)
            assert missing.status == 401 and "Bearer" in missing.json["reason"]
            assert missing.headers["WWW-Authenticate"].startswith("Bearer")
            refused = await post(s, batch(speeds([1])), key="k1", token=wrong)
            assert refused.status == 401 and refused.json["error"] == "unauthorized"
            assert (await get(s, "/v1/assets", token=None)).status == 401
            assert (await get(s, "/v1/assets", token=wrong)).status == 401
            assert (await get(s, "/_faults", token=wrong)).status == 401
            health = await get(s, "/v1/health", token=None)
            CONTRACT.check("/v1/health", "get", health)
            assert health.status == 200
            assert (await post(s, batch(speeds([1])), key="k1", token=right)).status == 200
            assert (await post(s, batch(speeds([2])), key="k2", token=second)).status == 200

    with CloudReceiver(tmp_path / "cloud", tokens=[right, second]) as cloud:
        asyncio.run(scenario(cloud.url))
        assert cloud.set_faults(fail_next=1)["fail_next"] == 1
        assert asyncio.run(_post_once(cloud.url, key="k3", token=right)) == 500
    log = cloud.log()
    assert "refused POST /v1/ingest" in log and "ingest k1: 1 messages, 1 new" in log
    for token in (right, second, wrong):
        assert token not in log
    assert stored_ids(cloud.db) == ids([1, 2])


async def _post_once(url: str, *, key: str, token: str) -> int:
    async with aiohttp.ClientSession(base_url=url) as s:
        answer = await post(s, batch(speeds([99])), key=key, token=token)
    CONTRACT.check("/v1/ingest", "post", answer)
    return answer.status


def test_a_record_failing_the_schema_is_rejected_with_its_path_and_its_neighbours_stored(tmp_path: Path) -> None:
    db = tmp_path / "cloud.sqlite3"
    speed = orjson.loads(speeds(range(1, 4)))
    speed["records"][1]["sourceTime"] = "yesterday"
    speed["records"][2]["sourceTime"] = "2026-13-45T00:00:00Z"  # fits the pattern, is no date
    gaps = orjson.loads(gap(4, "Spindle.Speed"))
    gaps["records"][0]["elements"][0]["clock"] = "sundial"
    foreign = speeds([5, 6]).replace(b'"id":"0123456789ab-6"', b'"id":"fedcba987654-6"')
    body = batch(orjson.dumps(speed), orjson.dumps(gaps), foreign)

    async def scenario(s: aiohttp.ClientSession) -> None:
        answer = await post(s, body, key="mixed")
        CONTRACT.check("/v1/ingest", "post", answer)
        assert (answer.status, answer.json["accepted"], answer.json["duplicates"]) == (200, 2, 0)
        reasons = {r["id"]: r["reason"] for r in answer.json["rejected"]}
        assert set(reasons) == {"0123456789ab-2", "0123456789ab-3", "0123456789ab-4", "fedcba987654-6"}
        assert reasons["0123456789ab-2"].startswith("$[0].records[1].sourceTime: 'yesterday' does not match")
        assert "is not of type 'null'" in reasons["0123456789ab-2"]
        assert reasons["0123456789ab-3"].startswith("$[0].records[2].sourceTime: ")
        assert "not a valid date" in reasons["0123456789ab-3"]
        assert reasons["0123456789ab-4"].startswith("$[1].records[0].elements[0].clock: 'sundial' is not one of")
        assert reasons["fedcba987654-6"].startswith("$[2].records[1].id: ") and ORIGIN in reasons["fedcba987654-6"]

    run(db, scenario)
    assert stored_ids(db) == ids([1, 5])


def test_too_large_bodies_unknown_routes_and_wrong_methods_get_json_reasons(tmp_path: Path) -> None:
    db = tmp_path / "cloud.sqlite3"

    async def scenario() -> None:
        async with served(db, max_body_bytes=20_000) as s:
            too_large = await post(s, batch(speeds(range(1, 101))), key="big")
            CONTRACT.check("/v1/ingest", "post", too_large)
            assert too_large.status == 413 and "Maximum request body size 20000" in too_large.json["reason"]
            assert (await post(s, batch(speeds([1])), key="small")).status == 200
            nowhere = await get(s, "/v1/nowhere")
            assert (nowhere.status, nowhere.json["error"]) == (404, "not-found")
            async with s.put("/v1/ingest", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                wrong = Answer(r.status, dict(r.headers), await r.read())
            assert (wrong.status, wrong.headers["Allow"]) == (405, "POST")
            assert wrong.json["reason"] == "PUT is not allowed on /v1/ingest; allowed: POST"

    asyncio.run(scenario())
    assert stored_ids(db) == ids([1])


def _envelope(**changes: Any) -> bytes:
    msg = orjson.loads(speeds([1]))
    msg.update(changes)
    return orjson.dumps(msg)


@pytest.mark.parametrize(
    ("body", "key", "content_type", "status", "reason"),
    [
        pytest.param(b"[{not json", "k", "application/json", 400, "the body is not JSON", id="not-json"),
        pytest.param(_envelope(), "k", "application/json", 400, "got a JSON dict", id="not-an-array"),
        pytest.param(b"[]", "k", "application/json", 400, "got an empty array", id="empty-array"),
        pytest.param(batch(speeds([2])), None, "application/json", 400, "Idempotency-Key", id="no-key"),
        pytest.param(batch(speeds([2])), "k", "text/plain", 415, "application/json", id="not-json-type"),
        pytest.param(
            batch(speeds([2]), _envelope(origin="NOT-HEX")), "k", "application/json", 422, "$[1].origin", id="origin"
        ),
        pytest.param(batch(_envelope(lane="bogus")), "k", "application/json", 422, "$[0].lane", id="lane"),
        pytest.param(batch(_envelope(v=1)), "k", "application/json", 422, "$[0].v: 2 was expected", id="version"),
        pytest.param(batch(_envelope(records=[])), "k", "application/json", 422, "$[0].records", id="no-records"),
    ],
)
def test_a_malformed_body_is_refused_with_a_reason_and_nothing_stored(
    tmp_path: Path, body: bytes, key: str | None, content_type: str, status: int, reason: str
) -> None:
    db = tmp_path / "cloud.sqlite3"

    async def scenario(s: aiohttp.ClientSession) -> None:
        answer = await post(s, body, key=key, content_type=content_type)
        CONTRACT.check("/v1/ingest", "post", answer)
        assert answer.status == status
        assert reason in answer.json["reason"]

    run(db, scenario)
    assert stored_ids(db) == []


@pytest.mark.parametrize(
    ("setting", "status", "retry_after"),
    [("fail_next", 500, None), ("throttle_next", 429, "7"), ("unavailable_next", 503, "7")],
)
def test_counted_faults_answer_the_next_requests_then_stop(
    tmp_path: Path, setting: str, status: int, retry_after: str | None
) -> None:
    db = tmp_path / "cloud.sqlite3"

    async def scenario(s: aiohttp.ClientSession) -> None:
        assert (await set_faults(s, **{setting: 2, "retry_after": 7})).status == 200
        for attempt in range(2):
            answer = await post(s, batch(speeds([1, 2])), key=f"try-{attempt}")
            CONTRACT.check("/v1/ingest", "post", answer)
            assert answer.status == status
            assert answer.headers.get("Retry-After") == retry_after
        assert (await get(s, "/_faults")).json[setting] == 0
        assert stored_ids(db) == []
        assert (await post(s, batch(speeds([1, 2])), key="try-2")).status == 200

    run(db, scenario)
    assert stored_ids(db) == ids([1, 2])


def test_a_delay_holds_every_ingest_answer(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession) -> None:
        await set_faults(s, delay_ms=400)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await post(s, batch(speeds([1])), key="slow")).status == 200
        assert loop.time() - started >= 0.4
        with pytest.raises(asyncio.TimeoutError):
            await post(s, batch(speeds([2])), key="too-slow", timeout=0.1)

    run(tmp_path / "cloud.sqlite3", scenario)


def test_a_dropped_connection_is_a_connection_error_to_the_client_and_stores_nothing(tmp_path: Path) -> None:
    db = tmp_path / "cloud.sqlite3"
    # Nearly 1 MiB: the client is likely still sending when the line drops (a reset); if it is not,
    # it sees the server disconnect. Either is a connection error, never an answer.
    big = batch(speeds(range(1, 3001)))

    async def scenario(s: aiohttp.ClientSession) -> None:
        await set_faults(s, drop_next=1)
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(s, big, key="dropped")
        assert stored_ids(db) == []
        assert (await post(s, big, key="dropped")).json["accepted"] == 3000

    run(db, scenario)
    assert stored_ids(db) == ids(range(1, 3001))


def test_chosen_ids_and_elements_are_rejected_with_the_given_reason(tmp_path: Path) -> None:
    db = tmp_path / "cloud.sqlite3"
    body = batch(speeds(range(1, 6)), data(element("Cooling.Temperature"), [(6, 40.0, at(0)), (7, 41.0, at(1))]))

    async def scenario(s: aiohttp.ClientSession) -> None:
        settings = await set_faults(
            s, reject_ids=[wire.record_id(ORIGIN, 3)], reject_elements=["Temperature"], reject_reason="quarantined"
        )
        CONTRACT.check("/_faults", "post", settings)
        answer = await post(s, body, key="chosen")
        assert answer.json["accepted"] == 4
        assert answer.json["rejected"] == [
            {"id": wire.record_id(ORIGIN, seq), "reason": "quarantined"} for seq in (3, 6, 7)
        ]
        typo = await set_faults(s, fail_nxt=1)
        CONTRACT.check("/_faults", "post", typo)
        assert typo.status == 400 and "'fail_nxt' (typo?)" in typo.json["reason"]
        assert (await set_faults(s, drop_next=-1)).status == 400

    run(db, scenario)
    assert stored_ids(db) == ids([1, 2, 4, 5])


def test_faults_from_the_command_line_and_no_fault_controls_without_test_controls(tmp_path: Path) -> None:
    async def scenario(url: str) -> None:
        async with aiohttp.ClientSession(base_url=url) as s:
            throttled = await post(s, batch(speeds([1])), key="k1")
            assert (throttled.status, throttled.headers["Retry-After"]) == (429, "3")
            assert (await post(s, batch(speeds([1])), key="k1")).status == 200
            assert (await set_faults(s, fail_next=1)).status == 404
            assert (await get(s, "/_faults")).status == 404

    args = ["--throttle-next", "1", "--retry-after", "3"]
    with CloudReceiver(tmp_path / "cloud", tokens=[TOKEN], test_controls=False, args=args) as cloud:
        asyncio.run(scenario(cloud.url))
    assert stored_ids(cloud.db) == ids([1])


# -- values, the document, the store ----------------------------------------------------------------------


def test_nan_infinities_64_bit_integers_and_empty_strings_survive_to_the_query_answer(tmp_path: Path) -> None:
    cases: list[tuple[str, str, list[Any]]] = [
        ("Vibration", "xs:double", [math.nan, math.inf, -math.inf, 0.1]),
        ("Counter", "xs:unsignedLong", [2**64 - 1, 2**53, 0]),
        ("Offset", "xs:long", [-(2**63), 2**63 - 1, -(2**53) - 1]),
        ("Label", "xs:string", ["", "주축 과부하", ""]),
        ("Message", "langString", [{"language": "ko-KR", "text": ""}, {"language": "ko-KR", "text": "경고"}]),
        ("Raw", "xs:base64Binary", [b"", b"\x00\xff"]),
    ]
    messages, seq = [], 0
    for path, xs, values in cases:
        messages.append(data(element(path, xs), [(seq + i, v, at(i)) for i, v in enumerate(values)]))
        seq += len(values)

    async def scenario(s: aiohttp.ClientSession) -> None:
        assert (await post(s, batch(*messages), key="special")).json["accepted"] == seq
        latest = {e["path"]: e["value"] for e in (await get(s, "/v1/assets/cnc01/latest")).json["elements"]}
        for path, xs, values in cases:
            encoded = [wire.value_encoder(xs)(v) for v in values]
            answer = await get(s, f"/v1/assets/cnc01/records?element={path}")
            got = [r["value"] for r in answer.json["records"]]
            # Byte-exact: 2**53 stays the integer 9007199254740992, "" stays "", "NaN" stays a string.
            assert orjson.dumps(got) == orjson.dumps(encoded), path
            assert orjson.dumps(latest[path]) == orjson.dumps(encoded[-1]), path
            for original, decoded in zip(values, [wire.decode_value(xs, v) for v in got], strict=True):
                if isinstance(original, float) and math.isnan(original):
                    assert math.isnan(decoded)
                else:
                    assert decoded == original

    run(tmp_path / "cloud.sqlite3", scenario)


def test_the_openapi_document_lists_exactly_the_routes_the_app_registers(tmp_path: Path) -> None:
    assert CONTRACT.doc["openapi"].startswith("3.1.")
    assert CONTRACT.doc["info"]["title"] and CONTRACT.doc["info"]["version"]
    for test_controls in (True, False):
        store = SQLiteStore(tmp_path / f"routes-{test_controls}.sqlite3")
        try:
            app = make_app(store, tokens=[TOKEN], test_controls=test_controls)
            registered = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
        finally:
            store.close()
        assert registered == CONTRACT.routes(test_controls=test_controls)
    assert ("GET", "/_faults") not in CONTRACT.routes(test_controls=False)

    refs: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)

    collect(CONTRACT.doc)
    resolver = CONTRACT.registry.resolver(base_uri=CONTRACT.uri)
    assert refs and all(resolver.lookup(ref).contents is not None for ref in refs)

    # The documented request body is the wire format: a real batch fits it, a broken one does not.
    body_schema = f"{CONTRACT.uri}#/paths/~1v1~1ingest/post/requestBody/content/application~1json/schema"
    validator = Draft202012Validator({"$ref": body_schema}, registry=CONTRACT.registry)
    assert validator.is_valid(orjson.loads(batch(speeds([1, 2]), gap(3, "Spindle.Speed"))))
    assert not validator.is_valid(orjson.loads(batch(_envelope(lane="bogus"))))


def test_a_receiver_without_a_token_does_not_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="simulators.cloud"):
        assert receiver_main(["--db", str(tmp_path / "cloud.sqlite3")]) == 2
    assert "no bearer token" in caplog.text


def test_a_version_3_message_is_stored_as_the_records_it_stands_for_and_a_bad_head_reference_is_rejected(
    tmp_path: Path,
) -> None:
    """wire_version 3 (each head once per message): the receiver stores exactly what the version-2 message of
    the same records stores; a record whose "h" names no head is rejected with its place, its neighbours kept;
    a message whose "heads" is not a list of objects is refused whole."""
    e = element("Spindle.Speed")
    prefix, encode = wire.data_prefix(e), wire.value_encoder(e.value_type)
    obj = wire.head_object(prefix)
    assert obj is not None
    seqs = list(range(1, 6))
    values = [1.5, math.nan, 2**60, -0.0, 7.0]
    tails = [wire.data_tail(encode(v), at(s), at(100), 0) for s, v in zip(seqs, values, strict=True)]
    v2 = wire.payload_of(header("data"), ORIGIN, seqs, [prefix + t for t in tails])
    v3 = wire.payload_v3(header("data"), ORIGIN, [obj], [s + 10 for s in seqs], tails, [0] * 5)
    bad = orjson.loads(wire.payload_v3(header("data"), ORIGIN, [obj], [21, 22], tails[:2], [0, 0]))
    bad["records"][1]["h"] = 3
    no_heads = orjson.loads(wire.payload_v3(header("data"), ORIGIN, [obj], [31], tails[:1], [0]))
    no_heads["heads"] = {"0": {}}

    async def scenario(s: aiohttp.ClientSession) -> None:
        answer = await post(s, batch(v2, v3, orjson.dumps(bad)), key="v3")
        CONTRACT.check("/v1/ingest", "post", answer)
        assert (answer.status, answer.json["accepted"]) == (200, 11)
        assert [(r["id"], r["reason"]) for r in answer.json["rejected"]] == [
            (f"{ORIGIN}-22", '$[2].records[1].h: an index into "heads" (0 to 0), got 3')
        ]
        refused = await post(s, batch(orjson.dumps(no_heads)), key="no-heads")
        CONTRACT.check("/v1/ingest", "post", refused)
        assert refused.status == 422 and '$[0].heads: a version-3 message needs "heads"' in refused.json["reason"]

    run(tmp_path / "cloud.sqlite3", scenario)
    with closing(sqlite3.connect(tmp_path / "cloud.sqlite3")) as c:
        stored = {row[0]: orjson.loads(row[1]) for row in c.execute("SELECT id, record FROM records")}
    assert set(stored) == set(ids([*seqs, *(s + 10 for s in seqs), 21]))
    for s in seqs:
        as_v2, as_v3 = stored[wire.record_id(ORIGIN, s)], stored[wire.record_id(ORIGIN, s + 10)]
        assert {k: v for k, v in as_v3.items() if k != "id"} == {k: v for k, v in as_v2.items() if k != "id"}
    assert stored[wire.record_id(ORIGIN, 13)]["value"] == 2**60 and stored[wire.record_id(ORIGIN, 12)]["value"] == "NaN"
