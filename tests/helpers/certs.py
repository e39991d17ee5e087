"""Throwaway PKI for tests: a CA, a server certificate and a client certificate."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertPair:
    """A PEM certificate and its unencrypted PEM private key, on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Everything a mutual-TLS test needs: the CA certificate and the leaf pairs (``client``
    and any extra clients by common name in ``clients``)."""

    ca_cert: Path
    server: CertPair
    client: CertPair
    clients: dict[str, CertPair] = field(default_factory=dict)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    common_name: str,
    usage: x509.ObjectIdentifier,
    directory: Path,
    stem: str,
    san_hosts: tuple[str, ...] = (),
) -> CertPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if san_hosts:
        names: list[x509.GeneralName] = []
        for host in san_hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    pair = CertPair(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, pair.key)
    return pair


def make_pki(
    directory: Path,
    *,
    client_name: str = "envoy-one",
    server_hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    ca_name: str = "shardclient test CA",
    extra_clients: tuple[str, ...] = (),
) -> Pki:
    """Create a fresh CA with a server (for ``server_hosts``) and client certificates (one
    for ``client_name``, one per ``extra_clients`` name)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = _name(ca_name)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
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
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "root.crt"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server = _leaf(
        ca_key,
        ca_subject,
        server_hosts[0],
        ExtendedKeyUsageOID.SERVER_AUTH,
        directory,
        "server",
        server_hosts,
    )
    client = _leaf(
        ca_key, ca_subject, client_name, ExtendedKeyUsageOID.CLIENT_AUTH, directory, "client"
    )
    clients = {client_name: client}
    for name in extra_clients:
        clients[name] = _leaf(
            ca_key, ca_subject, name, ExtendedKeyUsageOID.CLIENT_AUTH, directory, f"client-{name}"
        )
    return Pki(ca_cert=ca_path, server=server, client=client, clients=clients)
