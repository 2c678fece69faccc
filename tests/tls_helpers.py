"""Test helpers: a throw-away certificate authority and a private Redis with TLS and ACL users."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pipeline.infra import free_port


@dataclass(frozen=True)
class Certs:
    """PEM files: a CA, a server certificate for localhost/127.0.0.1, a client certificate with an
    unencrypted key, and the same client key encrypted with :attr:`key_password`."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_encrypted: Path
    key_password: str


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_certs(directory: Path, key_password: str = "key-secret-42") -> Certs:
    now = datetime.datetime.now(datetime.UTC)
    valid = {"not_valid_before": now - datetime.timedelta(minutes=5),
             "not_valid_after": now + datetime.timedelta(days=1)}  # fmt: skip
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder(subject_name=_name("finsent test CA"), issuer_name=_name("finsent test CA"),
                                public_key=ca_key.public_key(), serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip

    def issue(cn: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName] | None) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = x509.CertificateBuilder(subject_name=_name(cn), issuer_name=ca.subject, public_key=key.public_key(),
                                    serial_number=x509.random_serial_number(), **valid)  # fmt: skip
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), key

    def pem_key(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> bytes:
        enc = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)

    server, server_key = issue("localhost", ExtendedKeyUsageOID.SERVER_AUTH,
                               [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client, client_key = issue("finsent-client", ExtendedKeyUsageOID.CLIENT_AUTH, None)
    certs = Certs(directory / "ca.pem", directory / "server.pem", directory / "server.key", directory / "client.pem",
                  directory / "client.key", directory / "client-encrypted.key", key_password)  # fmt: skip
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    certs.server_cert.write_bytes(server)
    certs.server_key.write_bytes(pem_key(server_key))
    certs.client_cert.write_bytes(client)
    certs.client_key.write_bytes(pem_key(client_key))
    certs.client_key_encrypted.write_bytes(pem_key(client_key, key_password))
    return certs


@dataclass(frozen=True)
class TlsRedis:
    """A private ``redis-server`` that accepts only TLS (client certificates required) and only
    the ACL user :attr:`username` (the ``default`` user is off)."""

    url: str
    certs: Certs
    username: str
    password: str


@contextlib.contextmanager
def tls_redis(directory: Path, username: str = "finsent-app", password: str = "acl-secret-7f3a") -> Iterator[TlsRedis]:
    """Start the server (raises ``FileNotFoundError`` without a ``redis-server`` on PATH and
    ``RuntimeError`` when it was built without TLS); stopped on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not on PATH")
    certs = make_certs(directory)
    port = free_port()
    log = directory / "redis.log"
    cmd = [
        binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key),
        "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "yes",
        "--save", "", "--appendonly", "no", "--dir", str(directory),
        "--user", "default", "off",
        "--user", username, "on", f">{password}", "~*", "&*", "+@all",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while b"Ready to accept connections" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server with TLS did not start: {log.read_text()[-500:]}")
            time.sleep(0.05)
        yield TlsRedis(f"rediss://localhost:{port}/0", certs, username, password)
    finally:
        proc.terminate()
        proc.wait(10)
