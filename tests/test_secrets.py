"""Secrets stay secret: the agent runs with every kind of secret it knows configured, each from a
different place (the config itself, an environment variable, a file, a systemd credential), and every
output is searched for every secret: the log, what every command prints, the MQTT messages, every
file in the data directory, the exports, a configuration error. Zero hits.

The harness is meant to grow: a new kind of secret (an HTTP token, the usage log's crtfcKey) is one
more entry in `secrets_world` and in the config it writes; `outputs` already searches everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import ssl
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from adapters.opcua.pki import Pki
from simulators.agentproc import ROOT, AgentProcess
from simulators.cloud import CloudReceiver
from simulators.factory import FactoryThread
from simulators.factory.server import server_certificate
from simulators.mosquitto import Subscriber
from simulators.ports import free_port
from tests.helpers import unavailable, wait_until
from tests.mqtt_broker import MosquittoBroker
from tests.tlsfiles import Ca

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(300)]


@dataclass
class World:
    config: Path
    data_dir: Path
    env: dict[str, str]
    secrets: dict[str, str]  # what -> the secret
    subscriber: Subscriber
    cloud: CloudReceiver
    outputs: dict[str, bytes] = field(default_factory=dict)  # where -> what it said

    def delivered(self) -> set[str]:
        """Machines whose data reached the broker."""
        return {t.split("/")[3] for t, _ in self.subscriber.messages() if t.endswith("/data")}

    def delivered_over_http(self) -> set[str]:
        """Machines whose data the cloud receiver stored."""
        with contextlib.closing(sqlite3.connect(self.cloud.db)) as c:
            return {row[0] for row in c.execute("SELECT DISTINCT asset FROM records WHERE lane = 'data'")}

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(
            [sys.executable, "-m", "agent.cli", *args], cwd=ROOT, env=self.env, capture_output=True, timeout=120
        )
        self.outputs[f"edge-agent {' '.join(args)} (stdout)"] = done.stdout
        self.outputs[f"edge-agent {' '.join(args)} (stderr)"] = done.stderr
        return done


def encrypt_key(path: Path, passphrase: str) -> None:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase.encode()),
        )
    )


@pytest.fixture
def secrets_world(tmp_path: Path) -> Iterator[World]:
    """Two OPC UA servers (one with users on an unsecured endpoint, one secured), an mTLS broker with a
    password file, a cloud receiver that wants a bearer token, and an agent config that needs a secret
    for every connection."""
    passwd = subprocess.run(["which", "mosquitto_passwd"], capture_output=True, text=True).stdout.strip()
    if not passwd:
        unavailable("mosquitto_passwd not found: install it with apt-get install -y mosquitto")
    secrets = {
        "OPC UA password (from a file)": "opc-Pw-4f9a1c",
        "MQTT password (from a systemd credential)": "mqtt-Pw-8b2e7d",
        "MQTT client key passphrase (from the environment)": "tls-Key-3c6a0f",
        "agent certificate key passphrase (in the config)": "own-Key-9d1b5e",
        "OPC UA user certificate key passphrase (in the config)": "usr-Key-2a7c4b",
        "HTTP sink bearer token (from the environment)": "http-Tok-6e1f3b",
        "usage-log crtfcKey (from a file)": "sflog-Key-7c3d9e",
    }
    s = list(secrets.values())
    data_dir = tmp_path / "data"
    # The MQTT side: mutual TLS and a password file.
    ca = Ca(tmp_path / "mqtt-pki")
    broker_cert = ca.issue("broker")
    client = ca.issue("gateway", host=None, client=True, passphrase=s[2])
    password_file = tmp_path / "passwd"
    subprocess.run([passwd, "-b", "-c", str(password_file), "gateway", s[1]], check=True)
    conf = [f"cafile {ca.cert}", f"certfile {broker_cert.cert}", f"keyfile {broker_cert.key}",
            "require_certificate true", f"password_file {password_file}"]  # fmt: skip
    # The OPC UA side: the agent's own certificate with an encrypted key, and an X.509 user.
    server_dir = tmp_path / "opc-server"
    asyncio.run(server_certificate(server_dir, "127.0.0.1"))
    own = Pki(tmp_path / "own-pki").ensure_own(f"urn:edge-agent:secret-site:{socket.gethostname()}")
    encrypt_key(own.key, s[3])
    user = ca.issue("opc-user", host=None, client=True, passphrase=s[4])
    # Where the secrets come from.
    (tmp_path / "opc-password").write_text(s[0] + "\n")
    (tmp_path / "opc-password").chmod(0o600)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt").write_text(s[1])
    (credentials / "mqtt").chmod(0o600)
    (tmp_path / "crtfc-key").write_text(s[6] + "\n")
    (tmp_path / "crtfc-key").chmod(0o600)
    env = {
        **os.environ,
        "CREDENTIALS_DIRECTORY": str(credentials),
        "MQTT_KEY_PASSWORD": s[2],
        "CLOUD_TOKEN": s[5],
        "PYTHONUNBUFFERED": "1",
    }
    with (
        FactoryThread(port=free_port(), period=0.1, machines=1, users={"operator": s[0]}) as plain,
        FactoryThread(
            port=free_port(),
            period=0.1,
            machines=1,
            security=("Basic256Sha256_SignAndEncrypt",),
            certificate_dir=server_dir,
        ) as secured,
        MosquittoBroker(tmp_path / "broker", extra_conf=conf) as broker,
        CloudReceiver(tmp_path / "cloud", tokens=[s[5]]) as cloud,
    ):
        point = "nameplate: {manufacturer_name: M, product_designation: P, uri_of_product: 'https://x', order_code: O}"
        config = tmp_path / "agent.yaml"
        config.write_text(
            f"""site: {{id: secret-site}}
