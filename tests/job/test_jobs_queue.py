"""A provider that caps its jobs as well as its tokens or requests (Gemini: jobs per project, tokens per
model; Bedrock: jobs per model): a batch takes room in both, and a queue-full answer about jobs is learned in
the jobs queue only, never as a smaller token or request limit."""

from __future__ import annotations

import asyncio

import pytest

from batch_scheduler.core.settings import Settings
from batch_scheduler.job.admit.queue_budget import QueuePool
from batch_scheduler.job.admit.queues import JobQueues, Weight
from batch_scheduler.job.observe import JobStats
from batch_scheduler.providers.aws.bedrock import SPEC as BEDROCK
from batch_scheduler.providers.google.gemini import SPEC as GEMINI
from batch_scheduler.state import open_ledger

MODEL = "gemini-2.5-flash"
CLAUDE = "anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture
async def ledger(tmp_path):
    led = open_ledger(str(tmp_path / "ledger.db"))
    yield led
    await asyncio.to_thread(led.close)


def gemini_queues(pool, ledger, job="job-a") -> JobQueues:
    settings = Settings(api_key="k", base_url="https://gemini.example", provider="gemini")
    return JobQueues(pool, settings, GEMINI, ledger, JobStats(), job=job)


async def sent(queues: JobQueues, n: int, tokens: int = 1_000) -> list:
    """n batches of `tokens` each, admitted and held by the provider."""
    tickets = []
    for _ in range(n):
        ticket = await queues.reserve(Weight(MODEL, tokens, tokens, 10))
        await queues.accepted(ticket)
        tickets.append(ticket)
    return tickets


async def test_a_batch_takes_a_job_of_the_project_and_tokens_of_its_model(ledger):
    queues = gemini_queues(QueuePool(), ledger)
    first, _ = await sent(queues, 2)
    jobs = queues.queue("batch jobs")
    assert (jobs.unit, jobs.limit, jobs.in_flight) == ("jobs", 100, 2)  # Gemini's 100 batch jobs a project
    assert queues.queue(MODEL).in_flight == 2_000
    queues.ended(first, validated=True)
    assert (jobs.in_flight, queues.queue(MODEL).in_flight) == (1, 1_000)


async def test_a_full_jobs_answer_holds_the_next_create_and_leaves_the_token_limit_alone(ledger):
    queues = gemini_queues(QueuePool(), ledger)
    first, *_ = await sent(queues, 3)
    tokens = queues.queue(MODEL)
    before = tokens.limit
    fourth = await queues.reserve(Weight(MODEL, 1_000, 1_000, 10))
    await queues.refused(fourth, None, token_limit=False, chunk_id=1, note="queue full at create", jobs=True)
    jobs = queues.queue("batch jobs")
    assert (jobs.limit, jobs.hold_until_end) == (3, True)  # what was in flight when the answer came
    assert (tokens.limit, tokens.learner.ceiling, tokens.learner.queue_full, tokens.in_flight) == \
        (before, None, 0, 3_000)
    assert queues.summary()["queue_full_answers"] == 1
    waiter = asyncio.ensure_future(queues.reserve(Weight(MODEL, 1_000, 1_000, 10)))
    await asyncio.sleep(0)
    assert not waiter.done()  # the next create waits for one of our jobs to end
    queues.ended(first, validated=True)
    again = await asyncio.wait_for(waiter, 5)
    assert again.units == 1_000 and again.jobs is not None and jobs.in_flight == 3


async def test_a_full_tokens_answer_is_learned_by_the_models_queue_and_gives_the_job_back(ledger):
    queues = gemini_queues(QueuePool(), ledger)
    await sent(queues, 2, tokens=600_000)
    third = await queues.reserve(Weight(MODEL, 600_000, 600_000, 10))
    await queues.refused(third, 1_500_000, token_limit=False, chunk_id=1, note="enqueued token limit")
    jobs, tokens = queues.queue("batch jobs"), queues.queue(MODEL)
    assert (jobs.limit, jobs.in_flight, jobs.hold_until_end, jobs.learner.queue_full) == (100, 2, False, 0)
    assert tokens.learner.stated == 1_500_000 and tokens.limit == 1_425_000  # 95% of what it stated


async def test_a_full_jobs_answer_with_none_of_ours_running_never_brings_the_limit_below_one(ledger):
    queues = gemini_queues(QueuePool(), ledger)
    first = await queues.reserve(Weight(MODEL, 1_000, 1_000, 10))
    await queues.refused(first, None, token_limit=False, chunk_id=1, note="queue full at create", jobs=True)
    jobs = queues.queue("batch jobs")
    assert jobs.limit == 100 and jobs.learner.alone == 1  # full of others' jobs: wait, learn nothing
    assert jobs.in_flight == 0 and not jobs.hold_until_end and jobs.learner.backoff_until > 0


async def test_bedrock_counts_jobs_per_model_and_a_restored_batch_holds_its_job(ledger):
    pool = QueuePool()

    def bedrock(model: str, job: str) -> JobQueues:
        settings = Settings(api_key="k", base_url="https://bedrock.example", provider="bedrock", model=model)
        return JobQueues(pool, settings, BEDROCK, ledger, JobStats(), job=job)

    claude, nova = bedrock(CLAUDE, "job-a"), bedrock("amazon.nova-lite-v1:0", "job-b")
    ticket = claude.restore("requests", 100)  # left at the provider by an earlier run
    await nova.reserve(Weight("requests", 100, 100, 100))
    assert claude.queue(f"jobs of {CLAUDE}").in_flight == 1 and ticket.jobs is not None
    assert nova.queue("jobs of amazon.nova-lite-v1:0").in_flight == 1  # one quota per model
    assert claude.queue("requests") is nova.queue("requests")  # one account's queue of requests
    assert claude.queue(f"jobs of {CLAUDE}").limit == 20  # Bedrock's default jobs in progress per model
