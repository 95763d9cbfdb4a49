"""TLS towards a far end (an MQTT broker, an HTTP receiver): the settings, the context built once up
front, and what a TLS failure means for the person who configured it. One place for both sinks."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field


class TlsConfigError(ValueError):
    """TLS files that cannot be used (missing, not PEM, an encrypted key without its passphrase)."""


@dataclass(frozen=True, kw_only=True)
class TlsSettings:
    """`insecure` skips only the host-name check; the far end's certificate chain is still verified
    against `ca_file` (or the system CAs). `cert_file`/`key_file`: our client certificate, for far
    ends that require one (mutual TLS)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = field(default=None, repr=False)
    insecure: bool = False


def tls_context(
    tls: TlsSettings | None, where: str, *, password_hint: str, error: type[ValueError] = TlsConfigError
) -> ssl.SSLContext:
    """Built once, up front, so a missing or unreadable file stops start-up with a clear message
    (raised as `error`, naming `where`).

    The key's passphrase comes from `key_password` only: OpenSSL would otherwise ask for it on the
    terminal, where nobody answers a service. `password_hint` is the example secret in the message.
    """
    tls = tls or TlsSettings()
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file is not None:
            if tls.key_password is None and _encrypted(tls.key_file or tls.cert_file):
                raise error(
                    f"{where}: the private key {tls.key_file or tls.cert_file} is encrypted; give its passphrase "
                    f"as tls.key_password (e.g. key_password: ${{{password_hint}}})"
                )
            context.load_cert_chain(tls.cert_file, tls.key_file, password=tls.key_password or "")
    except OSError as exc:  # ssl.SSLError included: a file that is not PEM, a wrong passphrase
        files = ", ".join(
            f"{key}={value!r}"
            for key, value in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file))
            if value is not None
        )
        raise error(f"{where}: cannot load TLS files ({files}): {exc}") from exc
    context.check_hostname = not tls.insecure
    return context


def _encrypted(key_file: str) -> bool:
    try:
        with open(key_file, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False  # load_cert_chain says what is wrong with the file
    return b"ENCRYPTED" in head


def explain_tls(
    exc: BaseException, tls: TlsSettings | None, host: str, *, peer: str, by_name: str, scheme: str = "TLS"
) -> str | None:
    """What a TLS failure means; None if it is no TLS failure. `peer` names the far end ("broker",
    "receiver"), `by_name` says how to reach it by the name in its certificate, `scheme` what it
    should speak on that port."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            return f"the {peer}'s certificate has expired ({exc.verify_message})"
        if code == 62 or "hostname" in str(exc).lower() or "IP address mismatch" in str(exc):
            return (
                f"the {peer}'s certificate is not for {host} ({exc.verify_message}); {by_name}, "
                "or set tls.insecure to skip only this check"
            )
        ca = tls.ca_file if tls and tls.ca_file else "the system's CAs"
        return f"the {peer}'s certificate is not signed by a CA we trust ({ca}): {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if "CERTIFICATE_REQUIRED" in reason or ("HANDSHAKE_FAILURE" in reason and not (tls and tls.cert_file)):
            return f"the {peer} requires a client certificate (mutual TLS): set tls.cert_file and tls.key_file"
        if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or "CERTIFICATE_UNKNOWN" in reason:
            return f"the {peer} refused our client certificate ({exc.reason}): is it signed by a CA the {peer} trusts?"
        if "EXPIRED" in reason:
            return f"the {peer} says our client certificate has expired ({exc.reason})"
        if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER_FAILURE" in reason:
            return f"TLS failed ({exc.reason}): does the {peer} speak {scheme} on this port?"
        return f"TLS failed: {exc.reason or exc}"
    return None
