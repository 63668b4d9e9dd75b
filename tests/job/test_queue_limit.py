"""The queue limit learner against a scripted clock and scripted provider answers."""

from __future__ import annotations

import pytest

from batch_scheduler.job.admit.queue_limit import REPROBE_S, LimitLearner, Verdict

GO, PROBE, WAIT = Verdict.GO, Verdict.PROBE, Verdict.WAIT
BATCH = 10_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def learner(clock, start=200_000, cap=500_000, **kw) -> LimitLearner:
    return LimitLearner(start=start, cap=cap, clock=clock, backoff_s=(5.0, 300.0), **kw)


def fill(lr: LimitLearner, until_refused_at: int | None, stated: int | None = None, batch: int = BATCH) -> int:
    """Send batches one after another as the verdicts allow, the provider holding up to `until_refused_at`
    (None: everything); nothing ends. Returns what ended up in flight."""
    in_flight = 0
    for _ in range(1_000):
        verdict = lr.verdict(in_flight, batch, probing=False)
        if verdict is WAIT:
            return in_flight
        if until_refused_at is not None and in_flight + batch > until_refused_at:
            lr.refused(in_flight, batch, stated)
            continue
        in_flight += batch
        lr.accepted(in_flight)
    raise AssertionError("never stopped")


def test_grows_past_the_documented_start_while_nothing_is_refused_and_stops_at_the_hard_cap(clock):
    lr = learner(clock)
    assert lr.limit == 200_000  # before anything is learned: the documented lowest tier
    assert fill(lr, None) == 500_000
    assert lr.limit == lr.confirmed == 500_000
    assert lr.verdict(500_000, 1, probing=False) is WAIT  # never past the hard cap
    assert lr.queue_full == 0


def test_a_limit_below_the_start_costs_one_queue_full_answer_and_is_taken_as_stated(clock):
    lr = learner(clock)
    assert fill(lr, 100_000, stated=100_000) == 100_000
    assert lr.queue_full == 1
    assert lr.limit == 100_000 and lr.stated == 100_000
    assert lr.verdict(90_000, BATCH, probing=False) is GO  # refilled freely once batches end
    assert lr.verdict(100_000, BATCH, probing=False) is WAIT


def test_without_a_stated_limit_it_drops_to_what_the_provider_holds_and_does_not_probe_again_soon(clock):
    lr = learner(clock)
    assert fill(lr, 250_000) == 250_000  # probed 260,000: refused
    assert lr.queue_full == 1 and lr.limit == 250_000 and lr.ceiling == 260_000
    assert lr.verdict(250_000, BATCH, probing=False) is WAIT
    clock.now += REPROBE_S - 1
    assert lr.verdict(250_000, BATCH, probing=False) is WAIT
    clock.now += 2  # the ceiling is forgotten: one probe above it may go
    assert lr.verdict(250_000, BATCH, probing=False) is PROBE


def test_above_what_was_held_one_probe_at_a_time(clock):
    lr = learner(clock)
    assert lr.verdict(0, BATCH, probing=False) is PROBE
    assert lr.verdict(BATCH, BATCH, probing=True) is WAIT  # the first has no answer yet
    lr.accepted(BATCH)
    assert lr.verdict(0, BATCH, probing=False) is GO  # 10,000 is known to fit
    assert lr.verdict(BATCH, BATCH, probing=False) is PROBE


def test_a_refusal_with_several_of_ours_queued_keeps_what_is_held_when_others_fill_the_queue(clock):
    lr = learner(clock)
    fill(lr, None)
    lr.refused(300_000, BATCH, stated=500_000)  # ours 310,000, under the stated limit: others hold the rest
    assert lr.limit == 300_000 and lr.ceiling == 310_000


def test_a_refusal_with_nothing_of_ours_queued_learns_nothing_and_backs_off(clock):
    lr = learner(clock)
    fill(lr, None)
    lr.refused(0, BATCH, stated=500_000)
    assert lr.confirmed == 500_000 and lr.ceiling is None  # not mistaken for a small queue
    assert lr.verdict(0, BATCH, probing=False) is WAIT
    clock.now += 5.0
    assert lr.verdict(0, BATCH, probing=False) is GO
    lr.refused(0, BATCH)
    clock.now += 5.0
    assert lr.verdict(0, BATCH, probing=False) is WAIT  # 10 s the second time
    clock.now += 5.0
    assert lr.verdict(0, BATCH, probing=False) is GO
    assert lr.alone == 2
    lr.accepted(BATCH)
    assert lr.alone == 0


def test_a_batch_alone_over_the_stated_limit_is_to_be_split(clock):
    lr = learner(clock, start=2_000_000, cap=15_000_000_000, margin=0.95)
    lr.refused(0, 12_000_000, stated=2_000_000)
    assert lr.ceiling == 2_000_001 and lr.backoff_until == 0 and lr.limit == 1_900_000
    assert lr.part_limit(8) == 237_500  # an eighth of 95% of the stated limit


def test_the_hard_cap_is_where_it_starts_and_is_never_passed(clock):
    lr = learner(clock, start=300_000, cap=300_000)
    assert lr.limit == 300_000
    assert fill(lr, None) == 300_000
    lr.accepted(400_000)  # even a batch that went alone does not raise it past the cap
    assert lr.confirmed == 300_000


def test_what_was_learned_is_kept_for_a_resumed_run(clock):
    lr = learner(clock)
    fill(lr, 120_000, stated=120_000)
    resumed = learner(clock)
    resumed.restore(lr.to_doc())
    assert resumed.limit == 120_000 and resumed.stated == 120_000 and resumed.queue_full == 1
    assert resumed.verdict(110_000, BATCH, probing=False) is GO  # no probe needed to refill
    assert resumed.verdict(120_000, BATCH, probing=False) is WAIT
    clock.now += REPROBE_S + 1
    assert resumed.verdict(120_000, BATCH, probing=False) is PROBE


def test_a_resumed_run_never_starts_past_a_lower_hard_cap_and_ignores_an_unreadable_record(clock):
    lr = learner(clock, start=100_000, cap=100_000)
    lr.restore({"confirmed": 400_000, "ceiling": None})
    assert lr.confirmed == 100_000
    fresh = learner(clock)
    fresh.restore({"confirmed": "lots", "ceiling": -3, "refused_at": True})
    assert fresh.confirmed == 0 and fresh.ceiling is None and fresh.limit == 200_000