agent: {{data_dir: {data_dir}, status_interval_s: 1}}
sources:
  - id: plain
    endpoint: {plain.endpoint}
    username: operator
    password: ${{file:{tmp_path / "opc-password"}}}
    allow_plaintext_password: true
  - id: secured
    endpoint: {secured.endpoint}
    security:
      policy: Basic256Sha256
      mode: SignAndEncrypt
      certificate: {own.cert}
      private_key: {own.key}
      private_key_password: "{s[3]}"
      server_certificate: {server_dir / "cert.der"}
    user_certificate: {user.cert}
    user_private_key: {user.key}
    user_private_key_password: "{s[4]}"
equipment:
  - id: cnc01
    source: plain
    {point}
    points: [{{node: "ns=2;s=CNC01.SpindleSpeed", path: SpindleSpeed, type: Double}}]
  - id: cnc01b
    source: secured
    {point}
    points: [{{node: "ns=2;s=CNC01.SpindleSpeed", path: SpindleSpeed, type: Double}}]
sinks:
  - type: mqtt
    host: 127.0.0.1
    port: {broker.port}
    username: gateway
    password: ${{credential:mqtt}}
    tls:
      ca_file: {ca.cert}
      cert_file: {client.cert}
      key_file: {client.key}
      key_password: "${{MQTT_KEY_PASSWORD}}"
    batch: {{max_delay_ms: 100}}
  - type: http
    id: cloud
    url: {cloud.url}
    token: ${{CLOUD_TOKEN}}
    batch: {{max_delay_ms: 100}}
  - type: sflog
    url: http://127.0.0.1:{free_port()}/apisvc
    crtfc_key: ${{file:{tmp_path / "crtfc-key"}}}
