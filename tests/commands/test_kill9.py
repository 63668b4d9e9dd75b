"""Kill -9 at random points, at least 20 times, then finish: exactly once, nothing partial, paid once."""

from tests.soak import soak


def test_twenty_sigkills_lose_nothing_and_repeat_nothing(tmp_path):
    r = soak(kills=20, requests=4_000, seed=11, workdir=str(tmp_path), processing_s=2.5, batch_size=100)
    assert r.kills == 20, "the job finished before it could be killed 20 times"
    assert r.exit_code == 0
    assert r.unique == r.expected
    assert r.duplicates == 0
    assert r.partial_lines == 0
    assert r.overpaid <= 0.05, (r.paid, r.retried)
