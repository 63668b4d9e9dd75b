"""`--provider bedrock` end to end: the simulator's Bedrock over moto's S3, with the real fault set.

Credentials, region and the S3 endpoint come from the standard AWS variables, read by botocore; the
control plane's endpoint is --base-url. Every request is answered exactly once, Claude (InvokeModel
bodies) and Nova (Converse bodies) alike, and `status` and `export` read the result.
"""

from __future__ import annotations

import orjson
import pytest

from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.view.export import export
from batch_scheduler.simulator import SimConfig

from ..cluster.servers import MotoServer
from ..conftest import fast_settings
from ..helpers import ids_of, read_results, request

CLAUDE = "anthropic.claude-3-5-haiku-20241022-v1:0"
NOVA = "amazon.nova-lite-v1:0"
ROLE = "arn:aws:iam::123456789012:role/batch"


@pytest.fixture(scope="module")
def moto():
    with MotoServer() as server:
        yield server


@pytest.fixture
def staging(moto, monkeypatch) -> str:
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIDPIPELINE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ENDPOINT_URL_S3": moto.endpoint}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    return f"s3://{moto.new_bucket()}/stage"


def write_lines(path, n: int) -> list[str]:
    ids = [f"req-{i:06d}" for i in range(n)]
    path.write_bytes(b"".join(orjson.dumps(request(cid, f"question {cid}", model=None)) + b"\n" for cid in ids))
    return ids


def bedrock_settings(url: str, model: str, staging: str, **changes):
    return fast_settings(url, provider="bedrock", model=model, role_arn=ROLE, staging=staging, max_attempts=6,
                         **changes)


async def run_job(settings, out, inputs):
    return await Engine(settings, str(out), [str(p) for p in inputs], quiet=True).run()


