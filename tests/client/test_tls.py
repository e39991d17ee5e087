"""Mutual TLS between the clients and LocalDirector, and clear errors for bad TLS setups."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from shardclient import (
    AsyncShardDirectorClient,
    DirectorUnavailableError,
    RetryPolicy,
    ShardDirectorClient,
    TLSConfigurationError,
    TLSHandshakeError,
)
from shardclient._client.retry import is_retryable
from shardclient._client.tls import server_ssl_context
from shardclient._client.translate import tls_closed_early
from shardclient.testing import LocalDirector
from tests.helpers.certs import Pki, make_pki
from tests.helpers.director import SAMPLE_SHAPE, TARGET_SHAPE, Descriptor
from tests.helpers.hostile import HTTP1_REPLY, HostileServer, garbage


@pytest.fixture
def tls_director(pki: Pki) -> Iterator[LocalDirector]:
    context = server_ssl_context(
        root_certificate=pki.ca_cert, private_key=pki.server.key, certificate=pki.server.cert
    )
    with LocalDirector(sample_shape=SAMPLE_SHAPE, target_shape=TARGET_SHAPE, tls=context) as d:
        yield d


def _client(director: LocalDirector, pki: Pki, host: str = "localhost") -> ShardDirectorClient:
    return ShardDirectorClient(
        director_host=host,
        director_port=director.port,
        shard_name="s1",
        root_certificate=pki.ca_cert,
        private_key=pki.client.key,
        certificate=pki.client.cert,
        retry=None,
    )


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_mutual_tls_round_trip(tls_director: LocalDirector, pki: Pki, host: str) -> None:
    with _client(tls_director, pki, host) as client:
        assert client.report_shard_info(Descriptor(), []) is True
        assert client.send_health_check(envoy_name="s1", is_experiment_running=False) == 60


def test_a_tls_connection_closed_between_calls_is_noticed_before_the_next(
    tls_director: LocalDirector, pki: Pki
) -> None:
    with _client(tls_director, pki) as client:  # retry=None: no second chance
        assert client.report_shard_info(Descriptor(), [])
        tls_director.restart_sync()
        assert client.send_health_check(envoy_name="s1", is_experiment_running=False) > 0


def test_client_trusting_another_ca(tls_director: LocalDirector, pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other", ca_name="some other CA")
    wrong_trust = Pki(ca_cert=other.ca_cert, server=pki.server, client=pki.client)
    with _client(tls_director, wrong_trust) as client:
        with pytest.raises(TLSHandshakeError, match="CERTIFICATE_VERIFY_FAILED") as caught:
            client.report_shard_info(Descriptor(), [])
    assert caught.value.address == f"localhost:{tls_director.port}"
    assert tls_director.shards == {}


def test_server_name_is_verified(tls_director: LocalDirector, pki: Pki, tmp_path: Path) -> None:
    renamed = make_pki(tmp_path / "renamed", server_hosts=("director.example",))
    context = server_ssl_context(
        root_certificate=renamed.ca_cert,
        private_key=renamed.server.key,
        certificate=renamed.server.cert,
    )
    with LocalDirector(sample_shape=SAMPLE_SHAPE, target_shape=TARGET_SHAPE, tls=context) as d:
        with _client(d, renamed) as client:
            with pytest.raises(TLSHandshakeError, match="CERTIFICATE_VERIFY_FAILED"):
                client.report_shard_info(Descriptor(), [])


def test_director_refuses_a_client_certificate_it_does_not_trust(
    tls_director: LocalDirector, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The director closes the connection right after the TLS 1.3 handshake, with no alert,
    as a TLS proxy without a backend would: retried as an outage, every line saying that the
    certificate was most likely refused."""
    stranger = make_pki(tmp_path / "stranger", ca_name="stranger CA")
    with ShardDirectorClient(
        director_host="localhost", director_port=tls_director.port, shard_name="s1",
        root_certificate=pki.ca_cert, private_key=stranger.client.key,
        certificate=stranger.client.cert,
        retry=RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.01),
    ) as client, caplog.at_level(logging.WARNING):  # fmt: skip
        with pytest.raises(DirectorUnavailableError) as caught:
            client.report_shard_info(Descriptor(), [])
    expected = (
        f"the director at localhost:{tls_director.port} closed the TLS connection right after "
        "the handshake, before any HTTP/2: most likely it rejected this envoy's certificate "
        "(is the certificate signed by the CA the director trusts, and valid now?)"
    )
    assert expected in str(caught.value)
    assert caplog.text.count("most likely it rejected this envoy's certificate") == 2
    assert tls_director.shards == {}


def test_a_certificate_alert_is_a_refusal_and_not_retried() -> None:
    error = tls_closed_early("UpdateShardInfo", "d:1", "TLSV1_ALERT_UNKNOWN_CA")
    assert isinstance(error, TLSHandshakeError) and not is_retryable(error)
    assert str(error) == (
        "UpdateShardInfo: TLS with d:1 failed: the director rejected this envoy's certificate "
        "(TLSV1_ALERT_UNKNOWN_CA); is the certificate signed by the CA the director trusts, "
        "and valid now?"
    )
    other = tls_closed_early("UpdateShardInfo", "d:1", "TLSV1_ALERT_INTERNAL_ERROR")
    assert isinstance(other, DirectorUnavailableError) and is_retryable(other)


