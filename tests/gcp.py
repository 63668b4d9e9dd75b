"""A Google service account for tests: its own RSA key, its token endpoint the simulator's, and the
settings of a `--provider vertex` job against the simulator."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from batch_scheduler.core.settings import Settings

from .conftest import fast_settings

EMAIL = "batch@sim-project.iam.gserviceaccount.com"
PROJECT = "sim-project"
BUCKET = "sim-bucket"
_KEY_PEM: str | None = None


def _key_pem() -> str:
    """One 2048-bit key per test session (making one takes a while)."""
    global _KEY_PEM
    if _KEY_PEM is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _KEY_PEM = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
    return _KEY_PEM


def service_account(path: Path, sim_url: str, *, email: str = EMAIL, project: str = PROJECT) -> str:
    """Write a service account's JSON key whose token endpoint is the simulator's; its path."""
    info = {"type": "service_account", "project_id": project, "private_key_id": "0123456789abcdef",
            "private_key": _key_pem(), "client_email": email, "client_id": "1234567890",
            "token_uri": f"{sim_url}/token", "auth_uri": "https://accounts.google.com/o/oauth2/auth"}
    path.write_text(json.dumps(info))
    return str(path)


def vertex_settings(sim_url: str, credentials: str, **changes) -> Settings:
    base = dict(provider="vertex", api_key=credentials, auth="bearer", project=PROJECT, location="us-central1",
                staging=f"gs://{BUCKET}/jobs", storage_url=sim_url, model="claude-sonnet-4-5@20250929")
    return fast_settings(sim_url, **{**base, **changes})
