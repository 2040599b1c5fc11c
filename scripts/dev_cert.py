#!/usr/bin/env python3
"""A self-signed TLS certificate and key for the gateway's public port, for development.

    python scripts/dev_cert.py --out DIR [--name localhost --name gateway --ip 127.0.0.1]
                               [--days 90] [--force]

Writes DIR/tls.crt (PEM, also the file a client trusts: --ca-file / root_certificates) and
DIR/tls.key (PEM, PKCS#8, mode 0600). Idempotent: an existing pair that covers the requested
names and is valid for at least another day is kept, so the docker compose one-shot service
can run on every `up`. ECDSA P-256, SHA-256, serverAuth only, not a CA.

Development only: production uses a certificate from a real CA (see docs/operations.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_NAME, KEY_NAME = "tls.crt", "tls.key"


def _sans(names: list[str], ips: list[str]) -> list[x509.GeneralName]:
    return ([x509.DNSName(n) for n in names]
            + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips])


def build(names: list[str], ips: list[str], days: int,
          now: dt.datetime | None = None) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for a new self-signed server certificate."""
    if not names and not ips:
        raise ValueError("at least one --name or --ip")
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Avatario development"),
        x509.NameAttribute(NameOID.COMMON_NAME, (names or ips)[0]),
    ])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(_sans(names, ips)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def still_good(out: Path, names: list[str], ips: list[str],
               now: dt.datetime | None = None) -> bool:
    """True when out/ holds a pair covering these names for at least another day."""
    cert_path, key_path = out / CERT_NAME, out / KEY_NAME
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    now = now or dt.datetime.now(dt.UTC)
    same_key = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    covered = set(_sans(names, ips)) <= set(sans)
    return same_key and covered and cert.not_valid_after_utc > now + dt.timedelta(days=1)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def ensure(out: Path, names: list[str], ips: list[str], *, days: int = 90,
           force: bool = False) -> bool:
    """Write a new pair unless a good one is there; True when one was written."""
    out.mkdir(parents=True, exist_ok=True)
    if not force and still_good(out, names, ips):
        return False
    cert_pem, key_pem = build(names, ips, days)
    _write(out / KEY_NAME, key_pem, 0o600)
    _write(out / CERT_NAME, cert_pem, 0o644)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for tls.crt and tls.key")
    p.add_argument("--name", action="append", default=[], help="DNS name (repeatable)")
    p.add_argument("--ip", action="append", default=[], help="IP address (repeatable)")
    p.add_argument("--days", type=int, default=90, help="validity (default 90)")
    p.add_argument("--force", action="store_true", help="replace a pair that is still good")
    args = p.parse_args(argv)
    names = [n for n in args.name if n] or (["localhost"] if not args.ip else [])
    if not 1 <= args.days <= 825:
        p.error("--days must be between 1 and 825")
    try:
        written = ensure(args.out, names, args.ip, days=args.days, force=args.force)
    except ValueError as exc:
        p.error(str(exc))
    what = "wrote" if written else "kept"
    print(f"dev certificate: {what} {args.out / CERT_NAME} for {', '.join(names + args.ip)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
