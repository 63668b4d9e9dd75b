"""The budget of a provider queue shared by jobs: waiting for room, fair shares, what a batch weighs."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import orjson

from batch_scheduler.core.settings import JobsQueue, Settings
from batch_scheduler.job.admit.queue_budget import Measure, QueuePool, account_of, reserve_all
from batch_scheduler.providers.anthropic.provider import SPEC as ANTHROPIC
from batch_scheduler.providers.google.gemini import SPEC as GEMINI
from batch_scheduler.providers.openai.provider import SPEC as OPENAI


def queue(cap=300, pool=None):
    return (pool or QueuePool()).queue("acct", "requests", ANTHROPIC, cap)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_batch_waits_for_room_and_goes_when_one_ends():
    q = queue()
    a = q.try_reserve("job", 100)
    q.accepted(a)
    b, c = q.try_reserve("job", 100), None
    q.accepted(b)
    c = q.try_reserve("job", 100)
    q.accepted(c)
    waiter = asyncio.ensure_future(q.reserve("job", 100))
    await settle()
    assert not waiter.done() and q.in_flight == 300  # the hard cap: 300 requests
    q.ended(a)
    ticket = await asyncio.wait_for(waiter, 5)
    assert ticket.units == 100 and q.in_flight == 300


async def test_after_a_queue_full_answer_nothing_goes_until_a_batch_of_ours_ends():
    q = queue(cap=500)
    first = q.try_reserve("job", 100)
    q.accepted(first)
    second = q.try_reserve("job", 100)
    q.accepted(second)
    third = q.try_reserve("job", 100)
    q.refused(third, stated=None)  # the provider holds 200 of ours, no more
    assert q.limit == 200 and q.hold_until_end
    waiter = asyncio.ensure_future(q.reserve("job", 50))
    await settle()
    assert not waiter.done()
    q.ended(first)
    assert (await asyncio.wait_for(waiter, 5)).units == 50


def test_a_queue_full_answer_the_stated_limit_explains_lets_what_fits_under_it_go_at_once():
    q = QueuePool().queue("acct", "gpt-4o-mini", OPENAI, None)
    first = q.try_reserve("job", 13_000_000)
    q.accepted(first)
    second = q.try_reserve("job", 13_000_000)  # 26,000,000 of ours: over the model's 20,000,000
    q.refused(second, stated=20_000_000)
    assert not q.hold_until_end and q.limit == 19_000_000  # 95% of the stated limit (our tokens are estimates)
    assert q.try_reserve("job", 2_000_000) is not None  # a part that fits goes without waiting for an end
    assert q.try_reserve("job", 5_000_000) is None


async def test_room_goes_to_the_job_holding_least_and_a_job_alone_uses_all_of_it():
    q = queue(cap=400)
    held = []
    for _ in range(4):  # job a alone: it may take everything
        t = q.try_reserve("a", 100)
        q.accepted(t)
        held.append(t)
    assert q.held["a"] == 400
    b_wait = asyncio.ensure_future(q.reserve("b", 100))
    a_wait = asyncio.ensure_future(q.reserve("a", 100))
    await settle()
    q.ended(held.pop())
    await settle()
    assert b_wait.done() and not a_wait.done()  # b holds nothing: the freed room is b's
    q.ended(held.pop())
    got = await asyncio.wait_for(a_wait, 5)  # a and b hold 300 and 100; b waits no more: a may
    assert got.job == "a" and q.held == {"a": 300, "b": 100}


def test_jobs_of_one_account_share_a_queue_and_two_accounts_do_not():
    pool = QueuePool()
    one = Settings(api_key="sk-one", base_url="https://api.example")
    other = Settings(api_key="sk-two", base_url="https://api.example")
    assert pool.queue(account_of(one), "requests", ANTHROPIC, None) is \
        pool.queue(account_of(Settings(api_key="sk-one", base_url="https://api.example")), "requests", ANTHROPIC, None)
    assert pool.queue(account_of(one), "requests", ANTHROPIC, None) is not \
        pool.queue(account_of(other), "requests", ANTHROPIC, None)
    assert "sk-one" not in account_of(one)


def test_a_batch_weighs_its_requests_or_its_estimated_tokens_scaled_by_what_answers_reported():
    requests = [orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                              "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 350}]}})
                for i in range(10)]
    assert Measure(ANTHROPIC).of(requests) == ("requests", 10, 10)
    tokens = Measure(OPENAI)
    assert tokens.of(requests) == ("gpt-4o-mini", 1_070, 1_070)  # 350 characters ~100 tokens, and 7 for the message
    tokens.observe(1_070, requests=10, answered=5, input_tokens=642)  # the provider counted 128.4 each
    assert tokens.of(requests) == ("gpt-4o-mini", 1_284, 1_070)


def two_queues(jobs_limit=2):
    """A Gemini-like account's token queue of one model and its jobs queue (a batch counts in both)."""
    spec = replace(GEMINI, jobs_queue=JobsQueue("batch jobs", "", jobs_limit, alone=False))
    pool = QueuePool()
    return pool.queue("acct", "gemini-2.5-flash", spec, None), pool.queue("acct", "batch jobs", spec, None)


