"""Connect as safely as the config says, or not at all.

Before each connect the server's endpoints are read (GetEndpoints, which OPC UA allows over an
unsecured channel) and the one with exactly the configured security policy and mode is chosen:
- none with them: no connection; the message names what the server offers. Never a downgrade, even
  when the server also offers an unsecured endpoint.
- the server's certificate must be the pinned one (`server_certificate`), or trusted by the PKI
  folder (pki.py); otherwise it is copied to `rejected/` and the message says how to trust it.
- a password is sent only encrypted: by the channel (SignAndEncrypt), or by its user token policy
  (the endpoint's policy when the token names none) not being None, unless `allow_plaintext_password`
  says otherwise (then with a warning at every connect). An X.509 user certificate is sent as the
  user identity when configured.

`new_client` and `connect` are how every connection of the agent is made (the collector's in
source.py, a control write's in write.py): the same session settings, the same checks, the same
timeouts.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies
from asyncua.crypto.uacrypto import CertProperties

from adapters.opcua.pki import NOT_TRUSTED, OwnCertificate, Pki, load_der, thumbprint
from adapters.opcua.spec import Endpoint

log = logging.getLogger(__name__)

NONE_URI = security_policies.SecurityPolicyNone.URI
POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {
    "None": ua.MessageSecurityMode.None_,
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}


class SecurityRefused(ConnectionError):
    """The connection would be less safe than configured (or the server is not trusted): not made."""


def _policy_name(uri: str) -> str:
    return uri.rsplit("#", 1)[-1] if uri else "None"


def _mode_name(mode: ua.MessageSecurityMode) -> str:
    return "None" if mode == ua.MessageSecurityMode.None_ else mode.name


def new_client(ep: Endpoint) -> Client:
    """A client for `ep`, not yet connected: the agent's name, session timeout and application URI."""
    client = Client(ep.url, timeout=ep.timeout_s, watchdog_intervall=max(1.0, ep.timeout_s / 4))
    client.name = client.description = "edge-agent"
    # A PLC allows few sessions, and one whose client died unclosed holds its slot this long.
    client.session_timeout = int(ep.session_timeout_s * 1000)
    client.application_uri = ep.application_uri
    return client


async def connect(client: Client, ep: Endpoint, pki: Pki | None, own: OwnCertificate | None) -> str:
    """`prepare` then connect, each within the endpoint's timeout; returns the security chosen.

    Raises SecurityRefused, or what asyncua raises when the server cannot be reached.
    """
    async with asyncio.timeout(ep.timeout_s * 2):
        chosen = await prepare(client, ep, pki, own)
    await asyncio.wait_for(client.connect(), ep.timeout_s)
    return chosen


def offers(endpoints: list[ua.EndpointDescription]) -> str:
    pairs = sorted({f"{_policy_name(e.SecurityPolicyUri)}/{_mode_name(e.SecurityMode)}" for e in endpoints})
    return ", ".join(pairs) or "nothing"


async def prepare(client: Client, ep: Endpoint, pki: Pki | None, own: OwnCertificate | None) -> str:
    """Apply `ep`'s security and user identity to `client` (before connect); returns what was chosen.

    Raises SecurityRefused when the server cannot be connected to as safely as configured.
    """
    endpoints = [
        e for e in await client.connect_and_get_server_endpoints() if e.EndpointUrl.startswith(ua.OPC_TCP_SCHEME)
    ]
    mode = _MODES[ep.security_mode]
    uri = NONE_URI if ep.security_policy == "None" else POLICIES[ep.security_policy].URI
    chosen = next((e for e in endpoints if e.SecurityMode == mode and e.SecurityPolicyUri == uri), None)
    wanted = f"{ep.security_policy}/{ep.security_mode}"
    if chosen is None:
        raise SecurityRefused(
            f"the server does not offer {wanted} (configured); it offers {offers(endpoints)}. "
            "Not connecting with anything weaker: change the server's endpoints or the source's security"
        )
    if ep.security_policy != "None":
        await _secure_channel(client, ep, pki, own, chosen, mode)
    await _identity(client, ep, chosen)
    return wanted


