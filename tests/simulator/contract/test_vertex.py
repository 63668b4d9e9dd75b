"""google-genai (vertexai=True) drives the simulator's Vertex AI batch prediction: create, get, list,
cancel and delete for a Gemini and a Claude model, every JobState the simulator serves, and its errors.

The SDK's converters drop fields they do not know, so "accepted" is checked twice: each job the
simulator serves holds only fields of the REST resource, and the SDK's BatchJob carries every one of them.
Its credentials are a service account with the test's own RSA key, refreshed at the simulator's token
endpoint (google-auth, offline).
"""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from google.oauth2 import service_account as sa

from batch_scheduler.simulator import SimConfig, Simulator

from ...gcp import BUCKET, PROJECT, service_account
from ..helpers import FakeClock

# google-genai's async client subclasses aiohttp's ClientSession, which aiohttp warns about (not our code)
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
LOCATION = "us-central1"
# BatchPredictionJob fields the simulator serves (cloud.google.com/vertex-ai/docs/reference/rest/v1/
# projects.locations.batchPredictionJobs): the SDK reads all of them but labels and inputConfig's format
REST_FIELDS = {"name", "displayName", "model", "inputConfig", "outputConfig", "labels", "state", "createTime",
               "updateTime", "startTime", "endTime", "completionStats", "outputInfo", "error"}
LINES = {
    "claude": (b'{"custom_id":"c1","request":{"messages":[{"role":"user","content":"hi"}],"max_tokens":20,'
               b'"anthropic_version":"vertex-2023-10-16"}}\n'),
    "gemini": b'{"custom_id":"g1","request":{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}}\n',
}
MODELS = {"claude": "publishers/anthropic/models/claude-sonnet-4-5@20250929",
          "gemini": "publishers/google/models/gemini-2.5-flash"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock):
    async with Simulator(SimConfig(seed=3, processing_s=10), clock=clock) as s:
        yield s


@pytest.fixture
def credentials(sim, tmp_path):
    path = service_account(tmp_path / "sa.json", sim.url)
    return sa.Credentials.from_service_account_file(path, scopes=["https://www.googleapis.com/auth/cloud-platform"])


@pytest.fixture
def client(sim, credentials):
    return genai.Client(vertexai=True, project=PROJECT, location=LOCATION, credentials=credentials,
                        http_options=types.HttpOptions(base_url=sim.url))


async def create(sim, client, kind: str, name: str = "contract") -> types.BatchJob:
    sim.gcs.put(BUCKET, f"in/{kind}.jsonl", LINES[kind])
    return await client.aio.batches.create(model=MODELS[kind], src=f"gs://{BUCKET}/in/{kind}.jsonl",
                                           config=types.CreateBatchJobConfig(dest=f"gs://{BUCKET}/out/{kind}",
                                                                             display_name=name))


async def raw_job(sim, credentials, name: str) -> dict:
    """The job as served, read past the SDK."""
    async with aiohttp.ClientSession() as session, session.get(
            f"{sim.url}/v1/{name}", headers={"authorization": f"Bearer {credentials.token}"}) as resp:
        assert resp.status == 200
        return orjson.loads(await resp.read())


def assert_carried(job: types.BatchJob, doc: dict) -> None:
    """Everything the simulator served, as the SDK's BatchJob holds it."""
    assert set(doc) <= REST_FIELDS, set(doc) - REST_FIELDS
    assert job.name == doc["name"] and job.display_name == doc["displayName"] and job.model == doc["model"]
    assert job.state is not None and job.state.value == doc["state"]
    assert job.src is not None and job.src.gcs_uri == doc["inputConfig"]["gcsSource"]["uris"]
    assert job.dest is not None and job.dest.gcs_uri == doc["outputConfig"]["gcsDestination"]["outputUriPrefix"]
    assert job.create_time is not None and job.update_time is not None
    for key, attr in (("startTime", "start_time"), ("endTime", "end_time")):
        assert (getattr(job, attr) is not None) == (key in doc), key
    if "completionStats" in doc:
        stats = job.completion_stats
        assert stats is not None and stats.successful_count == int(doc["completionStats"]["successfulCount"])
        assert stats.failed_count == int(doc["completionStats"]["failedCount"])
        assert stats.incomplete_count == int(doc["completionStats"]["incompleteCount"])
    if "outputInfo" in doc:
        assert job.output_info is not None
        assert job.output_info.gcs_output_directory == doc["outputInfo"]["gcsOutputDirectory"]
    if "error" in doc:
        assert job.error is not None and job.error.message == doc["error"]["message"]


