"""A throwaway certificate authority for the secured local stack (``services up --secure``).

:func:`issue_certificates` writes, into a directory, a self-signed CA and a server
certificate it signed for ``127.0.0.1`` and ``localhost``, plus a client certificate for
mutual TLS. Keys are unencrypted PEM (PKCS#8), readable by the owner only: they protect a
local test stack, nothing else. Existing files are kept, so a restarted stack keeps trusting
the CA its clients were given.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["LOCAL_NAMES", "Certificates", "issue_certificates"]

VALID_DAYS = 825
"""Lifetime of every certificate issued here (the longest clients commonly accept)."""


@dataclass(frozen=True)
class Certificates:
    """The PEM files :func:`issue_certificates` writes."""

    ca: Path
    """The CA's certificate: what clients trust."""
    server_cert: Path
    server_key: Path
    server_bundle: Path
    """The server's key, then its certificate (Kafka's PEM key store takes one file)."""
    client_cert: Path
    client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
    )


LOCAL_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
"""The names the local servers are reached by: what their certificate names by default."""


def _general_name(name: str) -> x509.GeneralName:
    """An IP address entry for an address, a DNS entry for anything else."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_certificates(
    directory: Path,
    common_name: str = "segstream local",
    server_names: tuple[str, ...] = LOCAL_NAMES,
) -> Certificates:
    """Write (once) a CA and the server and client certificates it signs into ``directory``.

    The server certificate names ``server_names`` (host names and IP addresses; by default
    ``localhost``, ``127.0.0.1`` and ``::1``), so clients verify the host name as usual; a
    certificate for another name is how a test proves that they do. Returns the files' paths.
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    files = Certificates(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        server_bundle=directory / "server-bundle.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
    )
    if all(path.exists() for path in vars(files).values()):
        return files

    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} CA")])
    ca = (
        _builder(f"{common_name} CA", ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        name: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = _key()
        builder = (
            _builder(name, ca.subject, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    server, server_key = leaf(
        server_names[0],
        ExtendedKeyUsageOID.SERVER_AUTH,
        [_general_name(name) for name in server_names],
    )
    client, client_key = leaf(f"{common_name} client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    _write(files.ca, _pem_cert(ca))
    _write(files.server_cert, _pem_cert(server))
    _write(files.server_key, _pem_key(server_key), private=True)
    _write(files.server_bundle, _pem_key(server_key) + _pem_cert(server), private=True)
    _write(files.client_cert, _pem_cert(client))
    _write(files.client_key, _pem_key(client_key), private=True)
    return files
