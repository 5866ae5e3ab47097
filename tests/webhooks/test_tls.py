"""HTTPS callbacks: the connection goes to the checked address, and TLS still verifies the
certificate against the URL's host name (SNI), not the address."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from worker.webhooks import HEADER, verify
from worker.webhooks.delivery import WebhookConfig, WebhookService


def _cert(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for ``name`` it signed: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = (tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem")
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture(scope="module")
def tls_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An HTTPS receiver on 127.0.0.1 serving a certificate for ``hooks.tls.test``."""
    ca, cert, key = _cert(tmp_path_factory.mktemp("tls"), "hooks.tls.test")
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield {"port": server.server_address[1], "ca": ca, "got": got}
    finally:
        server.shutdown()
        server.server_close()


def _to_loopback(host: str, port: int, *_: Any) -> Sequence[tuple[Any, ...]]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


def test_https_pinned_to_the_address_verifies_the_host_name(
    ledger: Any, make_job: Callable[..., str], tls_receiver: dict[str, Any]
) -> None:
    key = ledger.api_keys.create("default", ["jobs:write"])
    trust = ssl.create_default_context(cafile=str(tls_receiver["ca"]))

    def service(host: str) -> WebhookService:
        return WebhookService(
            ledger.db,
            ledger.api_keys.webhook_secret,
            WebhookConfig(allow_hosts=(host,), timeout_s=3.0),
            resolver=_to_loopback,
            ssl_context=trust,
        )

    port = tls_receiver["port"]
    good = make_job(callback_url=f"https://hooks.tls.test:{port}/h", api_key_id=key.key_id)
    assert service("hooks.tls.test").attempt(good).state == "delivered"
    [(headers, body)] = tls_receiver["got"]
    assert headers["Host"] == f"hooks.tls.test:{port}"
    assert verify(key.webhook_secret.encode(), body, headers[HEADER])

    # the same address under another name: the certificate does not match, nothing is sent
    other = make_job(callback_url=f"https://other.tls.test:{port}/h", api_key_id=key.key_id)
    step = service("other.tls.test").attempt(other)
    assert (step.state, step.error) == ("pending", "tls_error")
    # and without trusting the test CA (the system store), the certificate is refused too
    plain = WebhookService(
        ledger.db,
        ledger.api_keys.webhook_secret,
        WebhookConfig(allow_hosts=("hooks.tls.test",), timeout_s=3.0),
        resolver=_to_loopback,
    )
    third = make_job(callback_url=f"https://hooks.tls.test:{port}/h", api_key_id=key.key_id)
    assert plain.attempt(third).error == "tls_error"
    assert len(tls_receiver["got"]) == 1
