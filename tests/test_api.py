"""The local API (agent/api/, docs/api.md): AAS Part 2 reads of the live model, sessions that are usage
events, and the control write endpoint. In-process against the aiohttp app (aiohttp's TestServer), and
against a real agent process reading the factory simulator, with a file sink for what it records.
The IDTA test engines' `check_server` checks the running agent against the read profiles. 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from basyx.aas import model

import aas_models.lazy as lazy_module
from aas_models.build import ModelBuildError, ShellEnvironment
from aas_models.lazy import LazySubmodel
from aas_models.live import LiveValues
from agent import usage
from agent.api.aas import PROFILES, encode_id
from agent.api.auth import Sessions
from agent.api.server import ApiServer, create_app
from agent.config import Config, ConfigError, parse, secrets
from agent.config_api import ApiUser
from agent.shells import ModelOnDemand, build_shells
from simulators.agentproc import AgentProcess
from simulators.factory import FactoryThread
from simulators.factory.agentconfig import factory_config
from simulators.ports import free_port
from tests.helpers import file_records, unavailable, until, wait_until

pytestmark = pytest.mark.timeout(300)

FEED = "ns=2;s=CNC01.Control.FeedOverride"
PARTS = "ns=2;s=CNC01.PartCount"
KIM_PASSWORD = "kim-Secret-4711"  # role read, from a secret file
LEE_PASSWORD = "lee-Secret-0815"  # role write, in the config
CONTROL_POINTS = f"""\
      - node: "{FEED}"
        path: Control.FeedOverride
        type: Double
"""
CONTROL = """control:
  enabled: {enabled}
  allow:
    - {{machine: cnc01, element: Control.FeedOverride, min: 0, max: 150}}
"""

Row = tuple[str, float, bytes]


def config_text(
    tmp: Path,
    opc_port: int,
    api_port: int,
    *,
    users: bool = True,
    control: bool = True,
    machines: int = 2,
    only: Callable[[Any], bool] = lambda s: True,
) -> str:
    text = factory_config(
        opc_port=opc_port,
        data_dir=tmp / "data",
        sinks=f"- type: file\n  path: {tmp / 'records.jsonl'}\n  batch: {{max_delay_ms: 50}}",
        machines=machines,
        extra_points=CONTROL_POINTS,
        only=only,
        events=False,
    )
    # An address, so that the nameplate's AddressInformation is not an empty collection: aas-test-engines
    # 1.0.3 crashes on one (it walks `value`, which the JSON leaves out when empty, as the schema wants).
    text = text.replace("      serial_number: ", "      address: {street: Main St 1, zipcode: '12345', city: Ansan}\n"
                        "      serial_number: ")  # fmt: skip
    text += CONTROL.format(enabled=str(control).lower())
    text += f"api:\n  host: 127.0.0.1\n  port: {api_port}\n"
    if users:
        secret = tmp / "kim.pw"
        secret.write_text(KIM_PASSWORD + "\n")
        secret.chmod(0o600)
        text += (
            "  users:\n"
            f"    - {{name: kim, password: '${{file:{secret}}}', role: read}}\n"
            f'    - {{name: lee, password: "{LEE_PASSWORD}", role: write}}\n'
        )
    return text


def make_config(tmp: Path, **kw: Any) -> Config:
    return parse(config_text(tmp, free_port(), free_port(), **kw))


class Recorded:
    """The API's `record` callback: the usage rows it would store, decoded."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    async def __call__(self, rows: Sequence[Row]) -> bool:
        self.rows += rows
        return True

    def events(self) -> list[dict[str, Any]]:
        assert all(lane == "usage" for lane, _, _ in self.rows)
        return [orjson.loads(body) for _, _, body in self.rows]


def in_process(cfg: Config, test: Callable[[TestClient[Any, Any], LiveValues, Recorded], Awaitable[None]]) -> Recorded:
    """Run `test` against the API app over `cfg`'s shells (nothing collected: values come from `live`)."""
    env, live, recorded = build_shells(cfg), LiveValues(), Recorded()

    async def main() -> None:
        async with TestClient(TestServer(create_app(cfg, env, live, recorded), host="127.0.0.1")) as client:
            await test(client, live, recorded)

    asyncio.run(main())
    return recorded


