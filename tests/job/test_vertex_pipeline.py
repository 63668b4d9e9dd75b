"""`--provider vertex` end to end against the in-process simulator, its real faults on: a Claude job and a
Gemini job each answered exactly once, staged files removed once collected, Claude's jobs capped, and
the refusals made before anything is uploaded."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from batch_scheduler.job.api import arun
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.providers.google.gcp_auth import NO_CREDENTIALS
from batch_scheduler.simulator import SimConfig

from ..gcp import BUCKET, PROJECT, service_account, vertex_settings
from ..helpers import ids_of, read_results, write_requests

GEMINI = "gemini-2.5-flash"


def write_gemini(path, n: int) -> list[str]:
    ids = [f"g-{i:05d}" for i in range(n)]
    with open(path, "wb") as f:
        for cid in ids:
            f.write(orjson.dumps({"custom_id": cid, "request": {
                "contents": [{"role": "user", "parts": [{"text": f"question {cid}"}]}],
                "generationConfig": {"maxOutputTokens": 40}}}) + b"\n")
    return ids


def answer(line: dict) -> str | None:
    response = line.get("response") or {}
    if "candidates" in response:
        return response["candidates"][0]["content"]["parts"][0]["text"]
    return response["content"][0]["text"] if response else None


def assert_key_nowhere(credentials: str, out: Path) -> None:
    """No part of the service account's private key in any file of the job."""
    key = orjson.loads(Path(credentials).read_bytes())["private_key"].splitlines()[1]
    for path in out.rglob("*"):
        assert not path.is_file() or key.encode() not in path.read_bytes(), path


async def run_job(settings, out, inputs):
    return await Engine(settings, str(out), [str(p) for p in inputs], quiet=True).run()


@pytest.fixture
def credentials(sim, tmp_path) -> str:
    return service_account(tmp_path / "sa.json", sim.url)


@pytest.mark.parametrize("family", ["claude", "gemini"])
async def test_a_job_of_each_family_finishes_exactly_once_with_the_real_faults(sim, tmp_path, credentials, family):
    sim.config = SimConfig.real_faults(seed=21, processing_s=0.2, vertex_expired_rate=0.1)
    if family == "claude":
        ids = write_requests(tmp_path / "in.jsonl", 1_200)  # Message Batches lines, made Vertex Claude lines
        settings = vertex_settings(sim.url, credentials, batch_size=100, max_attempts=6, concurrency=8)
    else:
        ids = write_gemini(tmp_path / "in.jsonl", 1_200)
        settings = vertex_settings(sim.url, credentials, batch_size=100, max_attempts=6, concurrency=8, model=GEMINI)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = read_results(str(tmp_path / "out"))
    assert sorted(ids_of(results)) == sorted(ids)  # each once: matched by the echoed custom_id, in any order
    assert all(answer(r) == "answer:" + r["custom_id"] for r in results if not r.get("status"))
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["cost_usd"] > 0 and summary["tokens"]["output"] > 0
    assert sim.stats["lost_creates"] == summary["batches"]["adopted"]  # every lost create was adopted, by tag
    assert not sim.gcs.objects, sorted(sim.gcs.objects)[:3]  # staged files go once their batch is collected
    if family == "claude":
        assert sim.stats["peak_vertex_claude_jobs"] <= 4


async def test_keep_staged_keeps_the_input_and_output_files(sim, tmp_path, credentials):
    sim.config = SimConfig(seed=5)
    write_requests(tmp_path / "in.jsonl", 150)
    settings = vertex_settings(sim.url, credentials, batch_size=100, keep_staged=True)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    names = sorted(name for _, name in sim.gcs.objects)
    assert [n.rsplit("/", 1)[-1] for n in names if n.endswith("input.jsonl")] == ["input.jsonl"] * 2
    assert all(n.startswith("jobs/job-") for n in names), names


