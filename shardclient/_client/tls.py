"""SSL contexts for the director connection: mutual TLS with ALPN h2, as OpenFL uses it."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Union

from shardclient._errors import TLSConfigurationError

__all__ = ["PathLike", "client_ssl_context", "server_ssl_context"]

PathLike = Union[str, "os.PathLike[str]"]


def _readable_file(role: str, path: PathLike | None) -> Path:
    """Return ``path`` as a Path after checking it names a readable file."""
    if path is None or str(path) == "":
        raise TLSConfigurationError(
            f"tls=True needs {role}: pass root_certificate, private_key and certificate, "
            "or tls=False for a plain-text connection"
        )
    file = Path(path)
    try:
        with file.open("rb") as handle:
            handle.read(1)
    except FileNotFoundError:
        raise TLSConfigurationError(f"{role} file not found: {file}") from None
    except IsADirectoryError:
        raise TLSConfigurationError(f"{role} is a directory, not a file: {file}") from None
    except OSError as exc:
        raise TLSConfigurationError(f"{role} file cannot be read: {file}: {exc.strerror}") from None
    return file


def _load_chain(context: ssl.SSLContext, certificate: Path, private_key: Path) -> None:
    def no_passphrase() -> str:  # called by OpenSSL only for an encrypted key
        raise TLSConfigurationError(
            f"private key {private_key} is encrypted; use an unencrypted key (as OpenFL does), "
            "since an unattended envoy cannot type a passphrase"
        )

    try:
        context.load_cert_chain(certfile=certificate, keyfile=private_key, password=no_passphrase)
    except ssl.SSLError as exc:
        raise TLSConfigurationError(
            f"certificate {certificate} and private key {private_key} do not form a valid "
            f"pair: {exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise TLSConfigurationError(
            f"certificate {certificate} or private key {private_key} cannot be loaded: {exc}"
        ) from None


def _load_ca(context: ssl.SSLContext, root_certificate: Path) -> None:
    try:
        context.load_verify_locations(cafile=root_certificate)
    except ssl.SSLError as exc:
        raise TLSConfigurationError(
            f"root certificate {root_certificate} is not a valid PEM certificate: "
            f"{exc.reason or exc}"
        ) from None


def client_ssl_context(
    *,
    root_certificate: PathLike | None,
    private_key: PathLike | None,
    certificate: PathLike | None,
) -> ssl.SSLContext:
    """Build the envoy's mutual-TLS context: trust ``root_certificate``, present the pair.

    The director's host name is verified against its certificate. Every file is checked
    here, so a bad path fails at construction with TLSConfigurationError naming it.
    """
    root = _readable_file("root certificate", root_certificate)
    key = _readable_file("private key", private_key)
    cert = _readable_file("certificate", certificate)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_ca(context, root)
    _load_chain(context, cert, key)
    context.set_alpn_protocols(["h2"])
    return context


def server_ssl_context(
    *,
    root_certificate: PathLike,
    private_key: PathLike,
    certificate: PathLike,
    require_client_certificate: bool = True,
) -> ssl.SSLContext:
    """Build a director-side context (for LocalDirector): clients must present a certificate
    signed by ``root_certificate`` unless ``require_client_certificate`` is False."""
    root = _readable_file("root certificate", root_certificate)
    key = _readable_file("private key", private_key)
    cert = _readable_file("certificate", certificate)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_ca(context, root)
    _load_chain(context, cert, key)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    return context
