"""`--provider vertex` with its files in a real Cloud Storage emulator (fake-gcs-server) rather than the
simulator's own: the job uploads its input there, the simulator's Vertex reads it from there and exports
its predictions there, as Vertex reads and writes a user's bucket. Exactly once, the staged files gone after
collection (or kept with --keep-staged), and a bucket the emulator does not have refused before any create.
"""

from __future__ import annotations

import pytest

from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.simulator import SimConfig

from ..cluster.servers import GcsEmulator
from ..gcp import service_account, vertex_settings
from ..helpers import ids_of, read_results, write_requests
from .test_vertex_pipeline import GEMINI, answer, write_gemini


@pytest.fixture(scope="module")
def gcs():
    with GcsEmulator() as server:
        yield server


async def run_job(settings, out, inputs):
    return await Engine(settings, str(out), [str(p) for p in inputs], quiet=True).run()


@pytest.mark.parametrize("family", ["claude", "gemini"])
async def test_a_job_staged_in_the_emulator_finishes_exactly_once_and_leaves_nothing(sim, gcs, tmp_path, family):
    sim.config = SimConfig.real_faults(seed=23, processing_s=0.2, vertex_gcs_endpoint=gcs.endpoint)
    credentials = service_account(tmp_path / "sa.json", sim.url)
    bucket = gcs.new_bucket()
    staging = dict(staging=f"gs://{bucket}/jobs", storage_url=gcs.endpoint, batch_size=100, max_attempts=6,
                   concurrency=8)
    if family == "claude":
        ids = write_requests(tmp_path / "in.jsonl", 600)
        settings = vertex_settings(sim.url, credentials, **staging)
    else:
        ids = write_gemini(tmp_path / "in.jsonl", 600)
        settings = vertex_settings(sim.url, credentials, model=GEMINI, **staging)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = read_results(str(tmp_path / "out"))
    assert sorted(ids_of(results)) == sorted(ids)
    assert all(answer(r) == "answer:" + r["custom_id"] for r in results if not r.get("status"))
    assert sim.stats["creates"] >= 6 and sim.stats.get("uploads", 0) == 0  # every file went to the emulator
    assert gcs.names(bucket) == []  # inputs and predictions removed once their batch was collected


async def test_keep_staged_leaves_the_files_in_the_emulator(sim, gcs, tmp_path):
    sim.config = SimConfig(seed=5, vertex_gcs_endpoint=gcs.endpoint)
    credentials = service_account(tmp_path / "sa.json", sim.url)
    bucket = gcs.new_bucket()
    write_requests(tmp_path / "in.jsonl", 150)
    settings = vertex_settings(sim.url, credentials, staging=f"gs://{bucket}/jobs", storage_url=gcs.endpoint,
                               batch_size=100, keep_staged=True)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    names = gcs.names(bucket)
    assert [n.rsplit("/", 1)[-1] for n in names if n.endswith("input.jsonl")] == ["input.jsonl"] * 2
    assert sum(n.rsplit("/", 1)[-1].startswith("predictions_") for n in names) >= 2
    assert all(n.startswith("jobs/job-") for n in names), names


async def test_a_bucket_the_emulator_does_not_have_exits_2_before_any_create(sim, gcs, tmp_path):
    sim.config = SimConfig(seed=5, vertex_gcs_endpoint=gcs.endpoint)
    credentials = service_account(tmp_path / "sa.json", sim.url)
    write_requests(tmp_path / "in.jsonl", 10)
    settings = vertex_settings(sim.url, credentials, staging="gs://no-such-bucket/jobs", storage_url=gcs.endpoint)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.USAGE
    assert result.message.startswith("--staging gs://no-such-bucket: the bucket cannot be used with these credentials")
    assert sim.stats["creates"] == 0