@pytest.mark.parametrize("kind", ["claude", "gemini"])
async def test_a_job_of_each_model_family_through_create_get_list_and_delete(sim, client, credentials, clock, kind):
    job = await create(sim, client, kind)
    assert job.state == types.JobState.JOB_STATE_PENDING and job.name.startswith(
        f"projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs/")
    seen = []
    for step_s in (0.0, 0.8, 4.2, 5.0):  # at 0, 8%, 50% and past the end of its 10 s
        clock.advance(step_s)
        polled = await client.aio.batches.get(name=job.name)
        assert_carried(polled, await raw_job(sim, credentials, job.name))
        seen.append(polled.state)
    assert seen == [types.JobState.JOB_STATE_QUEUED, types.JobState.JOB_STATE_PENDING,
                    types.JobState.JOB_STATE_RUNNING, types.JobState.JOB_STATE_SUCCEEDED]
    done = await client.aio.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED and done.completion_stats.successful_count == 1
    assert_carried(done, await raw_job(sim, credentials, job.name))
    listed = [j async for j in await client.aio.batches.list(config=types.ListBatchJobsConfig(page_size=1))]
    assert [j.name for j in listed] == [job.name]
    deleted = await client.aio.batches.delete(name=job.name)
    assert deleted.done is True and deleted.error is None
    with pytest.raises(genai_errors.ClientError) as gone:
        await client.aio.batches.get(name=job.name)
    assert gone.value.code == 404 and gone.value.status == "NOT_FOUND"


async def test_cancel_goes_through_cancelling_to_cancelled(sim, client, credentials, clock):
    sim.config = SimConfig(seed=3, processing_s=10, cancel_s=2)
    job = await create(sim, client, "gemini")
    clock.advance(5)
    await client.aio.batches.cancel(name=job.name)
    cancelling = await client.aio.batches.get(name=job.name)
    assert cancelling.state == types.JobState.JOB_STATE_CANCELLING
    clock.advance(3)
    cancelled = await client.aio.batches.get(name=job.name)
    assert cancelled.state == types.JobState.JOB_STATE_CANCELLED
    assert_carried(cancelled, await raw_job(sim, credentials, job.name))


@pytest.mark.parametrize(("changes", "at_s", "state"), [
    ({"vertex_paused_rate": 1.0}, 5.0, types.JobState.JOB_STATE_PAUSED),
    ({"vertex_expired_rate": 1.0}, 11.0, types.JobState.JOB_STATE_EXPIRED),
    ({"invalid_rate": 1.0}, 11.0, types.JobState.JOB_STATE_PARTIALLY_SUCCEEDED),
])
async def test_every_other_state_the_simulator_serves_is_a_job_state_of_the_sdk(sim, client, credentials, clock,
                                                                                 changes, at_s, state):
    sim.config = SimConfig(seed=3, processing_s=10, **changes)
    job = await create(sim, client, "claude")
    clock.advance(at_s)
    polled = await client.aio.batches.get(name=job.name)
    assert polled.state == state
    assert_carried(polled, await raw_job(sim, credentials, job.name))


@pytest.mark.parametrize(("kind", "code", "status"), [
    ("rate_limit_error", 429, "RESOURCE_EXHAUSTED"), ("api_error", 500, "INTERNAL"),
    ("timeout_error", 504, "DEADLINE_EXCEEDED"), ("conflict_error", 409, "ABORTED"),
    ("overloaded_error", 503, "UNAVAILABLE"),
])
async def test_each_fault_is_an_error_the_sdk_reads(sim, client, kind, code, status):
    sim.config = SimConfig(seed=3, fail_rate=1.0, fail_kinds=[kind])
    with pytest.raises(genai_errors.APIError) as failed:
        await client.aio.batches.get(name=f"projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs/1")
    assert failed.value.code == code and failed.value.status == status


async def test_a_token_the_endpoint_did_not_issue_is_401_unauthenticated(sim):
    async with aiohttp.ClientSession() as session, session.get(
            f"{sim.url}/v1/projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs",
            headers={"authorization": "Bearer forged"}) as resp:
        body = orjson.loads(await resp.read())
    assert resp.status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
