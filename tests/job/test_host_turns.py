"""Jobs of separate processes on one machine and one account (two `batch-scheduler run`s) take turns and rule
out each other's batches through the state directory (state/host.py), as the jobs of one process do in
memory: two jobs whose requests carry the same custom_ids never adopt each other's batch when every create
answer is lost."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace

import orjson
import pytest

from batch_scheduler.job.send.claims import Claims, _Registry
from batch_scheduler.job.send.submitter import Outgoing
from batch_scheduler.state import host
from batch_scheduler.state.host import HostAccounts
from batch_scheduler.state.ledger.sqlite import ChunkKind

from ..helpers import request
from .test_submitter import job

MODELS = ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4")


def process(root, owner: str, ledger_path, account: str = "anthropic|sim|key") -> Claims:
    """What one process of its own sees: its own registry, and the machine's state directory."""
    host = HostAccounts(str(root))
    open(ledger_path, "a").close()  # noqa: SIM115 - the ledger file the job's directory holds
    host.join(owner, account, str(ledger_path))
    return Claims(host.batches_since, registry=_Registry(), gate=host)


async def test_jobs_of_three_processes_sharing_custom_ids_never_adopt_each_others_batch_when_every_create_is_lost(
        sim, tmp_path):
    sim.ctx.config = replace(sim.ctx.config, lost_create_rate=1.0)  # every batch is made, every answer lost
    ids = [f"same-{i}" for i in range(5)]
    root = tmp_path / "state"
    claims = {o: process(root, o, tmp_path / f"{o}.db") for o in "abc"}
    async with job(sim.url, tmp_path / "a.db", provider="anthropic", claims=claims["a"], owner="a") as a, \
            job(sim.url, tmp_path / "b.db", provider="anthropic", claims=claims["b"], owner="b") as b, \
            job(sim.url, tmp_path / "c.db", provider="anthropic", claims=claims["c"], owner="c") as c:
        async def send(one, model: str) -> list[str]:
            lines = [orjson.dumps(request(cid, model=model)) for cid in ids]
            chunk_id = await one.ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=5, nbytes=1_000)
            (done,) = await one.submitter.submit(Outgoing(chunk_id, ChunkKind.INPUT, 0, 0, lines, ids, 1,
                                                          time.time()))
            return sim.ctx.store.batches[done.info.id].models

        for _ in range(3):  # creates of three jobs at once, each answer lost, each looked for
            got = await asyncio.gather(*(send(one, model) for one, model in zip((a, b, c), MODELS, strict=True)))
            assert got == [[model] * 5 for model in MODELS]
        counts = [await one.ledger.acounters() for one in (a, b, c)]
        assert [(n["creates_unknown"], n["batches_adopted"]) for n in counts] == [(3, 3)] * 3


async def test_a_process_waits_for_the_turn_another_holds_says_who_holds_it_and_ends_the_holders_turn(
        tmp_path, monkeypatch, caplog):
    root = tmp_path / "state"
    first, second = process(root, "a", tmp_path / "a.db"), process(root, "b", tmp_path / "b.db")
    entered: list[str] = []

    async def enter(claims: Claims, owner: str) -> None:
        async with claims.turn(owner):
            entered.append(owner)

    monkeypatch.setattr(host, "SAY_WAIT_S", 0.1)
    async with first.turn("a"):
        waiting = asyncio.create_task(enter(second, "b"))
        await asyncio.sleep(0.3)
        assert entered == []  # b's process waits for the account's lock a's holds
        assert first._gate is not None and first._gate.contended("a")  # and says so
    await asyncio.wait_for(waiting, 5)
    assert entered == ["b"]
    said = [r.getMessage() for r in caplog.records if "wait for the turn" in r.getMessage()]
    assert said == [f"job b: creates wait for the turn on this provider account, which pid {os.getpid()}, job a "
                    f"holds (a stopped process holds it until it goes on or ends)"]