def b64(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def assert_error(doc: Any, status: int) -> str:
    """The spec's error body; returns its text."""
    [message] = doc["messages"]
    assert message["code"] == str(status) and message["messageType"] == "Error", doc
    assert datetime.fromisoformat(message["timestamp"]).tzinfo is not None
    return str(message["text"])


# -- reads, in process ------------------------------------------------------------------------------------


def test_shells_and_submodels_are_listed_page_by_page_with_base64url_ids(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, users=False, machines=3)
    shell_ids = [cfg.aas_id(e) for e in cfg.equipment]
    store = build_shells(cfg).store  # what the agent builds: every submodel in it is served
    submodel_ids = [o.id for o in store if isinstance(o, model.Submodel)]
    refs_of = {o.id: sorted(str(r.key[0].value) for r in o.submodel) for o in store if o.id in shell_ids}

    async def walk(client: TestClient[Any, Any], path: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        query = "?limit=1"
        while True:
            r = await client.get(path + query)
            assert r.status == 200, await r.text()
            doc = await r.json()
            assert len(doc["result"]) == 1
            found += doc["result"]
            cursor = doc["paging_metadata"].get("cursor")
            if cursor is None:
                return found
            query = f"?limit=1&cursor={cursor}"

    async def test(client: TestClient[Any, Any], live: LiveValues, recorded: Recorded) -> None:
        shells = await walk(client, "/shells")
        assert [s["id"] for s in shells] == shell_ids
        submodels = await walk(client, "/submodels")
        assert [s["id"] for s in submodels] == submodel_ids
        assert {f"{i}/sm/{n}" for i in shell_ids for n in ("Nameplate", "OperationalData")} <= set(submodel_ids)
        whole = await (await client.get("/shells")).json()
        assert whole["paging_metadata"] == {} and len(whole["result"]) == 3
        for shell in shells:
            encoded = encode_id(shell["id"])
            assert "=" not in encoded and encoded == b64(shell["id"])
            r = await client.get(f"/shells/{encoded}")
            assert r.status == 200 and (await r.json())["id"] == shell["id"]
            assert (await (await client.get(f"/api/v3.0/shells/{encoded}")).json())["id"] == shell["id"]
            refs = await (await client.get(f"/shells/{encoded}/submodel-refs")).json()
            assert [ref["keys"][0]["value"] for ref in refs["result"]] == refs_of[shell["id"]]
            assert {f"{shell['id']}/sm/Nameplate", f"{shell['id']}/sm/OperationalData"} <= set(refs_of[shell["id"]])
        # Padding is tolerated; an identifier whose base64 needs it.
        padded = base64.urlsafe_b64encode(shell_ids[0].encode()).decode()
        assert (await client.get(f"/shells/{padded}")).status == 200
        assert (await client.get(f"/shells?idShort={shells[1]['idShort']}")).status == 200
        filtered = await (await client.get(f"/shells?idShort={shells[1]['idShort']}")).json()
        assert [s["id"] for s in filtered["result"]] == [shell_ids[1]]
        asset = b64(orjson.dumps({"name": "globalAssetId", "value": cfg.asset_id(cfg.equipment[2])}).decode())
        by_asset = await (await client.get(f"/shells?assetIds={asset}")).json()
        assert [s["id"] for s in by_asset["result"]] == [shell_ids[2]]

    recorded = in_process(cfg, test)
    assert recorded.rows == [], "loopback without users: requests are no person's use, nothing recorded"


def test_errors_carry_the_spec_body_and_the_aas_is_read_only(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, users=False)
    shell = b64(cfg.aas_id(cfg.equipment[0]))
    sm = b64(f"{cfg.aas_id(cfg.equipment[0])}/sm/OperationalData")

    async def test(client: TestClient[Any, Any], live: LiveValues, recorded: Recorded) -> None:
        r = await client.get(f"/shells/{b64('urn:nobody:aas:none')}")
        assert r.status == 404 and "urn:nobody:aas:none" in assert_error(await r.json(), 404)
        assert (await client.get(f"/submodels/{b64('urn:nobody:sm')}")).status == 404
        r = await client.get(f"/submodels/{sm}/submodel-elements/NoSuch.Element")
        assert r.status == 404 and "NoSuch.Element" in assert_error(await r.json(), 404)
        r = await client.get(f"/shells/{shell}/submodels/{b64('urn:elsewhere/sm/X')}")
        assert r.status == 404, "a submodel the shell does not refer to"
        for bad in ("/shells/invalid-base64url=====", "/shells?limit=-1", "/shells?limit=x", "/shells?cursor=%%%",
                    f"/submodels/{sm}?level=everything", f"/submodels/{sm}?extent=all",
                    f"/submodels/{sm}/submodel-elements/Control..FeedOverride"):  # fmt: skip
            r = await client.get(bad)
            assert r.status == 400, bad
            assert_error(await r.json(), 400)
        for method, path in (
            ("PUT", f"/shells/{shell}"),
            ("POST", "/shells"),
            ("DELETE", f"/submodels/{sm}"),
            ("PATCH", f"/submodels/{sm}/submodel-elements/Control.FeedOverride"),
            ("PUT", f"/submodels/{sm}/submodel-elements/Control.FeedOverride/$value"),
        ):
            r = await client.request(method, path, json={"value": "1"})
            assert r.status == 405, (method, path)
            assert "GET" in r.headers["Allow"]
            assert "only reads" in assert_error(await r.json(), 405)
        r = await client.get("/no/such/route")
        assert r.status == 404
        assert_error(await r.json(), 404)
        assert (await (await client.get("/description")).json()) == {"profiles": list(PROFILES)}

    in_process(cfg, test)


def test_the_model_is_built_once_at_the_first_aas_read_and_one_that_cannot_be_built_answers_503(
    tmp_path: Path,
) -> None:
    """The agent serves a ModelOnDemand (agent/shells.py): nothing is built until an AAS read; concurrent first
    reads share one build, and a reader that goes away does not cancel it; a build that fails answers every AAS
    read with 503 and the reason, without building again, until a reload replaces the configuration."""
    cfg = make_config(tmp_path, users=False)
    aas = cfg.aas_id(cfg.equipment[0])
    element = f"/submodels/{b64(f'{aas}/sm/OperationalData')}/submodel-elements/Control.FeedOverride/$value"
    builds: list[str] = []
    fail = threading.Event()
    fail.set()
    release = threading.Event()

    def build() -> ShellEnvironment:
        builds.append("build")
        if fail.is_set():
            raise ModelBuildError("cnc01: a problem made for this test")
        release.wait(30)
        return build_shells(cfg)

    model, live = ModelOnDemand(build), LiveValues()
    live.update(aas, "Control.FeedOverride", 42.0)  # collected before any model exists
    asked: list[str] = []

    async def served() -> ShellEnvironment:
        asked.append("read")
        return await model()

    async def main() -> None:
        app = create_app(cfg, served, live, Recorded())
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            assert (await client.get("/description")).status == 200
            assert builds == []
            for _ in range(2):
                answer = await client.get("/shells")
                assert answer.status == 503
                text = (await answer.json())["messages"][0]["text"]
                assert "cannot be built" in text and "a problem made for this test" in text, text
            assert builds == ["build"]  # not built again for every read

            fail.clear()
            model.replace(build, None)  # a reload
            gone = asyncio.create_task(model())
            await until(lambda: len(builds) == 2, 30)
            gone.cancel()  # a reader that went away
            asked.clear()
            reads = [asyncio.create_task(client.get(element)) for _ in range(5)]
            await until(lambda: len(asked) == 5, 30, "five reads waiting for the build")
            release.set()
            for answer in await asyncio.gather(*reads):
                assert answer.status == 200 and await answer.json() == {"FeedOverride": 42.0}
            assert builds == ["build", "build"]  # one build for all, the cancelled reader's
            assert model.env is not None and await model.settled() is model.env

    asyncio.run(main())


def test_live_values_level_core_and_the_modifiers(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, users=False)
    aas = cfg.aas_id(cfg.equipment[0])
    sm = b64(f"{aas}/sm/OperationalData")
    element = f"/submodels/{sm}/submodel-elements/Control.FeedOverride"

    async def test(client: TestClient[Any, Any], live: LiveValues, recorded: Recorded) -> None:
        live.update(aas, "Control.FeedOverride", 120.5)
        live.update(aas, "PartCount", 17)
        assert await (await client.get(element + "/$value")).json() == {"FeedOverride": 120.5}
        prop = await (await client.get(element)).json()
        assert prop["value"] == "120.5" and prop["valueType"] == "xs:double" and prop["modelType"] == "Property"
        live.update(aas, "Control.FeedOverride", 80.0)  # the next read sees the latest value
        assert await (await client.get(element + "/$value")).json() == {"FeedOverride": 80.0}
        meta = await (await client.get(element + "/$metadata")).json()
        assert "value" not in meta and meta["idShort"] == "FeedOverride"
        assert await (await client.get(element + "/$reference")).json() == {
            "type": "ModelReference",
            "keys": [
                {"type": "Submodel", "value": f"{aas}/sm/OperationalData"},
                {"type": "SubmodelElementCollection", "value": "Control"},
                {"type": "Property", "value": "FeedOverride"},
            ],
        }
        collection = f"/submodels/{sm}/submodel-elements/Control"
        assert await (await client.get(collection + "/$path")).json() == ["Control", "Control.FeedOverride"]
        assert await (await client.get(collection + "/$value")).json() == {"Control": {"FeedOverride": 80.0}}
        r = await client.get(element + "/$path")
        assert r.status == 400, "a Property has no $path"

        deep = await (await client.get(f"/submodels/{sm}")).json()
        core = await (await client.get(f"/submodels/{sm}?level=core")).json()
        [control_deep] = [e for e in deep["submodelElements"] if e["idShort"] == "Control"]
        [control_core] = [e for e in core["submodelElements"] if e["idShort"] == "Control"]
        assert control_deep["value"][0]["idShort"] == "FeedOverride"
        assert "value" not in control_core, "level=core: the submodel's elements without their children"
        assert [e["idShort"] for e in core["submodelElements"]] == [e["idShort"] for e in deep["submodelElements"]]
        value = await (await client.get(f"/submodels/{sm}/$value")).json()
        assert value["PartCount"] == 17 and value["Control"] == {"FeedOverride": 80.0}
        assert "submodelElements" not in await (await client.get(f"/submodels/{sm}/$metadata")).json()
        paths = await (await client.get(f"/submodels/{sm}/submodel-elements/$path")).json()
        assert "Control.FeedOverride" in paths["result"] and "PartCount" in paths["result"]
        elements = await (await client.get(f"/submodels/{sm}/submodel-elements?level=core")).json()
        assert all("value" not in e for e in elements["result"] if e["modelType"] == "SubmodelElementCollection")
        env_doc = await (await client.get(f"/serialization?aasIds={b64(aas)}&submodelIds={sm}")).json()
        assert [s["id"] for s in env_doc["assetAdministrationShells"]] == [aas]
        assert [s["id"] for s in env_doc["submodels"]] == [f"{aas}/sm/OperationalData"]

    in_process(cfg, test)


# -- sessions, in process -----------------------------------------------------------------------------------


def test_sessions_are_usage_events_and_a_wrong_password_records_nothing(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    assert {KIM_PASSWORD, LEE_PASSWORD} <= set(secrets(cfg)), "masked in every log line"
    sm = b64(f"{cfg.aas_id(cfg.equipment[0])}/sm/OperationalData")
    served: list[int] = []

    async def test(client: TestClient[Any, Any], live: LiveValues, recorded: Recorded) -> None:
        assert (await client.get("/description")).status == 200, "the description needs no session"
        r = await client.get("/shells")
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert_error(await r.json(), 401)
        r = await client.post("/login", json={"user": "kim", "password": "wrong"})
        assert r.status == 401 and KIM_PASSWORD not in await r.text()
        assert (await client.post("/login", json={"user": "nobody", "password": KIM_PASSWORD})).status == 401
        assert recorded.rows == [], "a failed login is no session: nothing recorded"
        r = await client.post("/login", json={"user": "kim", "password": KIM_PASSWORD})
        assert r.status == 200
        login = await r.json()
        assert login["tokenType"] == "Bearer" and login["role"] == "read" and login["expiresIn"] == 1800
        assert KIM_PASSWORD not in await r.text()
        bearer = {"Authorization": f"Bearer {login['token']}"}
        assert (await client.get("/shells", headers={"Authorization": "Bearer not-a-token"})).status == 401
        for path in ("/shells", f"/submodels/{sm}", f"/submodels/{sm}/$value", "/submodels?limit=1"):
            r = await client.get(path, headers=bearer)
            assert r.status == 200
            served.append(len(await r.read()))
        assert (await client.get(f"/submodels/{b64('urn:none')}", headers=bearer)).status == 404, "not counted"
        assert [e["use"] for e in recorded.events()] == ["DO6001"], "reads are summed, not one event each"
        assert (await client.post("/logout", headers=bearer)).status == 204
        assert (await client.get("/shells", headers=bearer)).status == 401, "the token ended with the session"
        # HTTP Basic logs in as well.
        basic = base64.b64encode(f"lee:{LEE_PASSWORD}".encode()).decode()
        r = await client.post("/login", headers={"Authorization": f"Basic {basic}"})
        assert r.status == 200 and (await r.json())["role"] == "write"

    recorded = in_process(cfg, test)
    events = recorded.events()
    assert [e["use"] for e in events] == ["DO6001", "DO6003", "DO6002", "DO6001", "DO6002"]
    assert [e["user"] for e in events] == ["kim", "kim", "kim", "lee", "lee"]
    assert {e["ip"] for e in events} == {"127.0.0.1"}
    assert events[1]["bytes"] == sum(served) and events[1]["action"] == "api read (4 responses)"
    assert events[0]["bytes"] == events[2]["bytes"] == 0
    assert events[2]["action"] == "api logout"
    assert events[4]["action"] == "api session ended: the agent stopped", "the app stopped with lee logged in"
    assert len({e["event"] for e in events}) == 5
    assert all(KIM_PASSWORD.encode() not in body and LEE_PASSWORD.encode() not in body for _, _, body in recorded.rows)


def test_reads_are_one_event_per_session_and_minute_and_an_idle_session_expires() -> None:
    clock = [1000.0]
    wall = [datetime(2030, 5, 6, 9, 0, tzinfo=UTC)]
    recorded = Recorded()

    def advance(seconds: float) -> None:
        clock[0] += seconds
        wall[0] += timedelta(seconds=seconds)

    users = [ApiUser(name="kim", password=KIM_PASSWORD, role="read")]  # type: ignore[arg-type]
    sessions = Sessions(users, recorded, clock=lambda: clock[0], now=lambda: wall[0])

    async def main() -> None:
        user = sessions.check("kim", KIM_PASSWORD)
        assert user is not None and sessions.check("kim", "nope") is None
        token = await sessions.login(user, "10.1.2.3")
        s = sessions.authenticate(f"Bearer {token}")
        assert s is not None
        first_read = wall[0]
        for n in (100, 200, 300):
            sessions.read(s, "10.1.2.3", n)
            advance(15)
            await sessions.tick()
        assert len(recorded.rows) == 1, "the minute is not over"
        advance(20)  # 65 s after the first read
        await sessions.tick()
        sessions.read(s, "10.1.2.3", 50)  # opens the next window
        await sessions.tick()
        assert sessions.authenticate(f"Bearer {token}") is s
        last_seen = wall[0]
        advance(30 * 60 + 1)
        assert sessions.authenticate(f"Bearer {token}") is None, "idle for more than 30 minutes"
        await sessions.tick()
        assert sessions.open == []
        events = recorded.events()
        assert [e["use"] for e in events] == ["DO6001", "DO6003", "DO6003", "DO6002"]
        assert events[1]["bytes"] == 600 and events[1]["time"] == first_read.isoformat().replace("+00:00", "Z")
        assert events[2]["bytes"] == 50, "the open window is closed before the session ends"
        assert events[3]["action"] == "api session expired"
        expired = datetime.fromisoformat(events[3]["time"])
        assert expired == last_seen + timedelta(minutes=30), "the session ended when its idle time ran out"

    asyncio.run(main())


def test_an_api_open_to_the_network_needs_users(tmp_path: Path) -> None:
    text = config_text(tmp_path, free_port(), free_port(), users=False).replace("host: 127.0.0.1", "host: 0.0.0.0")
    with pytest.raises(ConfigError, match=r"api: host '0.0.0.0' is not a loopback address and no users"):
        parse(text, "agent.yaml")
    with_users = config_text(tmp_path, free_port(), free_port()).replace("host: 127.0.0.1", "host: 0.0.0.0")
    assert not parse(with_users).api.loopback
    assert parse(text.replace("host: 0.0.0.0", "host: '::1'")).api.loopback
    assert parse(text.replace("host: 0.0.0.0", "enabled: false\n  host: 0.0.0.0")).api.enabled is False
    with pytest.raises(ConfigError, match=r"password must be text.*not shown") as e:
        parse(config_text(tmp_path, free_port(), free_port()).replace(f'"{LEE_PASSWORD}"', "4711"))
    assert "4711" not in str(e.value)


def test_control_writes_need_a_write_role_an_enabled_control_and_pass_the_guard(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)  # the source's port has nothing listening: an allowed write is unreachable

    async def login(client: TestClient[Any, Any], user: str, password: str) -> dict[str, str]:
        r = await client.post("/login", json={"user": user, "password": password})
        return {"Authorization": f"Bearer {(await r.json())['token']}"}

    async def test(client: TestClient[Any, Any], live: LiveValues, recorded: Recorded) -> None:
        write = {"machine": "cnc01", "element": "Control.FeedOverride", "value": 90}
        assert (await client.post("/control/write", json=write)).status == 401
        kim = await login(client, "kim", KIM_PASSWORD)
        r = await client.post("/control/write", json=write, headers=kim)
        assert r.status == 403 and "role read" in assert_error(await r.json(), 403)
        lee = await login(client, "lee", LEE_PASSWORD)
        r = await client.post("/control/write", json={**write, "value": 151}, headers=lee)
        doc = await r.json()
        assert r.status == 422 and doc["outcome"] == "not-allowed"
        assert "151 is outside the limits; cnc01 Control.FeedOverride (Double) allows 0 to 150" in doc["message"]
        assert_error(doc, 422)
        r = await client.post("/control/write", json={"machine": "cnc01"}, headers=lee)
        assert r.status == 400
        r = await client.post("/control/write", json=write, headers=lee)
        doc = await r.json()
        assert r.status == 502 and doc["outcome"] == "unreachable" and "nothing was written" in doc["message"]

    in_process(cfg, test)
    assert not usage.spool_dir(cfg.agent.data_dir).exists(), "nothing reached a machine: nothing logged"

    off = make_config(tmp_path, control=False)

    async def disabled(client: TestClient[Any, Any], live: LiveValues, recorded: Recorded) -> None:
        r = await client.post("/login", json={"user": "lee", "password": LEE_PASSWORD})
        lee = {"Authorization": f"Bearer {(await r.json())['token']}"}
        write = {"machine": "cnc01", "element": "Control.FeedOverride", "value": 90}
        r = await client.post("/control/write", json=write, headers=lee)
        assert r.status == 403 and "control.enabled is false" in assert_error(await r.json(), 403)

    in_process(off, disabled)

    anonymous = make_config(tmp_path, users=False)

    async def no_users(client: TestClient[Any, Any], live: LiveValues, recorded: Recorded) -> None:
        write = {"machine": "cnc01", "element": "Control.FeedOverride", "value": 90}
        r = await client.post("/control/write", json=write)
        assert r.status == 403 and "api.users" in assert_error(await r.json(), 403), "no anonymous plant actions"

    in_process(anonymous, no_users)


def test_a_configured_control_token_is_wanted_before_anything_is_tried(tmp_path: Path) -> None:
    token = "ctl-Tok-83a1f0"
    text = config_text(tmp_path, free_port(), free_port()).replace("control:\n", f'control:\n  token: "{token}"\n', 1)
    cfg = parse(text)

    async def test(client: TestClient[Any, Any], live: LiveValues, recorded: Recorded) -> None:
        r = await client.post("/login", json={"user": "lee", "password": LEE_PASSWORD})
        lee = {"Authorization": f"Bearer {(await r.json())['token']}"}
        write = {"machine": "cnc01", "element": "Control.FeedOverride", "value": 90}
        for wrong in ({}, {"X-Control-Token": "ctl-Tok-83a1f"}, {"X-Control-Token": token + "x"}):
            r = await client.post("/control/write", json=write, headers={**lee, **wrong})
            said = assert_error(await r.json(), 403)
            assert r.status == 403 and "control token" in said and token not in said
        r = await client.post("/control/write", json=write, headers={**lee, "X-Control-Token": token})
        doc = await r.json()
        assert r.status == 502 and doc["outcome"] == "unreachable", doc  # past the token: the machine is not there

    in_process(cfg, test)


def test_a_taken_port_is_tried_again_without_failing_the_component(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(tmp_path, users=False)
    env, live, recorded = build_shells(cfg), LiveValues(), Recorded()

    async def main() -> None:
        taken = socket.socket()
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", cfg.api.port))
        taken.listen()
        server = ApiServer(cfg, env, live, recorded, retry=(0.05, 0.2))
        task = asyncio.create_task(server.run())
        await until(lambda: "cannot listen on 127.0.0.1" in caplog.text, 10, "the bind failure logged")
        assert not task.done(), "the component keeps trying; it does not fail"
        taken.close()

        async def answers() -> bool:
            try:
                async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{cfg.api.port}/description") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        deadline = asyncio.get_running_loop().time() + 10
        while not await answers():
            assert asyncio.get_running_loop().time() < deadline, "the API never came up after the port was freed"
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.WARNING, logger="agent.api.server"):
        asyncio.run(main())
    assert all(r.levelno == logging.WARNING for r in caplog.records if "cannot listen" in r.getMessage())


# -- against a running agent ----------------------------------------------------------------------------------


class Http:
    """A small synchronous client that remembers every answer (to look for passwords in them)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.bodies: list[bytes] = []

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        data = None if json is None else orjson.dumps(json)
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=dict(headers or {}))
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        except OSError:
            return 0, b""
        self.bodies.append(body)
        return status, body

    def get(self, path: str, token: str | None = None) -> Any:
        status, body = self.call("GET", path, token=token)
        assert status == 200, (path, status, body[:300])
        return orjson.loads(body)

    def login(self, user: str, password: str) -> str:
        status, body = self.call("POST", "/login", json={"user": user, "password": password})
        assert status == 200, body
        return str(orjson.loads(body)["token"])


def test_a_running_agent_serves_live_values_records_sessions_and_writes(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    api_port = free_port()
    with FactoryThread(port=free_port(), period=0.1, machines=2) as factory:
        config = tmp_path / "agent.yaml"
        config.write_text(config_text(tmp_path, factory.port, api_port))
        config.chmod(0o600)
        with AgentProcess(config, tmp_path / "agent.log") as agent:
            http = Http(api_port)
            wait_until("the API to listen", lambda: http.call("GET", "/description")[0] == 200, 60)
            assert http.call("POST", "/login", json={"user": "kim", "password": "wrong"})[0] == 401
            kim = http.login("kim", KIM_PASSWORD)
            read_bytes = 0

            def read(path: str) -> Any:
                nonlocal read_bytes
                status, body = http.call("GET", path, token=kim)
                assert status == 200, (path, status, body[:300])
                read_bytes += len(body)
                return orjson.loads(body)

            shells = read("/shells")["result"]
            assert [s["idShort"] for s in shells] == ["cnc01", "imm01"]
            sm = encode_id(f"{shells[0]['id']}/sm/OperationalData")
            parts = f"/submodels/{sm}/submodel-elements/PartCount/$value"

            def live_parts() -> bool:
                return bool(read(parts) == {"PartCount": factory.read(PARTS)})  # None until the first value

            wait_until("the API's PartCount to be the machine's", live_parts, 30)
            denied = http.call("POST", "/control/write", token=kim, json={"machine": "cnc01",
                               "element": "Control.FeedOverride", "value": 80})  # fmt: skip
            assert denied[0] == 403
            assert http.call("POST", "/logout", token=kim)[0] == 204

            basic = base64.b64encode(f"lee:{LEE_PASSWORD}".encode()).decode()
            status, body = http.call("POST", "/login", headers={"Authorization": f"Basic {basic}"})
            assert status == 200
            lee = str(orjson.loads(body)["token"])
            status, body = http.call(
                "POST",
                "/control/write",
                token=lee,
                json={"machine": "cnc01", "element": "Control.FeedOverride", "value": 80},
            )
            result = orjson.loads(body)
            assert status == 200 and result["outcome"] == "written" and result["readBack"] == 80.0, result
            assert factory.read(FEED) == 80.0
            feed = f"/submodels/{sm}/submodel-elements/Control.FeedOverride/$value"
            wait_until("the written value in the AAS", lambda: http.get(feed, lee) == {"FeedOverride": 80.0}, 30)
            assert http.call("POST", "/logout", token=lee)[0] == 204

            def used() -> list[dict[str, Any]]:
                return [r for r in file_records(out, "usage") if r.get("action", "").startswith("api")]

            wait_until(
                "the sessions on the usage lane", lambda: len([u for u in used() if u["use"] == "DO6002"]) == 2, 30
            )
            wait_until("the control write on the usage lane", lambda: any(u["use"] == "DO6005" for u in used()), 30)
            assert agent.stop() == 0, agent.log()[-3000:]

    events = sorted(used(), key=lambda e: e["time"])  # the control write came through the spool, later
    kims = [e for e in events if e["user"] == "kim"]
    assert kims[0]["use"] == "DO6001" and kims[-1]["use"] == "DO6002"
    reads = [e for e in kims if e["use"] == "DO6003"]
    assert reads and sum(e["bytes"] for e in reads) == read_bytes, "the bytes of every response body, summed"
    assert len(reads) <= 2, "one DO6003 per session and minute"
    assert {e["ip"] for e in events} == {"127.0.0.1"}
    lees = [e["use"] for e in events if e["user"] == "lee"]
    assert lees[0] == "DO6001" and lees[-1] == "DO6002" and "DO6005" in lees
    [write] = [e for e in events if e["use"] == "DO6005"]
    assert write["action"] == "api cnc01 Control.FeedOverride" and write["bytes"] == len("80")
    [status_record] = [r for r in file_records(out, "status") if r["kind"] == "control-write"]
    assert status_record["event"] == write["event"] and status_record["user"] == "lee" and status_record["new"] == 80.0
    for where, text in (
        ("the agent log", (tmp_path / "agent.log").read_bytes()),
        ("the file sink", out.read_bytes()),
        ("the API's answers", b"".join(http.bodies)),
    ):
        for password in (KIM_PASSWORD, LEE_PASSWORD):
            assert password.encode() not in text, f"a password in {where}"


def test_the_idta_test_engines_pass_the_running_agent_for_the_read_profiles(tmp_path: Path) -> None:
    try:
        from aas_test_engines import api, config, http
        from aas_test_engines.result import AasTestResult, Level
    except ImportError:
        unavailable("aas-test-engines is not installed (pip install aas-test-engines)")
    out = tmp_path / "records.jsonl"
    api_port = free_port()
    with FactoryThread(port=free_port(), period=0.2, machines=2) as factory:
        config_path = tmp_path / "agent.yaml"
        # Every signal but the Double and Float edge-case sweeps: aas-test-engines 1.0.3 checks xs:double and
        # xs:float with exclusive bounds and rejects their largest finite values, which the agent rightly serves.
        sweeps = ("Diagnostics.Double", "Diagnostics.Float")
        text = config_text(tmp_path, factory.port, api_port, users=False, only=lambda s: s.name not in sweeps)
        config_path.write_text(text)
        with AgentProcess(config_path, tmp_path / "agent.log") as agent:
            client = Http(api_port)
            wait_until("the API to listen", lambda: client.call("GET", "/description")[0] == 200, 60)
            wait_until("values in the AAS", lambda: client.get("/shells") and _has_values(client), 30)
            results: dict[str, tuple[AasTestResult, Any]] = {}
            for profile in PROFILES:
                result, matrix = api.execute_tests(
                    http.HttpClient(f"http://127.0.0.1:{api_port}"), config.CheckApiConfig(suite=profile)
                )
                results[profile] = (result, matrix)
            assert agent.stop() == 0, agent.log()[-3000:]

    def errors(r: AasTestResult, path: str = "") -> list[str]:
        here = f"{path} / {r.message}"
        below = [e for s in r.sub_results for e in errors(s, here)]
        return below or ([here] if r.level.value >= Level.ERROR.value else [])

    for profile, (result, matrix) in results.items():
        assert result.ok(), (profile, errors(result)[:10])
        assert result.level in (Level.INFO, Level.WARNING), profile
        assert matrix.valid_accepted > 50 and matrix.invalid_rejected > 20, profile
        assert matrix.valid_rejected == 0 and matrix.invalid_accepted == 0, profile
    assert not [r for r in file_records(out, "usage") if r.get("action", "").startswith("api")], (
        "requests without users on loopback are no person's use: nothing recorded"
    )


def _has_values(client: Http) -> bool:
    shells = client.get("/shells")["result"]
    value = client.get(f"/submodels/{encode_id(shells[0]['id'] + '/sm/OperationalData')}/$value")
    return value.get("PartCount") is not None


# -- the lazy asset interfaces (aas_models/lazy.py) are served as held ones --------------------------------------


@pytest.mark.parametrize("group", [lazy_module.GROUP, 2, 1])
def test_lazy_asset_interfaces_are_served_exactly_as_held_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group: int
) -> None:
    """The agent holds each machine's AID and AIMC as a recipe (aas_models/lazy.py), not as SDK objects: every
    read route answers as it does for an environment that holds them (built eagerly), element paths inside
    them, paging and the serialization included. Their JSON is kept in parts of `GROUP` children (an element
    read reads only the parts on its way): with groups of 2 and 1 every element with children is split, at
    every depth."""
    from aas_models.build import build_environment
    from agent.shells import shell_specs, site_spec

    monkeypatch.setattr(lazy_module, "GROUP", group)

    cfg = make_config(tmp_path, users=False, machines=3)
    specs = shell_specs(cfg)
    site = site_spec(cfg)
    envs = {
        lazy: build_environment(specs, language=cfg.site.language, site=site, concept_descriptions=True, lazy=lazy)
        for lazy in (True, False)
    }
    shell_ids = [s.id for s in specs]
    submodel_ids = [o.id for o in envs[True].store.entries() if isinstance(o, model.Submodel | LazySubmodel)]
    aid_id = f"{shell_ids[0]}/sm/AssetInterfacesDescription"
    aimc_id = f"{shell_ids[0]}/sm/AssetInterfacesMappingConfiguration"
    assert {aid_id, aimc_id} <= set(submodel_ids)
    aid_sm, aimc_sm = f"/submodels/{b64(aid_id)}", f"/submodels/{b64(aimc_id)}"
    paths = [
        "/shells",
        "/submodels",
        "/submodels?limit=3",
        "/submodels?level=core",
        "/submodels?idShort=AssetInterfacesDescription",
        f"/submodels?semanticId={b64('https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/1/0/Submodel')}",
        "/submodels/$metadata",
        "/submodels/$value",
        "/submodels/$reference?limit=4",
        "/submodels/$path",
        "/serialization?includeConceptDescriptions=true",
        f"/serialization?aasIds={b64(shell_ids[0])}&submodelIds={b64(aid_id)}",
        f"/shells/{b64(shell_ids[0])}/submodels/{b64(aimc_id)}",
        f"/shells/{b64(shell_ids[1])}/submodels/{b64(aimc_id)}",  # not this shell's: 404
    ]
    for base in (aid_sm, aimc_sm):
        paths += [base + s for s in ("", "?level=core", "/$metadata", "/$value", "/$reference", "/$path")]
        paths += [base + "/submodel-elements" + s for s in ("", "?limit=1", "/$path", "/$value", "/$reference")]
    elements = [
        f"{aid_sm}/submodel-elements/InterfaceOPCUA",
        f"{aid_sm}/submodel-elements/InterfaceOPCUA.InteractionMetadata.properties.Control_FeedOverride",
        f"{aid_sm}/submodel-elements/InterfaceOPCUA.EndpointMetadata.security[0]",
        f"{aid_sm}/submodel-elements/InterfaceOPCUA.title",
        f"{aimc_sm}/submodel-elements/MappingConfigurations[0].MappingSourceSinkRelations[1]",
        f"{aimc_sm}/submodel-elements/MappingConfigurations[0].InterfaceReference",
    ]
    paths += [e + s for e in elements for s in ("", "?level=core", "/$value", "/$metadata", "/$reference", "/$path")]
    paths += [
        f"{aid_sm}/submodel-elements/InterfaceOPCUA.nothing",  # 404
        f"{aid_sm}/submodel-elements/InterfaceOPCUA.title/attachment",  # 400
        f"{aimc_sm}/submodel-elements/MappingConfigurations[7]",  # 404
    ]

    async def answers(env: Any, paths: list[str] = paths) -> list[tuple[int, Any]]:
        found: list[tuple[int, Any]] = []
        app = create_app(cfg, env, LiveValues(), Recorded())
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            for path in paths:
                r = await client.get(path)
                doc = await r.json()
                for message in doc.get("messages", []) if isinstance(doc, dict) else []:
                    message.pop("timestamp")
                found.append((r.status, doc))
        return found

    lazy, held = (asyncio.run(answers(envs[k])) for k in (True, False))
    for path, a, b in zip(paths, lazy, held, strict=True):
        assert a == b, path
    served = dict(zip(paths, lazy, strict=True))
    status, aid = served[aid_sm]
    assert status == 200 and aid["idShort"] == "AssetInterfacesDescription" and aid["id"] == aid_id
    status, feed = served[elements[1]]
    assert status == 200 and feed["idShort"] == "Control_FeedOverride"
    assert served[elements[1] + "/$value"][1]["Control_FeedOverride"]["key"] == "Control.FeedOverride"
    status, relation = served[elements[4] + "/$value"]  # an item of a list: its bare value, no generated idShort
    assert status == 200 and set(relation) == {"first", "second"}
    assert served[f"/shells/{b64(shell_ids[1])}/submodels/{b64(aimc_id)}"][0] == 404
    assert [s for s, _ in served.values()].count(404) == 3

    # Every element of both, by its path, and one past the end of each list.
    every = [f"{base}/submodel-elements/{p}" for base in (aid_sm, aimc_sm) for p in served[base + "/$path"][1]]
    past_end = [e.rsplit("[", 1)[0] + "[999]" for e in every if e.endswith("]")][:5]
    every += past_end
    assert len(every) > 100 and past_end
    lazy, held = (asyncio.run(answers(envs[k], every)) for k in (True, False))
    for path, a, b in zip(every, lazy, held, strict=True):
        assert a == b, path
    assert [s for s, _ in lazy].count(404) == len(past_end)


def test_an_element_read_decompresses_only_the_parts_on_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The promise behind `LazyGroup.path`: one element of a 5,000-point submodel is read without the rest. The
    parts each read opens are counted (the reads themselves are the real ones)."""
    points = [
        {"modelType": "SubmodelElementCollection", "idShort": f"P{i}", "value": [
            {"modelType": "Property", "idShort": "v", "valueType": "xs:int", "value": str(i)},
        ]}
        for i in range(5000)
    ]  # fmt: skip
    doc = {"modelType": "Submodel", "id": "urn:x", "submodelElements": [
        {"modelType": "SubmodelElementCollection", "idShort": "properties", "value": points},
        {"modelType": "SubmodelElementList", "idShort": "rows", "value": points},
    ]}  # fmt: skip
    packed = lazy_module._Packed(orjson.loads(orjson.dumps(doc)))
    opened: list[int] = []
    read_part = lazy_module._Packed._part
    monkeypatch.setattr(lazy_module._Packed, "_part", lambda self, n: opened.append(n) or read_part(self, n))

    found = packed.path(["properties", "P4999", "v"])
    assert found is not None and found[-1]["value"] == "4999"
    assert len(opened) == 2, opened  # the submodel's own part and the group holding P4999
    opened.clear()
    found = packed.path(["rows", 4097])
    assert found is not None and found[-1]["idShort"] == "P4097" and len(opened) == 2
    opened.clear()
    assert packed.path(["properties", "P5000"]) is None and len(opened) == 1  # in no group: none opened
    assert packed.doc() == doc
    assert len(opened) > 150  # the whole: every group (5,000 / 64 twice), for comparison