async def _secure_channel(
    client: Client,
    ep: Endpoint,
    pki: Pki | None,
    own: OwnCertificate | None,
    chosen: ua.EndpointDescription,
    mode: ua.MessageSecurityMode,
) -> None:
    server_der = _first_certificate(chosen.ServerCertificate)
    if not server_der:
        raise SecurityRefused(f"the server's {ep.security_policy} endpoint has no certificate")
    if ep.server_certificate:
        pinned = load_der(Path(ep.server_certificate))
        if pinned != server_der:
            raise SecurityRefused(
                f"the server's certificate (thumbprint {thumbprint(server_der)}) is not the pinned one "
                f"({ep.server_certificate}, thumbprint {thumbprint(pinned)})"
            )
    else:
        why = pki.verdict(server_der) if pki is not None else NOT_TRUSTED
        if why is not None:
            hint = ""
            if why == NOT_TRUSTED and pki is not None:
                hint = f"; if it is the right server, trust it: {ep.trust_command} {pki.reject(server_der)}"
            raise SecurityRefused(f"the server is refused: {why} (thumbprint {thumbprint(server_der)}){hint}")
    cert = ep.certificate or (str(own.cert) if own else None)
    key = ep.private_key or (str(own.key) if own else None)
    if cert is None or key is None:
        raise SecurityRefused("no application instance certificate for the agent (certificate, private_key)")
    await client.set_security(
        POLICIES[ep.security_policy],
        load_der(Path(cert)),
        CertProperties(key, extension=_format(key), password=ep.private_key_password),
        server_certificate=server_der,
        mode=mode,
    )


async def _identity(client: Client, ep: Endpoint, chosen: ua.EndpointDescription) -> None:
    if ep.user_certificate and ep.user_private_key:
        if not any(t.TokenType == ua.UserTokenType.Certificate for t in chosen.UserIdentityTokens):
            raise SecurityRefused("the server's endpoint takes no X.509 user certificate")
        await client.load_client_certificate(ep.user_certificate, _format(ep.user_certificate))
        key = Path(ep.user_private_key)
        await client.load_private_key(key, ep.user_private_key_password, _format(ep.user_private_key))
        return
    if not ep.username:
        return
    token = next((t for t in chosen.UserIdentityTokens if t.TokenType == ua.UserTokenType.UserName), None)
    if token is None:
        raise SecurityRefused("the server's endpoint takes no user name and password")
    # Encrypted either by the channel (SignAndEncrypt) or by the token's own policy (the endpoint's
    # when the token names none): with neither, it would cross the network as plain text.
    token_policy = token.SecurityPolicyUri or chosen.SecurityPolicyUri
    encrypted = chosen.SecurityMode == ua.MessageSecurityMode.SignAndEncrypt or token_policy != NONE_URI
    if not encrypted:
        if not ep.allow_plaintext_password:
            raise SecurityRefused(
                "the password would travel unencrypted (neither the channel nor the user token policy encrypts "
                "it); use a secured endpoint, or set allow_plaintext_password: true if the network is trusted"
            )
        log.warning("%s: sending the password for %r unencrypted (allow_plaintext_password is set)", ep.id, ep.username)
    client.set_user(ep.username)
    if ep.password:
        client.set_password(ep.password)


def _format(path: str) -> str:
    """PEM or DER, by the file's content (asyncua would go by its name, and take a .crt for DER)."""
    with open(path, "rb") as f:
        return "pem" if f.read(64).lstrip().startswith(b"-----BEGIN") else "der"


def _first_certificate(data: bytes | None) -> bytes:
    """The leaf of a DER certificate chain (a server may send its chain concatenated)."""
    if not data:
        return b""
    # A DER SEQUENCE: 0x30, then the length; the leaf ends where its own length says.
    if len(data) > 4 and data[0] == 0x30 and data[1] == 0x82:
        return data[: 4 + int.from_bytes(data[2:4], "big")]
    return data