"""
        )
        config.chmod(0o600)
        reader = ca.issue("reader", host=None, client=True)
        context = ssl.create_default_context(cafile=str(ca.cert))
        context.load_cert_chain(str(reader.cert), str(reader.key))
        subprocess.run([passwd, "-b", str(password_file), "reader", "reader-pw"], check=True)
        broker.stop()
        broker.start()  # reads the password file again
        with Subscriber(
            port=broker.port, topic="kamp/v1/#", username="reader", password="reader-pw", tls=context
        ) as sub:
            yield World(config, data_dir, env, secrets, sub, cloud)


def test_no_secret_appears_in_any_output(secrets_world: World, tmp_path: Path) -> None:
    world = secrets_world
    assert world.cli("check", "-c", str(world.config)).returncode == 0
    agent = AgentProcess(world.config, tmp_path / "agent.log")
    agent.proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "-c", str(world.config), "--log-format", "json"],
        stdout=(tmp_path / "agent.log").open("wb"), stderr=subprocess.STDOUT, cwd=ROOT, env=world.env,
    )  # fmt: skip
    try:
        # Both sources collect and the broker takes their records: every secret was used for real.
        wait_until("both machines delivered over mutual TLS", lambda: world.delivered() == {"cnc01", "cnc01b"}, 90)
        wait_until("both machines delivered over HTTP", lambda: world.delivered_over_http() == {"cnc01", "cnc01b"}, 30)
    finally:
        assert agent.stop() == 0, agent.log()[-3000:]
    world.outputs["agent log"] = (tmp_path / "agent.log").read_bytes()
    world.outputs["cloud receiver log"] = world.cloud.log().encode()
    world.outputs["cloud receiver store"] = world.cloud.db.read_bytes()
    for n, (topic, payload) in enumerate(world.subscriber.messages()):
        world.outputs[f"MQTT message {n} on {topic}"] = payload
    for fmt, suffix in (("json", "json"), ("xml", "xml"), ("aasx", "aasx")):
        out = tmp_path / f"export.{suffix}"
        assert world.cli("export", "-c", str(world.config), "--format", fmt, "-o", str(out)).returncode == 0
        world.outputs[f"export {fmt}"] = out.read_bytes()
        if fmt == "aasx":
            with zipfile.ZipFile(out) as z:
                for name in z.namelist():
                    world.outputs[f"export aasx: {name}"] = z.read(name)
    world.cli("cert", "show", "-c", str(world.config))
    world.cli("dead-letter", "list", "-c", str(world.config))
    world.cli("usage", "show", "-c", str(world.config))
    for path in world.data_dir.rglob("*"):
        if path.is_file():
            world.outputs[f"data dir: {path.relative_to(world.data_dir)}"] = path.read_bytes()
    # A configuration error in the secrets' neighbourhood.
    broken = tmp_path / "broken.yaml"
    broken.write_text(world.config.read_text().replace("batch: {max_delay_ms: 100}", "batch: {max_delay_ms: soon}"))
    world.cli("check", "-c", str(broken))
    numeric = tmp_path / "numeric.yaml"
    numeric.write_text(
        world.config.read_text().replace('private_key_password: "own-Key-9d1b5e"', "private_key_password: 4815162342")
    )
    world.outputs["numeric secret config error"] = world.cli("check", "-c", str(numeric)).stderr
    world.secrets["a numeric passphrase"] = "4815162342"
    numeric_token = tmp_path / "numeric-token.yaml"
    numeric_token.write_text(world.config.read_text().replace("token: ${CLOUD_TOKEN}", "token: 6023817495"))
    world.outputs["numeric token config error"] = world.cli("check", "-c", str(numeric_token)).stderr
    assert b"token must be text" in world.outputs["numeric token config error"]
    world.secrets["a numeric token"] = "6023817495"
    numeric_key = tmp_path / "numeric-key.yaml"
    numeric_key.write_text(
        world.config.read_text().replace(f"crtfc_key: ${{file:{tmp_path / 'crtfc-key'}}}", "crtfc_key: 7301928465")
    )
    world.outputs["numeric crtfcKey config error"] = world.cli("check", "-c", str(numeric_key)).stderr
    assert b"crtfc_key must be text" in world.outputs["numeric crtfcKey config error"]
    world.secrets["a numeric crtfcKey"] = "7301928465"

    # What the agent writes is for its own user; what it exports is for sharing.
    assert world.data_dir.stat().st_mode & 0o777 == 0o700
    loose = [p for p in world.data_dir.rglob("*") if p.is_file() and p.stat().st_mode & 0o077]
    assert not loose, f"readable by others: {loose}"
    assert (tmp_path / "export.aasx").stat().st_mode & 0o777 == 0o644

    hits = [
        f"{what} in {where}"
        for where, said in world.outputs.items()
        for what, secret in world.secrets.items()
        if secret.encode() in said
    ]
    assert not hits, "\n".join(hits)
    assert len(world.outputs) > 20, "the search looked at too little to mean anything"
    assert any(b"SpindleSpeed" in said for said in world.outputs.values()), "the outputs hold the data, not noise"
