"""OPC UA security against the factory simulator run secured: every policy and mode, a real trust list,
no silent downgrade, and passwords never in the clear."""

from __future__ import annotations

import asyncio
import itertools
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.opcua.pki import Pki, load_der, thumbprint
from adapters.opcua.source import OpcUaSource
from adapters.opcua.spec import Endpoint, NodeItem
from simulators.agentproc import AgentProcess
from simulators.factory import FactoryThread
from simulators.factory.agentconfig import factory_config
from simulators.factory.server import server_certificate
from simulators.ports import free_port
from tests.helpers import ROOT, Collected, wait_until

POLICIES = ["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
SERVER_POLICY = {"Basic256Sha256": "Basic256Sha256", "Aes128_Sha256_RsaOaep": "Aes128Sha256RsaOaep",
                 "Aes256_Sha256_RsaPss": "Aes256Sha256RsaPss"}  # fmt: skip
APP_URI = "urn:edge-agent:test:host"
NODE = "ns=2;s=CNC01.SpindleSpeed"


def quick() -> Iterator[float]:
    return itertools.repeat(0.2)


@pytest.fixture(scope="module")
def server_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One server certificate for the module: made once, like a PLC's."""
    directory = tmp_path_factory.mktemp("server-pki")
    asyncio.run(server_certificate(directory, "127.0.0.1"))
    return directory


def pki_for(tmp_path: Path) -> Pki:
    pki = Pki(tmp_path / "pki")
    pki.ensure_own(APP_URI)
    return pki


async def collect(
    url: str, pki: Pki, enough: int = 3, timeout: float = 30, **endpoint: object
) -> tuple[Collected, OpcUaSource]:
    got = Collected()
    own = pki.own_certificate()
    ep = Endpoint(id="plc", url=url, timeout_s=5, application_uri=APP_URI, **endpoint)  # type: ignore[arg-type]
    source = OpcUaSource(
        ep, [NodeItem(handle=1, node=NODE, opcua_type="Double")], emit=got.emit, emit_events=got.emit_events,
        interrupted=got.interrupted, problem=got.problem, state=got.state, delays=quick, pki=pki, own_certificate=own,
    )  # fmt: skip
    task = asyncio.create_task(source.run())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while len(got.samples) < enough and loop.time() < deadline:
            assert not task.done(), repr(task.exception())
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return got, source


def refusals(got: Collected) -> list[str]:
    return [s.detail for s in got.states if s.state == "disconnected"]


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_and_mode_connects_and_collects(tmp_path: Path, server_certs: Path, policy: str, mode: str) -> None:
    offered = (f"{SERVER_POLICY[policy]}_{mode}",)
    with FactoryThread(port=free_port(), period=0.1, machines=1, security=offered, certificate_dir=server_certs) as fac:
        pki = pki_for(tmp_path)
        pki.trust(str(server_certs / "cert.der"))
        got, _ = asyncio.run(collect(fac.endpoint, pki, security_policy=policy, security_mode=mode))
    assert len(got.samples) >= 3, refusals(got)


def test_an_untrusted_server_is_refused_kept_in_rejected_and_trusted_by_thumbprint(
    tmp_path: Path, server_certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    offered = ("Basic256Sha256_SignAndEncrypt",)
    with FactoryThread(port=free_port(), period=0.1, machines=1, security=offered, certificate_dir=server_certs) as fac:
        pki = pki_for(tmp_path)
        secure = {"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt"}
        got, _ = asyncio.run(collect(fac.endpoint, pki, timeout=3, **secure))
        assert got.samples == []
        server = thumbprint(load_der(server_certs / "cert.der"))
        assert (pki.rejected / f"{server}.der").exists()
        assert f"its certificate is not trusted (thumbprint {server})" in refusals(got)[0]
        assert f"trust it: edge-agent trust -c <config> {pki.rejected / server}.der" in caplog.text, "says how"
        pki.trust(server[:12].lower())
        assert not (pki.rejected / f"{server}.der").exists()
        got, _ = asyncio.run(collect(fac.endpoint, pki, **secure))
    assert len(got.samples) >= 3, refusals(got)


def test_no_downgrade_when_the_configured_policy_is_missing_even_with_an_unsecured_endpoint(
    tmp_path: Path, server_certs: Path
) -> None:
    offered = ("NoSecurity", "Basic256Sha256_Sign")
    with FactoryThread(port=free_port(), period=0.1, machines=1, security=offered, certificate_dir=server_certs) as fac:
        pki = pki_for(tmp_path)
        pki.trust(str(server_certs / "cert.der"))
        got, _ = asyncio.run(
            collect(fac.endpoint, pki, timeout=3, security_policy="Basic256Sha256", security_mode="SignAndEncrypt")
        )
    assert got.samples == [], "connected with less than SignAndEncrypt"
    assert "does not offer Basic256Sha256/SignAndEncrypt" in refusals(got)[0]
    assert "it offers Basic256Sha256/Sign, None/None" in refusals(got)[0]


def test_a_pinned_server_certificate_is_the_only_one_accepted(tmp_path: Path, server_certs: Path) -> None:
    other = Pki(tmp_path / "other")
    impostor = other.ensure_own("urn:someone:else").cert
    offered = ("Basic256Sha256_SignAndEncrypt",)
    with FactoryThread(port=free_port(), period=0.1, machines=1, security=offered, certificate_dir=server_certs) as fac:
        pki = pki_for(tmp_path)
        secure = {"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt"}
        wrong, _ = asyncio.run(collect(fac.endpoint, pki, timeout=3, server_certificate=str(impostor), **secure))
        right, _ = asyncio.run(collect(fac.endpoint, pki, server_certificate=str(server_certs / "cert.der"), **secure))
    assert wrong.samples == [] and "is not the pinned one" in refusals(wrong)[0]
    assert len(right.samples) >= 3, refusals(right)


def test_a_password_never_travels_in_the_clear_unless_allowed_and_then_with_a_warning(
    tmp_path: Path, server_certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users = {"operator": "s3cret-Pa55"}
    login = {"username": "operator", "password": "s3cret-Pa55"}
    with FactoryThread(port=free_port(), period=0.1, machines=1, users=users) as fac:
        pki = pki_for(tmp_path)
        refused, _ = asyncio.run(collect(fac.endpoint, pki, timeout=3, **login))
        caplog.set_level(logging.WARNING)
        allowed, _ = asyncio.run(collect(fac.endpoint, pki, allow_plaintext_password=True, **login))
        wrong, _ = asyncio.run(collect(fac.endpoint, pki, timeout=3, allow_plaintext_password=True,
                                       username="operator", password="wrong"))  # fmt: skip
    assert refused.samples == [] and "would travel unencrypted" in refusals(refused)[0]
    assert len(allowed.samples) >= 3 and "sending the password for 'operator' unencrypted" in caplog.text
    assert wrong.samples == [] and "BadUserAccessDenied" in refusals(wrong)[0]
    assert "s3cret-Pa55" not in caplog.text


def test_a_password_goes_encrypted_over_a_secured_endpoint(tmp_path: Path, server_certs: Path) -> None:
    offered = ("Basic256Sha256_SignAndEncrypt",)
    users = {"operator": "s3cret-Pa55"}
    with FactoryThread(
        port=free_port(), period=0.1, machines=1, security=offered, certificate_dir=server_certs, users=users
    ) as fac:
        pki = pki_for(tmp_path)
        pki.trust(str(server_certs / "cert.der"))
        got, _ = asyncio.run(
            collect(fac.endpoint, pki, security_policy="Basic256Sha256", security_mode="SignAndEncrypt",
                    username="operator", password="s3cret-Pa55")
        )  # fmt: skip
    assert len(got.samples) >= 3, refusals(got)


def test_an_x509_user_certificate_logs_in_and_only_the_known_one(tmp_path: Path, server_certs: Path) -> None:
    from tests.tlsfiles import Ca

    ca = Ca(tmp_path / "users", "users")
    known, unknown = ca.issue("operator", host=None, client=True), ca.issue("stranger", host=None, client=True)
    offered = ("Basic256Sha256_SignAndEncrypt",)
    secure = {"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt"}
    with FactoryThread(
        port=free_port(), period=0.1, machines=1, security=offered, certificate_dir=server_certs,
        user_certificates=[load_der(known.cert)],
    ) as fac:  # fmt: skip
        pki = pki_for(tmp_path)
        pki.trust(str(server_certs / "cert.der"))
        anonymous, _ = asyncio.run(collect(fac.endpoint, pki, timeout=3, **secure))
        wrong, _ = asyncio.run(collect(fac.endpoint, pki, timeout=3, user_certificate=str(unknown.cert),
                                       user_private_key=str(unknown.key), **secure))  # fmt: skip
        right, _ = asyncio.run(collect(fac.endpoint, pki, user_certificate=str(known.cert),
                                       user_private_key=str(known.key), **secure))  # fmt: skip
    assert anonymous.samples == [] and "BadUserAccessDenied" in refusals(anonymous)[0], "the server checks users"
    assert wrong.samples == [] and "BadUserAccessDenied" in refusals(wrong)[0]
    assert len(right.samples) >= 3, refusals(right)


def test_the_agents_own_certificate_is_made_once_with_its_application_uri_and_a_private_key(tmp_path: Path) -> None:
    from cryptography import x509

    pki = Pki(tmp_path / "pki")
    first = pki.ensure_own(APP_URI)
    again = pki.ensure_own(APP_URI)
    assert first == again, "made once, then kept"
    cert = x509.load_der_x509_certificate(first.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert APP_URI in san.get_values_for_type(x509.UniformResourceIdentifier)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and usage.data_encipherment
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 365
    assert first.key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "pki").stat().st_mode & 0o777 == 0o700


def test_cert_show_and_trust_on_the_command_line(tmp_path: Path, server_certs: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"site: {{id: s}}\nagent: {{data_dir: {tmp_path / 'data'}}}\n"
        "sources: [{id: p, endpoint: 'opc.tcp://127.0.0.1:4840/'}]\n"
        "equipment:\n  - id: m\n    source: p\n"
        "    nameplate: {manufacturer_name: M, product_designation: P, uri_of_product: 'https://x', order_code: O}\n"
        "    points: [{node: 'ns=2;s=X', path: Xx, type: Double}]\n"
        "sinks: [{type: file, path: out.jsonl}]\n"
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT, capture_output=True, text=True)

    shown = cli("cert", "show", "-c", str(config))
    assert shown.returncode == 0, shown.stderr
    own = Pki(tmp_path / "data" / "pki").own_certificate()
    assert own is not None and own.thumbprint in shown.stdout and str(own.cert) in shown.stdout
    assert "urn:edge-agent:s:" in shown.stdout
    trusted = cli("trust", "-c", str(config), str(server_certs / "cert.der"))
    assert trusted.returncode == 0 and "trusted:" in trusted.stdout, trusted.stderr
    unknown = cli("trust", "-c", str(config), "ABCDEF")
    assert unknown.returncode == 2 and "matches 0 rejected certificates" in unknown.stderr


def test_the_command_the_log_gives_trusts_the_server_and_the_running_agent_connects(
    tmp_path: Path, server_certs: Path
) -> None:
    """The operator's path: start the agent against a new secured PLC, read the log, run the command
    it names, and see values arrive, without restarting anything."""
    out = tmp_path / "records.jsonl"
    offered = ("Basic256Sha256_SignAndEncrypt",)
    with FactoryThread(port=free_port(), period=0.1, machines=1, security=offered, certificate_dir=server_certs) as fac:
        config = tmp_path / "agent.yaml"
        config.write_text(
            factory_config(
                opc_port=fac.port, data_dir=tmp_path / "data", machines=1, events=False,
                sinks=f"- type: file\n  path: {out}\n  batch: {{max_delay_ms: 50}}",
                source="    security: {policy: Basic256Sha256, mode: SignAndEncrypt}",
                only=lambda s: s.name == "SpindleSpeed",
            )
        )  # fmt: skip
        with AgentProcess(config, tmp_path / "agent.log") as agent:
            wait_until("the refusal", lambda: "trust it: edge-agent trust" in agent.log(), 60)
            line = next(r["msg"] for r in agent.log_records() if "trust it: " in r["msg"])
            command = line.split("trust it: ", 1)[1].split()
            assert command[:3] == ["edge-agent", "trust", "-c"] and command[3] == str(config.resolve())
            done = subprocess.run([sys.executable, "-m", "agent.cli", *command[1:]], cwd=ROOT, capture_output=True)
            assert done.returncode == 0, done.stderr
            wait_until("values", lambda: out.exists() and b'"lane":"data"' in out.read_bytes(), 60)
            assert agent.stop() == 0


def test_a_plant_ca_vouches_for_its_servers_unless_expired_or_revoked_by_its_signed_crl(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    from tests.tlsfiles import Ca

    plant, stranger = Ca(tmp_path / "plant", "plant"), Ca(tmp_path / "stranger", "stranger")
    good, other = plant.issue("plc-good"), plant.issue("plc-other")
    expired, outsider = plant.issue("plc-old", expired=True), stranger.issue("plc-foreign")
    pki = pki_for(tmp_path)
    pki.create_dirs()
    shutil.copy(plant.cert, pki.issuers / "plant-ca.crt")

    def verdict(issued: object) -> str | None:
        return pki.verdict(load_der(issued.cert))  # type: ignore[attr-defined]

    assert verdict(good) is None and verdict(other) is None, "signed by a CA in issuers/"
    assert verdict(expired) is not None and "expired on" in verdict(expired)  # type: ignore[operator]
    assert verdict(outsider) == "its certificate is not trusted"
    impostor = Ca(tmp_path / "impostor", "plant")  # the plant CA's name, but not its key
    shutil.copy(impostor.revoke(good), pki.crl / "forged.crl")
    (pki.crl / "junk.crl").write_bytes(b"not a CRL")
    with caplog.at_level(logging.WARNING):
        assert verdict(good) is None, "a CRL the plant CA did not sign revokes nothing"
        shutil.copy(plant.revoke(good), pki.crl / "revoked.crl")
        assert verdict(good) == "its certificate was revoked by its issuer (CRL revoked.crl)"
        assert verdict(other) is None, "only the revoked serial"
    assert "forged.crl: no CA in trusted/ or issuers/ signed it" in caplog.text
    assert "junk.crl: not a certificate revocation list" in caplog.text, "a broken CRL is named"