@pytest.mark.parametrize("model", [CLAUDE, NOVA], ids=["claude", "nova"])
async def test_a_bedrock_job_is_answered_exactly_once_under_the_real_faults(sim, moto, staging, tmp_path, model):
    sim.config = SimConfig.real_faults(seed=11, bedrock_s3_endpoint=moto.endpoint)
    ids = write_lines(tmp_path / "in.jsonl", 1_050)
    result = await run_job(bedrock_settings(sim.url, model, staging), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = read_results(str(tmp_path / "out"))
    got = ids_of(results)
    assert len(got) == len(set(got)) and sorted(got) == sorted(ids)
    for r in results:
        assert r["result"]["type"] == "succeeded", r
        assert r["result"]["message"]["content"][0]["text"] == f"answer to {r['custom_id']}"
    jobs = [b for b in sim.store.batches.values() if b.kind == "bedrock"]
    assert all(b.n >= 100 for b in jobs)  # the floor: no job under Bedrock's minimum, retries padded up to it
    assert len({b.extra["doc"]["clientRequestToken"] for b in jobs}) == len(jobs)
    assert all((b.extra["doc"].get("modelInvocationType") == "Converse") == (model == NOVA) for b in jobs)
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["results"]["succeeded"] == 1_050 and summary["cost_usd"] > 0
    exported = export(str(tmp_path / "out"), "csv", str(tmp_path / "out.csv"))
    assert exported.results == 1_050


async def test_a_bedrock_job_under_the_floor_is_refused_before_anything_is_sent(sim, moto, staging, tmp_path):
    sim.config = SimConfig(bedrock_s3_endpoint=moto.endpoint)
    write_lines(tmp_path / "in.jsonl", 40)
    result = await run_job(bedrock_settings(sim.url, CLAUDE, staging), tmp_path / "out", [tmp_path / "in.jsonl"])
    floor = ("the job has 40 requests, fewer than the 100 the provider takes in a batch: add requests to reach "
             "100, or send these with another provider")
    assert (result.exit_code, result.message) == (ExitCode.USAGE, floor)
    assert sim.stats["creates"] == 0 and sim.stats["calls"] == {}


async def test_a_full_jobs_quota_holds_the_next_create_and_never_shrinks_the_batches(sim, moto, staging, tmp_path):
    """Bedrock's `ServiceQuotaExceededException` is about the number of jobs: the next create waits for one of
    ours to end, no attempt is used, and every batch keeps the job's size (never cut down and padded up)."""
    sim.config = SimConfig(seed=3, processing_s=0.3, bedrock_s3_endpoint=moto.endpoint, bedrock_jobs_limit=2)
    ids = write_lines(tmp_path / "in.jsonl", 850)
    settings = fast_settings(sim.url, provider="bedrock", model=CLAUDE, role_arn=ROLE, staging=staging, batch_size=100,
                             concurrency=6, max_attempts=1)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    got = ids_of(read_results(str(tmp_path / "out")))
    assert len(got) == len(set(got)) and sorted(got) == sorted(ids)
    jobs = [b for b in sim.store.batches.values() if b.kind == "bedrock"]
    padding = sum(1 for b in jobs for cid in b.custom_ids if ".pad" in cid)
    assert sum(b.n for b in jobs) - padding <= 1.05 * len(ids)  # the requests paid for: each about once
    assert padding == 0  # no retry batch: nothing under the floor was sent
    assert sim.stats["queue_full"] >= 1  # the quota was met, and waited out
    queue = result.summary["queue"]
    assert queue["queue_full_answers"] == sim.stats["queue_full"]
    assert queue["limits"][f"jobs of {CLAUDE}"]["limit"] == 2  # learned: what was in flight when it came
    assert queue["limits"]["requests"]["ceiling"] is None  # the request limit learned nothing from it


async def test_the_manifest_stands_in_for_lost_lines_and_for_answers_that_report_no_tokens(sim, moto, staging, tmp_path,
                                                                                          caplog):
    """Lines lost from `.jsonl.out` but counted by `manifest.json.out` are named and sent again; answers without
    usage get the manifest's tokens, so the job's tokens are what the manifests of its batches add up to."""
    import boto3

    sim.config = SimConfig(seed=5, bedrock_s3_endpoint=moto.endpoint, bedrock_usage_absent_rate=1.0,
                           bedrock_lines_lost_rate=0.03)
    ids = write_lines(tmp_path / "in.jsonl", 400)
    settings = bedrock_settings(sim.url, NOVA, staging, batch_size=200, keep_staged=True)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    got = ids_of(read_results(str(tmp_path / "out")))
    assert len(got) == len(set(got)) and sorted(got) == sorted(ids)
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["requests"]["missing_from_results"] > 0
    assert any("manifest.json.out counts" in r.getMessage() and "missing are sent again" in r.getMessage()
               for r in caplog.records)
    bucket = staging.removeprefix("s3://").partition("/")[0]
    s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"] if o["Key"].endswith("manifest.json.out")]
    manifests = [orjson.loads(s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys]
    assert len(manifests) == len([b for b in sim.store.batches.values() if b.kind == "bedrock"])
    tokens = summary["tokens"]
    assert tokens["input"] == sum(m["inputTokenCount"] for m in manifests) > 0
    assert tokens["output"] == sum(m["outputTokenCount"] for m in manifests) > 0
    assert summary["cost_usd"] > 0


async def test_a_job_of_two_models_runs_one_bedrock_job_per_model_each_of_its_lanes_model(sim, moto, staging,
                                                                                          tmp_path):
    """A Bedrock job takes one modelId: lines naming two models are cut per model (the provider's lanes), each
    batch a job of its model, Claude's with InvokeModel bodies and Nova's with Converse ones; a model's small
    remainder joins its own model's batch, never the other's."""
    sim.config = SimConfig.real_faults(seed=13, bedrock_s3_endpoint=moto.endpoint)
    rows = [(f"req-{i:05d}", CLAUDE if i % 3 else NOVA) for i in range(760)]
    (tmp_path / "in.jsonl").write_bytes(b"".join(
        orjson.dumps(request(cid, f"question {cid}", model=model)) + b"\n" for cid, model in rows))
    settings = fast_settings(sim.url, provider="bedrock", model=None, role_arn=ROLE, staging=staging, batch_size=200,
                             max_attempts=6)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = read_results(str(tmp_path / "out"))
    got = ids_of(results)
    assert len(got) == len(set(got)) and sorted(got) == sorted(cid for cid, _ in rows)
    model_of = dict(rows)
    assert all(r["result"]["message"]["model"] == model_of[r["custom_id"]] for r in results)
    jobs = [b for b in sim.store.batches.values() if b.kind == "bedrock"]
    for job in jobs:
        model = job.extra["modelId"]
        assert {model_of[cid.partition(".pad")[0]] for cid in job.custom_ids} == {model}
        assert (job.extra["doc"].get("modelInvocationType") == "Converse") == (model == NOVA)
        assert all(("anthropic_version" in body) == (model == CLAUDE) for body in job.extra["inputs"])
    # the cut: Claude's 506 lines as 200, 200 and 106; Nova's 254 as 200 + 54 (under the floor: joined)
    cut = sorted((b.extra["modelId"], b.n) for b in jobs if b.n >= 106 and b.custom_ids[0] in ("req-00000", "req-00001", "req-00301",
                                                                                "req-00601"))
    assert cut == sorted([(CLAUDE, 200), (CLAUDE, 200), (CLAUDE, 106), (NOVA, 254)])
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert set(summary["models"]) == {CLAUDE, NOVA}


async def test_a_staging_bucket_that_cannot_be_written_is_said_before_anything_is_uploaded(sim, moto, staging,
                                                                                           tmp_path):
    sim.config = SimConfig(bedrock_s3_endpoint=moto.endpoint)
    write_lines(tmp_path / "in.jsonl", 150)
    settings = bedrock_settings(sim.url, CLAUDE, "s3://no-such-bucket-here/stage")
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert (result.exit_code, result.message) == (ExitCode.USAGE, (
        "--staging s3://no-such-bucket-here: cannot write stage/.batch-scheduler-probe (HTTP 404 NoSuchBucket: The "
        "specified bucket does not exist): check that the bucket exists and that these AWS credentials may write to it"))
    assert sim.stats["creates"] == 0 and sim.stats["calls"] == {}


@pytest.mark.parametrize("role", ["batch", "arn:aws:iam::123:role/batch", "arn:aws:s3:::bucket"])
async def test_a_role_arn_of_another_shape_is_said_before_anything_is_uploaded(sim, moto, staging, tmp_path, role):
    sim.config = SimConfig(bedrock_s3_endpoint=moto.endpoint)
    write_lines(tmp_path / "in.jsonl", 150)
    settings = bedrock_settings(sim.url, CLAUDE, staging).replace(role_arn=role)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert (result.exit_code, result.message) == (ExitCode.USAGE, (
        f"--role-arn {role!r}: expected an IAM role ARN, arn:aws:iam::<account>:role/<name> (the service role "
        f"Bedrock assumes; or BEDROCK_ROLE_ARN)"))
    assert sim.stats["creates"] == 0 and sim.stats["calls"] == {}


async def test_a_role_bedrock_may_not_use_is_named_at_the_first_create_and_nothing_stays_staged(sim, moto, staging,
                                                                                              tmp_path):
    """Whether the role can be passed to Bedrock is known only when a job is created: the first create's
    AccessDeniedException is one line naming --role-arn (exit 2, not a refused key), and its staged input goes."""
    import boto3

    sim.config = SimConfig(bedrock_s3_endpoint=moto.endpoint, bedrock_refused_roles=[ROLE])
    write_lines(tmp_path / "in.jsonl", 150)
    result = await run_job(bedrock_settings(sim.url, CLAUDE, staging), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.USAGE
    assert result.message.startswith(f"--role-arn {ROLE}: Bedrock cannot use this role (")
    assert "is not authorized to perform: iam:PassRole on resource" in result.message
    assert result.message.endswith("); set --role-arn (or BEDROCK_ROLE_ARN) to a service role whose trust policy "
                                   "lets bedrock.amazonaws.com assume it, and let these credentials pass it "
                                   "(iam:PassRole)")
    assert sim.stats["creates"] == 0
    bucket = staging.removeprefix("s3://").partition("/")[0]
    s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
