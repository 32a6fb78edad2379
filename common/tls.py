"""Service identity: mutual TLS between the shop's processes.

Every process holds a certificate issued by the shop's CA.  Its identity is the
certificate's URI SAN ``spiffe://shop/<name>`` (``order_svc``, ``edge``, …; the
SPIFFE form, so a mesh or cert-manager can issue the same certificates); the DNS
and IP SANs are the names other processes reach it by, checked by their TLS
client as usual.  One certificate serves both ends: a process presents it as a
server and as a client.

``python -m common.tls [--ca-key-dir KEYDIR] DIR NAME…`` writes a CA and one
certificate per name into DIR (kept when present; the CA's private key into KEYDIR
when given, so the processes that mount DIR cannot issue certificates): the compose
stack's one-shot job runs it, devstack calls :func:`ensure_identities`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRUST_DOMAIN = "shop"
IDENTITY_PREFIX = f"spiffe://{TRUST_DOMAIN}/"

# Every process that calls a shop gRPC service (the processes' names), plus devstack
# (the local cluster's readiness checks: health only) — the names a servicer may allow.
CALLERS = ("user_svc", "product_svc", "order_svc", "comment_svc", "notify_svc", "edge", "devstack")

CA_CERT, CA_KEY = "ca.pem", "ca.key"
# Local certificates; a deployment rotates its own (cert-manager renews them before they expire).
VALIDITY = datetime.timedelta(days=825)


def identity_uri(name: str) -> str:
    return IDENTITY_PREFIX + name


def identity_from_sans(sans: Iterable[bytes | str]) -> str | None:
    """The shop identity among a peer certificate's SANs (gRPC's auth context), or None."""
    for raw in sans:
        value = raw.decode() if isinstance(raw, bytes) else raw
        if value.startswith(IDENTITY_PREFIX):
            return value.removeprefix(IDENTITY_PREFIX)
    return None


def peer_identity(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The caller's name from a gRPC server context's ``auth_context()``."""
    return identity_from_sans(auth_context.get("x509_subject_alternative_name", ()))


# --- loading ------------------------------------------------------------------------------------


class TlsMaterialMissingError(RuntimeError):
    pass


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of one process: the CA that signs every shop certificate, its own
    certificate (chain) and private key."""

    ca: str
    cert: str
    key: str

    @classmethod
    def from_settings(cls, settings: Any) -> TlsFiles:
        """From a settings object with ``tls_ca_file`` / ``tls_cert_file`` / ``tls_key_file``."""
        names = {"ca": "tls_ca_file", "cert": "tls_cert_file", "key": "tls_key_file"}
        values = {part: getattr(settings, field, None) for part, field in names.items()}
        missing = [f"SHOP_{names[part].upper()}" for part, value in values.items() if not value]
        if missing:
            raise TlsMaterialMissingError(
                f"{', '.join(missing)} not set: every gRPC connection is mutual TLS "
                "(devstack, compose and deploy/k8s provide the files; see README 'Service identity')"
            )
        return cls(**{part: str(value) for part, value in values.items()})

    def read(self) -> tuple[bytes, bytes, bytes]:
        parts = []
        for what, path in (("CA", self.ca), ("certificate", self.cert), ("private key", self.key)):
            try:
                parts.append(Path(path).read_bytes())
            except OSError as exc:
                raise TlsMaterialMissingError(f"cannot read the TLS {what} file {path}: {exc.strerror}") from exc
        ca, cert, key = parts
        return ca, cert, key


def server_credentials(files: TlsFiles) -> Any:
    """Server credentials that require a client certificate signed by the shop's CA."""
    import grpc

    ca, cert, key = files.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(files: TlsFiles) -> Any:
    """Channel credentials that trust only the shop's CA and present this process's certificate."""
    import grpc

    ca, cert, key = files.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


# --- making them (local clusters, tests, the compose job) ------------------------------------------


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


_KEY_USAGES = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
    "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
)  # fmt: skip


def make_ca(common_name: str = "shop local CA") -> tuple[bytes, bytes]:
    """A new CA: (private key PEM, certificate PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                **{
                    **dict.fromkeys(_KEY_USAGES, False),
                    "digital_signature": True,
                    "key_cert_sign": True,
                    "crl_sign": True,
                }
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem_key(key), cert.public_bytes(serialization.Encoding.PEM)


def default_hosts(name: str) -> list[str]:
    """The names a process is reached by: its compose name, its hyphenated (Kubernetes
    Service / compose alias) name, and loopback."""
    return list(dict.fromkeys([name.replace("_", "-"), "localhost", "127.0.0.1", "::1"]))


def make_identity(ca_key_pem: bytes, ca_cert_pem: bytes, name: str, hosts: Iterable[str]) -> tuple[bytes, bytes]:
    """A certificate for process ``name`` signed by the CA: (private key PEM, certificate PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity_uri(name))]
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return _pem_key(key), cert.public_bytes(serialization.Encoding.PEM)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def files_in(directory: Path, name: str) -> TlsFiles:
    """Where :func:`ensure_identities` keeps ``name``'s material."""
    return TlsFiles(str(directory / CA_CERT), str(directory / f"{name}.pem"), str(directory / f"{name}.key"))


def ensure_identities(directory: Path, names: Iterable[str], *, ca_key_dir: Path | None = None) -> list[str]:
    """A CA and one certificate per name in ``directory`` (the CA's key in ``ca_key_dir``,
    by default beside them); what exists is kept.  Returns the names it made a certificate for."""
    directory.mkdir(parents=True, exist_ok=True)
    (ca_key_dir or directory).mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = (ca_key_dir or directory) / CA_KEY, directory / CA_CERT
    if not (ca_key.exists() and ca_cert.exists()):
        key_pem, cert_pem = make_ca()
        _write_private(ca_key, key_pem)
        ca_cert.write_bytes(cert_pem)
        for old in directory.glob("*.pem"):  # issued by a CA that is gone
            if old.name != CA_CERT:
                old.unlink()
    made = []
    for name in names:
        files = files_in(directory, name)
        if Path(files.cert).exists() and Path(files.key).exists():
            continue
        key_pem, cert_pem = make_identity(ca_key.read_bytes(), ca_cert.read_bytes(), name, default_hosts(name))
        _write_private(Path(files.key), key_pem)
        Path(files.cert).write_bytes(cert_pem)
        made.append(name)
    return made


def main(argv: list[str]) -> int:
    ca_key_dir = None
    if argv[:1] == ["--ca-key-dir"] and len(argv) > 1:
        ca_key_dir, argv = Path(argv[1]), argv[2:]
    if len(argv) < 2:
        print("usage: python -m common.tls [--ca-key-dir KEYDIR] DIR NAME...", file=sys.stderr)
        return 2
    directory, names = Path(argv[0]), argv[1:]
    made = ensure_identities(directory, names, ca_key_dir=ca_key_dir)
    print(f"tls: CA and certificates for {', '.join(names)} in {directory} (new: {', '.join(made) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