async def test_a_batch_in_two_queues_waits_for_room_in_both_and_holds_none_while_it_waits():
    tokens, jobs = two_queues()
    assert (jobs.unit, jobs.limit) == ("jobs", 2)  # the documented cap, held from the start
    held = []
    for _ in range(2):
        both = await reserve_all("job", [(tokens, 1_000), (jobs, 1)])
        for t in both:
            t.queue.accepted(t)
        held.append(both)
    waiter = asyncio.ensure_future(reserve_all("job", [(tokens, 1_000), (jobs, 1)]))
    await settle()
    assert not waiter.done()  # the token queue has room, the jobs queue none
    assert (tokens.in_flight, tokens.peak, dict(tokens.held)) == (2_000, 2_000, {"job": 2_000})  # nothing kept there
    assert tokens.waiting["job"] == jobs.waiting["job"] == 1
    for t in held.pop():
        t.queue.ended(t)
    got = await asyncio.wait_for(waiter, 5)
    assert [(t.queue, t.units) for t in got] == [(tokens, 1_000), (jobs, 1)]
    assert (tokens.in_flight, jobs.in_flight) == (2_000, 2) and not tokens.waiting and not jobs.waiting


async def test_a_batch_in_two_queues_waits_for_the_token_queue_too():
    tokens, jobs = two_queues(jobs_limit=5)
    first = await reserve_all("job", [(tokens, 600_000), (jobs, 1)])
    for t in first:
        t.queue.accepted(t)
    tokens.refused(tokens.try_reserve("job", 600_000), stated=1_000_000)  # the model holds 1,000,000 tokens
    waiter = asyncio.ensure_future(reserve_all("job", [(tokens, 600_000), (jobs, 1)]))
    await settle()
    assert not waiter.done() and jobs.in_flight == 1  # no job taken while the tokens wait
    for t in first:
        t.queue.ended(t)
    got = await asyncio.wait_for(waiter, 5)
    assert (tokens.in_flight, jobs.in_flight) == (600_000, 1) and got[1].queue is jobs


def test_a_ticket_given_back_keeps_its_queues_hold_and_teaches_nothing():
    tokens, jobs = two_queues(jobs_limit=5)
    for q, units in ((tokens, 1_000), (jobs, 1)):
        q.accepted(q.try_reserve("job", units))
    t, j = tokens.try_reserve("job", 1_000), jobs.try_reserve("job", 1)
    jobs.refused(j, stated=None)  # the provider runs our one job, no more
    tokens.given_back(t)  # the batch never reached the token queue: nothing to learn there
    assert (jobs.limit, jobs.hold_until_end) == (1, True)
    assert (tokens.in_flight, tokens.learner.ceiling, tokens.learner.queue_full, tokens.hold_until_end) == \
        (1_000, None, 0, False)
    held = jobs.try_reserve("job", 1)
    assert held is None  # the next create waits for a job of ours to end
    other = tokens.try_reserve("job", 1_000)
    tokens.given_back(other)
    assert not tokens.hold_until_end and jobs.hold_until_end  # a give-back is not an end
