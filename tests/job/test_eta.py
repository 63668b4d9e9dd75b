"""Honest time on a scripted clock: the ETA counts retry waits and the observed turnaround, never 0 s
while work remains, and says what the tail waits for."""

from __future__ import annotations

from datetime import UTC, datetime

from batch_scheduler.job.observe import JobStats
from batch_scheduler.job.view.progress import bar_line
from batch_scheduler.job.view.status import tail_of
from batch_scheduler.state.ledger.sqlite import ChunkKind, ChunkRow, ChunkState

WALL = datetime(2025, 7, 1, 2, 0, tzinfo=UTC).timestamp()  # 02:00 UTC


def almost_done(**changes) -> JobStats:
    """996 of 1,000 finished in 40 s: the rate alone says the rest takes 0.16 s."""
    stats = JobStats(started=0.0, accepted=1_000, reading_done=True, finished=996)
    for k, v in changes.items():
        setattr(stats, k, v)
    return stats


def test_the_rate_alone_never_makes_the_eta_0s_while_requests_remain():
    assert almost_done().eta_s(now=40.0, wall=WALL) == 1.0
    assert "eta 1s" in bar_line(almost_done(), now=40.0)


def test_parked_requests_add_their_wait_and_a_round_trip_to_the_eta():
    stats = almost_done(waiting_retry=4, next_retry_at=WALL + 14 * 60, turnaround_s=56 * 60.0)
    assert stats.eta_s(now=40.0, wall=WALL) == 70 * 60
    assert stats.tail_text(WALL) == ("4 request(s) wait for another attempt, next batch at 02:14, expected back "
                                     "about 03:10")


def test_without_an_observed_turnaround_the_tail_says_when_the_next_batch_goes():
    stats = almost_done(waiting_retry=37, next_retry_at=WALL - 5)
    assert stats.tail_text(WALL) == "37 request(s) wait for another attempt, next batch at 02:00"
    assert stats.eta_s(now=40.0, wall=WALL) == 1.0
    assert almost_done().tail_text(WALL) == ""


def row(cid: int, submitted: float, ended: float | None, state: ChunkState) -> ChunkRow:
    return ChunkRow(id=cid, kind=ChunkKind.INPUT, root_seq=cid, skip=0, take=100, start_file=0, start_pos=0,
                    start_line=0, end_file=0, end_pos=0, nbytes=0, state=state, batch_id=f"b{cid}", adopted=0,
                    attempt=1, intent_at=submitted, submitted_at=submitted, ended_at=ended, collected_at=ended,
                    est_cost=0.0, note=None)


def test_status_expects_the_batches_out_back_one_observed_turnaround_after_their_create():
    done = [row(1, WALL - 7200, WALL - 3600, ChunkState.COLLECTED), row(2, WALL - 7000, WALL - 3400,
                                                                          ChunkState.COLLECTED)]
    out = [row(3, WALL - 600, None, ChunkState.SUBMITTED)]
    tail = tail_of(done + out, out, 0, WALL)
    assert tail == {"turnaround_s": 3600.0, "back_in_s": 3000.0,
                    "text": "1 batch(es) out, expected back about 02:50 UTC"}
    waiting = tail_of(done, [], 37, WALL)
    assert waiting["text"] == "37 request(s) wait for another attempt, expected back about 03:00 UTC"
    assert tail_of([], [], 0, WALL) == {"turnaround_s": None, "back_in_s": None, "text": ""}
