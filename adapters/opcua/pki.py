"""The agent's OPC UA PKI folder: its own application instance certificate, and which servers it trusts.

    {data_dir}/pki/own/cert.der, key.pem   the agent's certificate (created at first start) and key (0600)
    {data_dir}/pki/trusted/                server certificates (or CAs) the agent trusts: .der or .pem
    {data_dir}/pki/issuers/                CA certificates that may sign a trusted server certificate
    {data_dir}/pki/rejected/               certificates of servers it refused, named by thumbprint
    {data_dir}/pki/crl/                    certificate revocation lists (.crl, .pem or .der) of those CAs

A server certificate is trusted when it is in `trusted/`, or signed by a certificate in `trusted/`
or `issuers/` (one level: the usual plant CA), is within its validity period, and is not revoked
by a CRL of its issuer in `crl/`. Anything else is refused; an untrusted one is copied to
`rejected/`, and `edge-agent trust` moves it to `trusted/`. Thumbprints are SHA-1 of the DER, in hex, as OPC UA
tools show them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

log = logging.getLogger(__name__)

CERT_DAYS = 5 * 365


def thumbprint(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def load_der(path: Path) -> bytes:
    """A certificate file, PEM or DER, as DER."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    return data


@dataclass(frozen=True, slots=True)
class OwnCertificate:
    cert: Path
    key: Path
    thumbprint: str
    application_uri: str
    not_after: str


NOT_TRUSTED = "its certificate is not trusted"


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.own = root / "own"
        self.trusted = root / "trusted"
        self.issuers = root / "issuers"
        self.rejected = root / "rejected"
        self.crl = root / "crl"

    def create_dirs(self) -> None:
        for d in (self.root, self.own, self.trusted, self.issuers, self.rejected, self.crl):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)

    # -- the agent's own certificate ---------------------------------------------------------------

    def ensure_own(self, application_uri: str, name: str = "edge-agent") -> OwnCertificate:
        """The agent's certificate, created if absent (or if it was made for another application URI)."""
        self.create_dirs()
        cert_path, key_path = self.own / "cert.der", self.own / "key.pem"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_der_x509_certificate(cert_path.read_bytes())
            if application_uri in _uris(cert):
                return self._describe(cert_path, key_path, cert, application_uri)
        key = cert_gen.generate_private_key()
        host = socket.gethostname()
        alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri), x509.DNSName(host)]
        cert = cert_gen.generate_self_signed_app_certificate(
            key,
            name,
            {"organizationName": "edge-agent"},
            alt,
            extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
            days=CERT_DAYS,
        )
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert_gen.dump_private_key_as_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
        return self._describe(cert_path, key_path, cert, application_uri)

    def own_certificate(self) -> OwnCertificate | None:
        cert_path, key_path = self.own / "cert.der", self.own / "key.pem"
        if not cert_path.exists():
            return None
        cert = x509.load_der_x509_certificate(cert_path.read_bytes())
        uris = _uris(cert)
        return self._describe(cert_path, key_path, cert, uris[0] if uris else "")

    @staticmethod
    def _describe(cert_path: Path, key_path: Path, cert: x509.Certificate, uri: str) -> OwnCertificate:
        der = cert.public_bytes(serialization.Encoding.DER)
        return OwnCertificate(cert_path, key_path, thumbprint(der), uri, cert.not_valid_after_utc.isoformat())

    # -- trust ---------------------------------------------------------------------------------------

    def verdict(self, der: bytes) -> str | None:
        """None if the server certificate may be used; else why not (for the refusal's message)."""
        cert = x509.load_der_x509_certificate(der)
        now = datetime.now(UTC)
        if cert.not_valid_after_utc < now:
            return f"its certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}"
        if cert.not_valid_before_utc > now:
            return f"its certificate is valid only from {cert.not_valid_before_utc:%Y-%m-%d}"
        if not self.is_trusted(der):
            return NOT_TRUSTED
        revoked = self._revoked_by(cert)
        if revoked is not None:
            return f"its certificate was revoked by its issuer (CRL {revoked.name})"
        return None

    def _revoked_by(self, cert: x509.Certificate) -> Path | None:
        """The CRL in `crl/` that revokes `cert`, if any. A CRL is believed only when a CA in `trusted/`
        or `issuers/` signed it; one that cannot be read or checked is named in a warning, not skipped
        in silence."""
        if not self.crl.is_dir():
            return None
        cas = [x509.load_der_x509_certificate(der) for _, der in self._certificates(self.trusted, self.issuers)]
        for path in sorted(self.crl.iterdir()):
            if not path.is_file():
                continue
            data = path.read_bytes()
            try:
                pem = data.lstrip().startswith(b"-----BEGIN")
                crl = x509.load_pem_x509_crl(data) if pem else x509.load_der_x509_crl(data)
            except ValueError as e:
                log.warning("ignoring %s: not a certificate revocation list (%s)", path, e)
                continue
            if crl.issuer != cert.issuer:
                continue
            signers = [ca for ca in cas if ca.subject == crl.issuer and _crl_signed_by(crl, ca)]
            if not signers:
                log.warning("ignoring %s: no CA in trusted/ or issuers/ signed it", path)
                continue
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                return path
        return None

    def is_trusted(self, der: bytes) -> bool:
        print_ = thumbprint(der)
        cert = x509.load_der_x509_certificate(der)
        for path, known in self._certificates(self.trusted, self.issuers):
            if thumbprint(known) == print_:
                return path.parent == self.trusted
            if _signed_by(cert, x509.load_der_x509_certificate(known)):
                return True
        return False

    def reject(self, der: bytes) -> Path:
        """Keep a refused server certificate in `rejected/`, for `edge-agent trust`."""
        self.create_dirs()
        path = self.rejected / f"{thumbprint(der)}.der"
        path.write_bytes(der)
        return path

    def trust(self, what: str) -> Path:
        """Trust a certificate file, or a rejected certificate by (a prefix of) its thumbprint."""
        self.create_dirs()
        source = Path(what)
        if not source.is_file():
            wanted = what.upper().replace(":", "")
            found = [p for p in self.rejected.glob("*.der") if p.stem.startswith(wanted)] if wanted else []
            if len(found) != 1:
                known = ", ".join(p.stem for p in self.rejected.glob("*.der")) or "none"
                raise ValueError(
                    f"{what!r} is no certificate file and matches {len(found)} rejected certificates "
                    f"(rejected: {known})"
                )
            source = found[0]
        der = load_der(source)
        x509.load_der_x509_certificate(der)  # a certificate, not any file
        target = self.trusted / f"{thumbprint(der)}.der"
        target.write_bytes(der)
        if source.parent == self.rejected:
            source.unlink()
        return target

    def _certificates(self, *dirs: Path) -> Iterator[tuple[Path, bytes]]:
        for d in dirs:
            if not d.is_dir():
                continue
            for path in sorted(d.iterdir()):
                if path.suffix.lower() in (".der", ".pem", ".crt", ".cer"):
                    try:
                        yield path, load_der(path)
                    except ValueError:
                        continue


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    return isinstance(key, rsa.RSAPublicKey) and crl.is_signature_valid(key)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey) or cert.signature_hash_algorithm is None:
        return False
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
    except InvalidSignature:
        return False
    return True