def test_a_job_whose_directory_is_gone_is_forgotten_and_an_unwritable_root_is_said_once(tmp_path, caplog):
    root = tmp_path / "state"
    hosts = HostAccounts(str(root))
    for o in "ab":
        open(tmp_path / f"{o}.db", "a").close()  # noqa: SIM115
        hosts.join(o, "acct", str(tmp_path / f"{o}.db"))
    os.unlink(tmp_path / "b.db")
    assert hosts.batches_since("a", 0.0) == set()
    (jobs,) = (root / "accounts").iterdir()
    assert [p.read_text() for p in (jobs / "jobs").iterdir()] == [str(tmp_path / "a.db")]

    blocked = tmp_path / "file"
    blocked.write_text("")
    nowhere = HostAccounts(str(blocked / "state"))  # under a file: cannot be made
    for o in "ab":
        nowhere.join(o, "acct", str(tmp_path / "a.db"))
    said = [r for r in caplog.records if "BATCH_STATE_DIR" in r.getMessage()]
    assert len(said) == 1
    assert nowhere.batches_since("a", 0.0) == set()


@pytest.mark.parametrize("env", ["BATCH_STATE_DIR", "XDG_STATE_HOME"])
def test_the_state_root_comes_from_the_environment(monkeypatch, tmp_path, env):
    from batch_scheduler.state.host import state_root
    monkeypatch.delenv("BATCH_STATE_DIR", raising=False)
    monkeypatch.setenv(env, str(tmp_path))
    assert state_root() == (str(tmp_path) if env == "BATCH_STATE_DIR" else str(tmp_path / "batch-scheduler"))


async def test_a_run_stopped_while_it_lists_itself_for_the_machine_closes_its_files_and_can_run_again(
        sim, tmp_path, monkeypatch):
    """A daemon stopping a job just after it opened: its rejected list, shards and ledger are closed and its
    lock released (before, they stayed open until the process ended), and its listing ends before the run's
    leave."""
    from batch_scheduler.job.engine import Engine, ExitCode

    from ..conftest import fast_settings
    from ..helpers import write_requests

    inp, out = tmp_path / "in.jsonl", tmp_path / "out"
    write_requests(inp, 20)
    listing, listed = asyncio.Event(), []
    loop = asyncio.get_running_loop()
    real_join = HostAccounts.join

    def slow_join(self, *args):
        loop.call_soon_threadsafe(listing.set)
        time.sleep(0.3)
        real_join(self, *args)
        listed.append(args[0])

    monkeypatch.setattr(HostAccounts, "join", slow_join)
    run = asyncio.create_task(Engine(fast_settings(sim.url), str(out), [str(inp)], quiet=True).run())
    await asyncio.wait_for(listing.wait(), 20)
    assert (out / "rejected.jsonl.partial").exists()  # the job is open
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert listed == [str(out)]  # the listing ended before the run did
    assert not (out / "rejected.jsonl.partial").exists()  # the list this run was writing is closed and dropped
    monkeypatch.setattr(HostAccounts, "join", real_join)
    again = await Engine(fast_settings(sim.url), str(out), [str(inp)], quiet=True).run()  # the lock is free
    assert again.exit_code == ExitCode.OK, again.message


async def test_a_state_directory_removed_under_a_running_job_leaves_its_creates_going(tmp_path, caplog):
    """A tidy-up that deletes the state directory while a job runs: its next turn is taken as if it had never
    joined (said once), not an error that stops its creates."""
    import shutil

    root, ledger = tmp_path / "state", tmp_path / "ledger.db"
    ledger.write_bytes(b"")
    accounts = HostAccounts(str(root))
    accounts.join("job", "anthropic|sim|key", str(ledger))
    shutil.rmtree(root)
    await accounts.acquire("job")
    await accounts.release("job")
    assert "cannot keep this machine's jobs per account" in caplog.text


def test_jobs_started_from_several_threads_at_once_share_one_machine_registry(monkeypatch):
    """`run()` called from several threads at once: every job's turn is taken where it joined (one object)."""
    import threading

    from batch_scheduler.job.send import claims as claims_module

    real_init = HostAccounts.__init__

    def slow_init(self, *args, **kwargs):
        time.sleep(0.05)  # the window where a second thread could make its own
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(claims_module, "_HOST", None)
    monkeypatch.setattr(HostAccounts, "__init__", slow_init)
    got: list[HostAccounts] = []
    threads = [threading.Thread(target=lambda: got.append(claims_module.host())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(h) for h in got}) == 1
