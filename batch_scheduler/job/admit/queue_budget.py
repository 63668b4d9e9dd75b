"""What may be in flight at a provider's queue: one budget per queue, shared by every job that uses it.

A queue is one account's processing queue at one provider (per model, where the provider limits
tokens per model). Each has a `LimitLearner` (queue_limit); this adds what is reserved in it, by job,
and who waits. A run has a pool of its own; the daemon gives every job the same pool.

    ticket = await queue.reserve(job, units)   waits for room: the learner's verdict, the job's share
    queue.accepted(ticket)                     the provider took the batch into its queue
    queue.refused(ticket, stated)              it said the queue is full: the units come back, and
                                               nothing more goes until a batch of ours there ends
                                               (unless the limit it stated explains the answer)
    queue.ended(ticket)                        the batch ended (or was never created): units come back
    queue.given_back(ticket)                   the batch was not created, for a reason of another queue:
                                               units come back, nothing learned, a hold kept
    await reserve_all(job, [(q1, u1), (q2, u2)])  room in two queues at once (a batch of a provider that
                                               caps its jobs as well as its tokens or requests)

Fair shares: while other jobs wait for the same queue, a job takes room only if it holds no more of
it than each of them, so room goes to whoever holds least; a job alone, or whose neighbours have
nothing to send, may use all of it (work-conserving).

`Measure` says what a batch weighs in the provider's unit: its request count, or its estimated input
tokens (`pricing.estimate_request` plus each message's few, scaled by what the provider's answers
reported so far). A batch of the models a provider caps by jobs alone (`ProviderSpec.jobs_queue`: Claude
on Vertex) weighs one job in that queue instead; where a provider caps both (Gemini: jobs per project and
tokens per model; Bedrock: jobs per model and requests), a batch takes one job in its jobs queue as well
(`Ticket.jobs`). A jobs queue's limit starts at the documented cap, held from the start, and is learned
down by queue-full answers about jobs like any other (to what was in flight, never below 1).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from batch_scheduler.core.settings import ProviderSpec, Settings
from batch_scheduler.job.admit.queue_limit import BACKOFF_S, LimitLearner, Verdict
from batch_scheduler.job.money.pricing import estimate_request

TOKEN_MARGIN = 0.95  # of a stated token limit, for units we only estimate
REQUESTS = "requests"  # the one queue of a provider that counts requests
JOBS = "jobs"  # the unit of a provider's jobs queue


class TooHeavy(Exception):
    """The batch is heavier than a batch of this queue should be, now that its limit is known (the limit the
    provider stated, or the ceiling found): it is to go in parts."""


@dataclass(eq=False)
class Ticket:
    queue: Queue
    job: str
    units: int
    level: int  # ours in the queue with this batch, when it was admitted
    probe: bool
    confirmed: bool = False
    done: bool = False
    jobs: Ticket | None = None  # the batch's room in its provider's jobs queue, when it counts in both


@dataclass(eq=False)
class Queue:
    key: str  # what the job calls it: "requests", or the model
    unit: str  # "requests" or "tokens"
    learner: LimitLearner
    in_flight: int = 0
    peak: int = 0
    probing: bool = False
    hold_until_end: bool = False  # a queue-full answer came: wait for one of ours to end
    held: Counter = field(default_factory=Counter)  # job -> units
    waiting: Counter = field(default_factory=Counter)  # job -> reservations waiting
    _signal: asyncio.Future | None = None  # done at the next change (waiters wait on it)

    @property
    def limit(self) -> int:
        return self.learner.limit

    def _fair(self, job: str) -> bool:
        mine = self.held[job]
        return all(mine <= self.held[other] for other, n in self.waiting.items() if n > 0 and other != job)

    def try_reserve(self, job: str, units: int) -> Ticket | None:
        """A ticket if a batch of `units` may go now for `job`, else None (nothing changes)."""
        if self.hold_until_end and self.in_flight > 0:
            return None
        if not self._fair(job):
            return None
        verdict = self.learner.verdict(self.in_flight, units, self.probing)
        if verdict is Verdict.WAIT:
            return None
        probe = verdict is Verdict.PROBE
        self.in_flight += units
        self.held[job] += units
        self.peak = max(self.peak, self.in_flight)
        self.probing = self.probing or probe
        return Ticket(self, job, units, self.in_flight, probe)

    def too_heavy(self, units: int, batches: int) -> bool:
        """Whether a batch of `units` is over 1/`batches` of what the queue is known to hold."""
        known = self.learner.stated is not None or self.learner.ceiling is not None
        return known and units > self.learner.part_limit(batches)

    async def reserve(self, job: str, units: int, clock: Callable[[], float] = time.time, *,
                      split_into: int | None = None) -> Ticket:
        """Wait until a batch of `units` may go for `job` (a change in the queue, or a backoff, wakes it).
        With `split_into`, a batch over that share of what the queue is known to hold raises TooHeavy (it is
        to go in parts), also when the limit becomes known while it waits."""
        return (await reserve_all(job, [(self, units)], clock, split_into=split_into))[0]

    def _next_change(self) -> asyncio.Future:
        if self._signal is None or self._signal.done():
            self._signal = asyncio.get_running_loop().create_future()
        return self._signal

    def _wake(self) -> None:
        if self._signal is not None and not self._signal.done():
            self._signal.set_result(None)

    def _release(self, ticket: Ticket) -> None:
        ticket.done = True
        self.in_flight -= ticket.units
        self.held[ticket.job] -= ticket.units
        if self.held[ticket.job] <= 0:
            del self.held[ticket.job]
        if ticket.probe and not ticket.confirmed:
            self.probing = False

    def accepted(self, ticket: Ticket) -> bool:
        """The provider holds the batch; True if what the queue admits grew."""
        if ticket.confirmed or ticket.done:
            return False
        ticket.confirmed = True
        if ticket.probe:
            self.probing = False
        grew = self.learner.accepted(ticket.level)
        self._wake()
        return grew

    def refused(self, ticket: Ticket, stated: int | None) -> None:
        """A queue-full answer for the ticket's batch: its units come back and the learner is told. Unless
        the provider stated its limit and ours passed it (then the learner knows exactly what fits), nothing
        more goes until a batch of ours in the queue has ended."""
        if ticket.done:
            return
        self._release(ticket)
        self.learner.refused(self.in_flight, ticket.units, stated)
        explained = stated is not None and self.in_flight + ticket.units > stated
        self.hold_until_end = self.in_flight > 0 and not explained
        self._wake()

    def ended(self, ticket: Ticket) -> None:
        """The ticket's batch left the queue (or never entered it): its units come back."""
        if ticket.done:
            return
        self._release(ticket)
        self.hold_until_end = False
        self._wake()

    def given_back(self, ticket: Ticket) -> None:
        """The ticket's batch was not created, for a reason that is not this queue's: its units come back,
        and a hold of this queue stays until a batch of ours in it ends."""
        if ticket.done:
            return
        self._release(ticket)
        self._wake()

    def restore(self, ticket_units: int, job: str) -> Ticket:
        """A batch an earlier run left in the queue: held again at once, as accepted."""
        self.in_flight += ticket_units
        self.held[job] += ticket_units
        self.peak = max(self.peak, self.in_flight)
        return Ticket(self, job, ticket_units, self.in_flight, probe=False, confirmed=True)