def test_the_verification_reason_and_what_to_check_are_named(
    tls_director: LocalDirector, pki: Pki, tmp_path: Path
) -> None:
    other = make_pki(tmp_path / "other", ca_name="some other CA")
    with (
        _client(
            tls_director, Pki(ca_cert=other.ca_cert, server=pki.server, client=pki.client)
        ) as client,
        pytest.raises(TLSHandshakeError) as caught,
    ):
        client.report_shard_info(Descriptor(), [])
    # OpenSSL 1.1 writes "self signed", OpenSSL 3 "self-signed"
    assert re.fullmatch(
        f"UpdateShardInfo \\(OpenFL 1.5-1.7\\): TLS with localhost:{tls_director.port} failed: "
        "the director's "
        r"certificate did not verify: self.signed certificate in certificate chain "
        r"\(CERTIFICATE_VERIFY_FAILED\); is root_certificate \(-rc\) the CA that signed the "
        r"director's certificate\?",
        str(caught.value),
    ), str(caught.value)


def test_a_plain_client_is_told_the_director_speaks_tls(
    tls_director: LocalDirector, caplog: pytest.LogCaptureFixture
) -> None:
    """With the default options (retries included): one line saying which side speaks what
    and which flag to change, and no retry loop."""
    with (
        ShardDirectorClient(
            director_host="127.0.0.1", director_port=tls_director.port, shard_name="s1", tls=False
        ) as client,
        caplog.at_level(logging.WARNING, logger="shardclient"),
        pytest.raises(TLSHandshakeError) as caught,
    ):
        client.report_shard_info(Descriptor(), [])
    assert str(caught.value) == (
        f"UpdateShardInfo (OpenFL 1.5-1.7): the director at 127.0.0.1:{tls_director.port} "
        "speaks TLS; this envoy was started with --disable-tls (tls=False): give it its TLS "
        "files (-rc, -pk, -oc) instead"
    )
    assert not is_retryable(caught.value)
    assert not [r for r in caplog.records if "attempt 1 of" in r.getMessage()]


def test_a_tls_client_is_told_the_director_speaks_plain_text(
    director: LocalDirector, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        ShardDirectorClient(
            director_host="localhost",
            director_port=director.port,
            shard_name="s1",
            root_certificate=pki.ca_cert,
            private_key=pki.client.key,
            certificate=pki.client.cert,
        ) as client,
        caplog.at_level(logging.WARNING, logger="shardclient"),
        pytest.raises(TLSHandshakeError) as caught,
    ):
        client.report_shard_info(Descriptor(), [])
    assert str(caught.value) == (
        f"UpdateShardInfo (OpenFL 1.5-1.7): the director at localhost:{director.port} speaks "
        "plain text (it was started with --disable-tls); start the envoy with --disable-tls "
        "too (tls=False)"
    )
    assert not [r for r in caplog.records if "attempt 1 of" in r.getMessage()]


@pytest.mark.anyio
async def test_a_tls_client_of_an_http1_server_is_not_told_it_speaks_plain_grpc(
    pki: Pki,
) -> None:
    """Bytes that are not TLS from a peer that is no gRPC director either: the probe finds no
    HTTP/2 there, so no guess is made; OpenSSL's reason stays."""
    async with HostileServer(garbage(HTTP1_REPLY)) as server, AsyncShardDirectorClient(
        director_host="localhost", director_port=server.port, shard_name="s1",
        root_certificate=pki.ca_cert, private_key=pki.client.key, certificate=pki.client.cert,
    ) as client:  # fmt: skip
        with pytest.raises(TLSHandshakeError) as caught:
            await client.report_shard_info(Descriptor(), [])
    assert "speaks plain text" not in str(caught.value)
    assert "WRONG_VERSION_NUMBER" in str(caught.value)


def test_tls_without_files() -> None:
    with pytest.raises(
        TLSConfigurationError, match="root_certificate, private_key and certificate"
    ):
        ShardDirectorClient(director_host="localhost", director_port=1, shard_name="s1")


@pytest.mark.parametrize("missing", ["root_certificate", "private_key", "certificate"])
def test_missing_file_is_named(pki: Pki, tmp_path: Path, missing: str) -> None:
    files = {
        "root_certificate": pki.ca_cert,
        "private_key": pki.client.key,
        "certificate": pki.client.cert,
    }
    files[missing] = tmp_path / "absent.pem"
    with pytest.raises(TLSConfigurationError, match="absent.pem"):
        ShardDirectorClient(
            director_host="localhost",
            director_port=1,
            shard_name="s1",
            root_certificate=files["root_certificate"],
            private_key=files["private_key"],
            certificate=files["certificate"],
        )


def test_mismatched_key_and_certificate(pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    with pytest.raises(TLSConfigurationError, match="do not form a valid pair"):
        ShardDirectorClient(
            director_host="localhost",
            director_port=1,
            shard_name="s1",
            root_certificate=pki.ca_cert,
            private_key=other.client.key,
            certificate=pki.client.cert,
        )


def test_garbage_root_certificate(pki: Pki, tmp_path: Path) -> None:
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate")
    with pytest.raises(TLSConfigurationError, match="junk.crt"):
        ShardDirectorClient(
            director_host="localhost",
            director_port=1,
            shard_name="s1",
            root_certificate=junk,
            private_key=pki.client.key,
            certificate=pki.client.cert,
        )


def test_encrypted_private_key_is_refused_without_prompting(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.client.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TLSConfigurationError, match="encrypted.key is encrypted"):
        ShardDirectorClient(
            director_host="localhost",
            director_port=1,
            shard_name="s1",
            root_certificate=pki.ca_cert,
            private_key=encrypted,
            certificate=pki.client.cert,
        )
