"""The newer providers as a user sets one up for the daemon or a cluster node, against the simulator:
what `.env` holds, the node-side flags, what the simulator must know, and the model request lines name.

Gemini and Azure take a key; Vertex a service account whose token endpoint is the simulator's, its
files staged in the simulator's Cloud Storage; Bedrock the AWS chain of the process environment (as
botocore reads it) and moto's S3 for its records, with batches no smaller than Bedrock's floor of 100.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .gcp import BUCKET, EMAIL, PROJECT, service_account

NEW_PROVIDERS = ("gemini", "vertex", "bedrock", "azure")
BEDROCK_CLAUDE = "anthropic.claude-3-5-haiku-20241022-v1:0"
VERTEX_CLAUDE = "claude-sonnet-4-5@20250929"
ROLE = "arn:aws:iam::123456789012:role/batch"
ACCESS_KEY_ID = "AKIDSETUP"


@dataclass(frozen=True)
class Setup:
    """One provider, set up: `.env`, the daemon's (or node's) flags, and the lines' model."""

    name: str
    env: dict[str, str]
    flags: dict[str, Any]
    line_model: str | None  # the model each request line names; None: the flags' --model fills it
    batch_size: int  # the most a test's batches hold (Bedrock's are never under its floor of 100)
    process_env: dict[str, str] = field(default_factory=dict)  # what botocore reads from the process


def set_up(name: str, sim: Any, tmp_path: Path, key: str, moto: Any = None) -> Setup:
    """Provider `name` against `sim` (its valid keys kept); `moto` (a MotoServer) for bedrock."""
    flags: dict[str, Any] = {"provider": name, "base_url": sim.url}
    if name == "gemini":
        return Setup(name, {"GEMINI_API_KEY": key}, flags, "gemini-2.5-flash", 20)
    if name == "azure":
        return Setup(name, {"AZURE_OPENAI_API_KEY": key}, flags, "gpt-4o-mini", 20)  # a deployment named for its model
    if name == "vertex":
        _also_valid(sim, EMAIL)  # Google's token endpoint knows the service account by its email
        credentials = service_account(tmp_path / "sa.json", sim.url)
        flags |= {"model": VERTEX_CLAUDE, "project": PROJECT, "location": "us-central1",
                  "staging": f"gs://{BUCKET}/jobs", "storage_url": sim.url}
        return Setup(name, {"GOOGLE_APPLICATION_CREDENTIALS": credentials}, flags, None, 20)
    if name == "bedrock":
        assert moto is not None, "bedrock needs moto's S3"
        sim.config.bedrock_s3_endpoint = moto.endpoint
        _also_valid(sim, ACCESS_KEY_ID)  # SigV4's credential names the access key
        process = {"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": "secret",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": moto.endpoint}
        flags |= {"model": BEDROCK_CLAUDE, "role_arn": ROLE, "staging": f"s3://{moto.new_bucket()}/jobs"}
        return Setup(name, {}, flags, None, 100, process_env=process)
    raise AssertionError(f"no set-up for {name}")


def _also_valid(sim: Any, key: str) -> None:
    if sim.config.valid_keys is not None:
        sim.config.valid_keys = {*sim.config.valid_keys, key}


def use_process_env(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process environment as a bedrock user's shell holds it, and nothing else AWS reads."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE", "AWS_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in setup.process_env.items():
        monkeypatch.setenv(name, value)


def batches_of(sim: Any, name: str) -> list[Any]:
    """The simulator's batches made through provider `name`'s API."""
    return [b for b in sim.store.batches.values() if b.kind == name]
