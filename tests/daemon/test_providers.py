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


async def test_a_spooled_bedrock_job_takes_its_aws_keys_from_env_file_alone_and_keeps_them_out_of_every_file(
        sim, env_dir, tmp_path, monkeypatch, moto, caplog):
    """botocore reads the process environment; the daemon reads `.env` too and hands botocore what it holds
    (keys, session token, region, S3's endpoint), writing none of it anywhere: no log, no spool file."""
    setup = set_up("bedrock", sim, tmp_path, KEY, moto)
    for name in (*setup.process_env, "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK", "AWS_REGION",
                 "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    missing = tmp_path / "no-such-aws-file"  # no shared config or credentials of the machine's in the way
    monkeypatch.setenv("AWS_CONFIG_FILE", str(missing))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(missing))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    secret, token = "dotenv-secret-0123456789abcdef", "dotenv-session-token-0123456789abcdef"
    env = {"AWS_ACCESS_KEY_ID": setup.process_env["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_SESSION_TOKEN": token, "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL_S3": setup.process_env["AWS_ENDPOINT_URL_S3"]}
    (env_dir / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    spool = tmp_path / "spool"
    flags = job_flags(sim.url, batch_size=setup.batch_size, **setup.flags)
    async with running_daemon(spool, env_dir, flags):
        ids = drop(spool, "job", 2 * setup.batch_size, model=setup.line_model)
        await until(lambda: state(spool, "job") in ("done", "failed", "paused"), "job ended", timeout_s=45)
        assert state(spool, "job") == "done"
    assert_exactly_once(spool, "job", ids)
    assert len(batches_of(sim, "bedrock")) == 2
    for path in (p for p in spool.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert secret.encode() not in data and token.encode() not in data, path
    assert not [r for r in caplog.records if secret in r.getMessage() or token in r.getMessage()]