async def reserve_all(job: str, wants: list[tuple[Queue, int]], clock: Callable[[], float] = time.time, *,
                      split_into: int | None = None) -> list[Ticket]:
    """Wait until a batch may take its units in every one of its queues at once (the first is its queue of
    requests or tokens, a second its provider's jobs queue); room is never held in one while another is
    waited for. `split_into`: TooHeavy as in `Queue.reserve`, of the first queue."""
    for q, _ in wants:
        q.waiting[job] += 1
    try:
        while True:
            first, units = wants[0]
            if split_into and first.too_heavy(units, split_into):
                raise TooHeavy(f"{units:,} {first.unit} is more than the queue holds")
            if (tickets := _try_all(job, wants)) is not None:
                return tickets
            changes = [q._next_change() for q, _ in wants]
            now = clock()
            backoffs = [q.learner.backoff_until - now for q, _ in wants if q.learner.backoff_until > now]
            await asyncio.wait(changes, timeout=min(backoffs) if backoffs else None)
    finally:
        for q, _ in wants:
            q.waiting[job] -= 1
            if not q.waiting[job]:
                del q.waiting[job]
            q._wake()  # a job that stops waiting may give another its turn


def _try_all(job: str, wants: list[tuple[Queue, int]]) -> list[Ticket] | None:
    """Tickets in every queue, or None with nothing changed (what one queue gave is given back)."""
    tickets: list[Ticket] = []
    peaks = [q.peak for q, _ in wants]
    for q, units in wants:
        ticket = q.try_reserve(job, units)
        if ticket is None:
            for taken, peak in zip(tickets, peaks, strict=False):
                taken.queue._release(taken)
                taken.queue.peak = peak
            return None
        tickets.append(ticket)
    return tickets


def account_of(settings: Settings) -> str:
    """Which provider account a job's queue belongs to: provider, URL and a digest of the key (the key
    itself is never kept), so jobs of one account share a queue and jobs of two accounts do not."""
    digest = hashlib.sha256(settings.api_key.encode()).hexdigest()[:12]
    return f"{settings.provider}|{settings.base_url}|{digest}"


