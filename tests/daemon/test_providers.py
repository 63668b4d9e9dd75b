"""The spool daemon with each newer provider: a job dropped into the inbox finishes exactly once."""

from __future__ import annotations

import pytest

from ..setups import NEW_PROVIDERS, batches_of, set_up, use_process_env
from .helpers import KEY, assert_exactly_once, drop, job_flags, running_daemon, state, until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def moto():
    from ..cluster.servers import MotoServer
    with MotoServer() as server:
        yield server


@pytest.mark.parametrize("name", NEW_PROVIDERS)
async def test_a_spooled_job_finishes_exactly_once_with_each_provider(sim, env_dir, tmp_path, monkeypatch, request,
                                                                      name):
    setup = set_up(name, sim, tmp_path, KEY, request.getfixturevalue("moto") if name == "bedrock" else None)
    use_process_env(setup, monkeypatch)
    (env_dir / ".env").write_text("".join(f"{k}={v}\n" for k, v in setup.env.items()))
    spool = tmp_path / "spool"
    flags = job_flags(sim.url, batch_size=setup.batch_size, **setup.flags)
    async with running_daemon(spool, env_dir, flags):
        ids = drop(spool, "job", 3 * setup.batch_size, model=setup.line_model)
        await until(lambda: state(spool, "job") in ("done", "failed", "paused"), "job ended", timeout_s=45)
        assert state(spool, "job") == "done"
    assert_exactly_once(spool, "job", ids)
    made = batches_of(sim, name)
    assert len(made) == 3 and sum(b.n for b in made) == len(ids), "every batch went through the provider once"
