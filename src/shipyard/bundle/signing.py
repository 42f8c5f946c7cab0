"""Optional ed25519 signatures over `shipyard.yaml`.

The manifest lists every file's sha256, so a valid signature over the manifest's exact bytes
vouches for the whole bundle. The signature lives beside it in `shipyard.sig` as JSON:
`{"algorithm": "ed25519", "key": <public key fingerprint>, "signature": <base64>}`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shipyard.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME
from shipyard.errors import ConfigError, IntegrityError


def generate_keypair(private_path: Path, public_path: Path) -> str:
    """Write a new key pair as PEM files (private one mode 0600); return the fingerprint."""
    key = Ed25519PrivateKey.generate()
    private_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_path.touch(mode=0o600, exist_ok=False)
    private_path.write_bytes(private_bytes)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return fingerprint(key.public_key())


def fingerprint(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"Cannot read an ed25519 private key from {path}: {exc}.",
            hint="Create one with `shipyard keygen`.",
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"{path} is not an ed25519 key.", hint="Create one with `shipyard keygen`."
        )
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Cannot read an ed25519 public key from {path}: {exc}.",
            hint="Set trusted_keys to PEM files written by `shipyard keygen`.",
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(
            f"{path} is not an ed25519 public key.", hint="Only ed25519 keys are supported."
        )
    return key


def sign(folder: Path, private_key: Path) -> str:
    """Sign the bundle's manifest; return the signing key's fingerprint."""
    key = _load_private(private_key)
    signature = key.sign((Path(folder) / MANIFEST_NAME).read_bytes())
    body = {
        "algorithm": "ed25519",
        "key": fingerprint(key.public_key()),
        "signature": base64.b64encode(signature).decode(),
    }
    target = Path(folder) / SIGNATURE_NAME
    tmp = target.with_suffix(".sig.tmp")
    tmp.write_text(json.dumps(body))
    tmp.replace(target)
    return body["key"]


def verify(folder: Path, trusted_keys: Sequence[Path]) -> str:
    """Check the manifest's signature against the trusted keys; return the key fingerprint."""
    sig_path = Path(folder) / SIGNATURE_NAME
    if not sig_path.is_file():
        raise IntegrityError(
            f"{folder} is not signed, and trusted keys are configured.",
            hint="Sign it with `shipyard sign BUNDLE --key KEY.pem`.",
            file=SIGNATURE_NAME,
        )
    try:
        body = json.loads(sig_path.read_text())
        signature = base64.b64decode(body["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(
            f"{SIGNATURE_NAME} is malformed.", hint="Re-sign the bundle.", file=SIGNATURE_NAME
        ) from exc
    data = (Path(folder) / MANIFEST_NAME).read_bytes()
    for path in trusted_keys:
        key = load_public(path)
        try:
            key.verify(signature, data)
        except InvalidSignature:
            continue
        return fingerprint(key)
    raise IntegrityError(
        f"The signature of {folder} does not match any trusted key.",
        hint="The manifest changed after signing, or it was signed by an "
        "unknown key. Re-sign it with a trusted key.",
        file=SIGNATURE_NAME,
    )