def learner_for(spec: ProviderSpec, key: str, cap: int | None, start: int | None = None, *,
                clock: Callable[[], float] = time.time, backoff_s: tuple[float, float] = BACKOFF_S
                ) -> tuple[str, LimitLearner]:
    """(unit, a new learner) of the queue `key`: the provider's jobs queue, whose documented cap is held from
    the start and is also the most it may learn (the user's cap is of requests or tokens), or its queue of
    requests or tokens, learned from `start` (the documented lowest tier) up to `cap` or the highest tier."""
    jobs = spec.jobs_queue
    if jobs is not None and jobs.owns(key):
        learner = LimitLearner(start=jobs.limit, cap=jobs.limit, backoff_s=backoff_s, clock=clock)
        learner.confirmed = jobs.limit
        return JOBS, learner
    margin = TOKEN_MARGIN if spec.queue_unit == "tokens" else 1.0
    return spec.queue_unit, LimitLearner(start=cap or start or spec.queue_start, cap=cap or spec.queue_max,
                                         margin=margin, backoff_s=backoff_s, clock=clock)


class QueuePool:
    """The queues of every account and model in use: one per run, or one for all of a daemon's jobs."""

    def __init__(self, clock: Callable[[], float] = time.time, *, start: int | None = None):
        self.clock = clock
        self._start = start  # where learning starts, in place of the provider's documented lowest tier
        self._queues: dict[tuple[str, str], Queue] = {}

    def queue(self, account: str, key: str, spec: ProviderSpec, cap: int | None, restore: object = None, *,
              backoff_s: tuple[float, float] = BACKOFF_S) -> Queue:
        """The queue `key` ("requests", or a model) of `account`, made on first use; `restore` is what a
        job's ledger kept of it (used when this pool knows nothing of it yet)."""
        q = self._queues.get((account, key))
        if q is None:
            unit, learner = learner_for(spec, key, cap, self._start, clock=self.clock, backoff_s=backoff_s)
            learner.restore(restore)
            q = self._queues[(account, key)] = Queue(key, unit, learner)
        return q

    def snapshot(self) -> list[dict[str, object]]:
        """Every queue in use: its key, unit, what is in flight, the limit, and what each job holds."""
        return [{"key": q.key, "unit": q.unit, "in_flight": q.in_flight, "limit": q.limit, "held": dict(q.held)}
                for q in self._queues.values()]


PER_REQUEST_TOKENS = 3  # what a chat request adds to its messages' text (the reply's priming)
PER_MESSAGE_TOKENS = 4  # and each message (its role and separators), as OpenAI's own counting guide has it


def request_tokens(obj: dict, provider: str) -> tuple[str | None, int]:
    """(model, input tokens the provider will count) of one request line, estimated: the text's tokens
    (`pricing.estimate_request`) plus the few each message and the request add."""
    model, tokens, _ = estimate_request(obj, provider)
    params = obj.get("body") if isinstance(obj.get("body"), dict) else obj.get("params")
    messages = params.get("messages") if isinstance(params, dict) else None
    overhead = PER_REQUEST_TOKENS + PER_MESSAGE_TOKENS * len(messages) if isinstance(messages, list) else 0
    return model, tokens + overhead


class Measure:
    """What a batch weighs in its provider's unit, and in which of its queues."""

    def __init__(self, spec: ProviderSpec):
        self.unit = spec.queue_unit
        self._provider = spec.name
        self._jobs = spec.jobs_queue
        self._actual = 0.0  # input tokens the provider reported for answered requests
        self._estimated = 0.0  # our estimate for the same requests

    @property
    def ratio(self) -> float:
        """Provider tokens per estimated token, from the answers so far (1.0 before any)."""
        if self._estimated < 1:
            return 1.0
        return min(4.0, max(0.25, self._actual / self._estimated))

    def of(self, lines: list[bytes]) -> tuple[str, int, int]:
        """(queue key, units, our raw estimate) of a batch of request lines."""
        if self._jobs is not None and self._jobs.alone and lines and self._jobs.holds(_model_of(lines[0])):
            return self._jobs.key, 1, 1  # one model per batch: the first line's is the batch's
        if self.unit != "tokens":
            return REQUESTS, len(lines), len(lines)
        by_model: dict[str | None, int] = {}
        for line in lines:
            model, tokens = request_tokens(orjson.loads(line), self._provider)
            by_model[model] = by_model.get(model, 0) + tokens
        model = max(by_model, key=by_model.__getitem__) if by_model else None
        estimate = sum(by_model.values())
        return model or "(no model)", max(1, math.ceil(estimate * self.ratio)), estimate

    def observe(self, estimate: int, requests: int, answered: int, input_tokens: float) -> None:
        """A collected batch: `answered` of its `requests` reported `input_tokens` (cache included)."""
        if self.unit != "tokens" or requests <= 0 or answered <= 0 or input_tokens <= 0:
            return
        self._actual += input_tokens
        self._estimated += estimate * answered / requests


def _model_of(line: bytes) -> object:
    """The model a kept request line names (`body.model`, or `params.model`), or None."""
    obj = orjson.loads(line)
    body = obj.get("body") if isinstance(obj.get("body"), dict) else obj.get("params")
    return body.get("model") if isinstance(body, dict) else None
