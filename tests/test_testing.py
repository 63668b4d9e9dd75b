"""`batch_scheduler.testing`: the simulator for users' own tests."""

from __future__ import annotations

import pytest

import batch_scheduler
from batch_scheduler.testing import simulator

from .helpers import ids_of, read_results, request

FAST = dict(poll_min=0.01, poll_max=0.05, batch_size=20, shards=2, api_key="sk-testing-test")


async def test_testing_simulator_serves_faults_and_keys_for_users_tests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lib_env = tmp_path
    ids = [f"t-{i}" for i in range(60)]
    async with simulator(all_faults=True, seed=3, valid_keys=["sk-mine"]) as url:
        assert url.startswith("http://127.0.0.1:")
        refused = await batch_scheduler.arun([request(c) for c in ids], lib_env / "a", base_url=url, **FAST)
        assert refused.exit_code == 3
        done = await batch_scheduler.arun([request(c) for c in ids], lib_env / "b", base_url=url, max_attempts=8,
                                          **{**FAST, "api_key": "sk-mine"})
    assert done.ok, done.message
    assert sorted(ids_of(read_results(str(lib_env / "b")))) == sorted(ids)
    with pytest.raises(TypeError, match="unexpected keyword argument 'fial_rate'"):
        async with simulator(fial_rate=0.1):
            pass