async def test_claude_jobs_wait_for_room_under_the_projects_cap_of_four(sim, tmp_path, credentials):
    sim.config = SimConfig(seed=5, processing_s=0.3)
    write_requests(tmp_path / "in.jsonl", 1_000)
    settings = vertex_settings(sim.url, credentials, batch_size=50, concurrency=16)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert sim.stats["peak_vertex_claude_jobs"] == 4  # filled, never passed: no create met the 429
    assert sim.stats["calls"]["vertex.create"] == 20


@pytest.mark.parametrize(("changes", "message"), [
    ({"gcs_buckets": ["another"]}, "--staging gs://sim-bucket: the bucket cannot be used with these credentials "
                                   "(GET gcs.bucket: HTTP 404 NOT_FOUND: The specified bucket does not exist.); create it, "
                                   "grant the credentials Storage Object Admin on it, or choose another --staging"),
    ({"vertex_projects": ["another"]}, "project sim-project in us-central1: Vertex AI cannot be reached (GET list: "
                                       "HTTP 403 PERMISSION_DENIED: Permission denied on resource project sim-project.); check "
                                       "--project (GOOGLE_CLOUD_PROJECT), --location (GOOGLE_CLOUD_LOCATION) and that "
                                       "the Vertex AI API is enabled for the credentials' project"),
])
async def test_a_bucket_or_project_out_of_reach_exits_2_before_anything_is_uploaded(sim, tmp_path, credentials,
                                                                                   changes, message):
    sim.config = SimConfig(seed=5, **changes)
    write_requests(tmp_path / "in.jsonl", 10)
    result = await run_job(vertex_settings(sim.url, credentials), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert (result.exit_code, result.message) == (ExitCode.USAGE, message)
    assert sim.stats["uploads"] == 0 and sim.stats["creates"] == 0


async def test_refused_credentials_exit_3_before_anything_is_uploaded(sim, tmp_path):
    sim.config = SimConfig(seed=5, valid_keys={"someone-else@sim-project.iam.gserviceaccount.com"})
    write_requests(tmp_path / "in.jsonl", 10)
    credentials = service_account(tmp_path / "sa.json", sim.url)
    result = await run_job(vertex_settings(sim.url, credentials), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.AUTH and result.http_status == 401
    assert result.message.startswith("the API refused the key (HTTP 401): check GOOGLE_APPLICATION_CREDENTIALS")
    assert sim.stats["uploads"] == 0
    assert_key_nowhere(credentials, tmp_path / "out")


async def test_without_credentials_or_staging_the_run_says_what_to_set(sim, tmp_path, credentials, monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud login, and no metadata server answers
    monkeypatch.setenv("GCE_METADATA_IP", sim.url.removeprefix("http://"))
    write_requests(tmp_path / "in.jsonl", 10)
    options = dict(provider="vertex", base_url=sim.url, project=PROJECT, staging=f"gs://{BUCKET}/jobs",
                   storage_url=sim.url)
    missing = await arun(str(tmp_path / "in.jsonl"), tmp_path / "out0", **options)  # Application Default Credentials
    assert (missing.exit_code, missing.message) == (ExitCode.USAGE, NO_CREDENTIALS)
    unreadable = await arun(str(tmp_path / "in.jsonl"), tmp_path / "out", api_key=str(tmp_path / "nothing.json"),
                            **options)
    assert unreadable.exit_code == ExitCode.USAGE
    assert unreadable.message.startswith("GOOGLE_APPLICATION_CREDENTIALS: the file it names cannot be used as "
                                         "Google credentials (")
    no_staging = await arun(str(tmp_path / "in.jsonl"), tmp_path / "out2", api_key=credentials,
                            **{**options, "staging": None})
    assert (no_staging.exit_code, no_staging.message) == (
        ExitCode.USAGE, "--provider vertex needs --staging gs://BUCKET/PREFIX: where its input and output files go "
                        "in Cloud Storage")
    assert sim.stats["uploads"] == 0
