"""/metrics through prometheus_client: the view's gauges and counters, the histograms, the process
metrics, all read back by Prometheus' own parser."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from batch_scheduler.daemon.metrics import Metrics, MetricsView
from batch_scheduler.job.observe import batch_times

from .helpers import drop, job_flags, running_daemon, state, until

pytestmark = pytest.mark.timeout(20)


def parse(text: str | bytes) -> dict:
    if isinstance(text, bytes):
        text = text.decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family, suffix: str = "") -> dict:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name.endswith(suffix)}


def buckets(family, **labels) -> dict[str, float]:
    return {s.labels["le"]: s.value for s in family.samples
            if s.name.endswith("_bucket") and all(s.labels.get(k) == v for k, v in labels.items())}


def test_the_view_families_parse_and_carry_every_number():
    view = MetricsView(
        start_time_s=1_700_000_000.5, jobs_by_state={"running": 2, "done": 5, "paused": 1},
        requests_by_state={"accepted": 900, "finished": 700, "succeeded": 690, "errored": 10},
        batches_in_flight=3, slots_capacity=8, slots_in_use=3, slots_waiting=4,
        http_calls={("create", "200"): 12, ("retrieve", "429"): 2, ("results", "ClientConnectionError"): 1},
        http_retries={"retrieve": 2}, http_download_bytes=123_456, poll_calls={"retrieve": 40, "list": 3},
        result_bytes=98_765, tokens={"input": 1000, "output": 5000}, spend_usd=0.0375,
        key_checks={"refused": 2, "accepted": 1}, notifications={("webhook", "delivered"): 3})
    fams = parse(Metrics().render(view))
    assert samples(fams["batch_scheduler_jobs"])[(("state", "running"),)] == 2
    assert samples(fams["batch_scheduler_requests"])[(("state", "succeeded"),)] == 690
    assert samples(fams["batch_scheduler_batches_in_flight"]) == {(): 3}
    assert samples(fams["batch_scheduler_slots"]) == {(("kind", "capacity"),): 8, (("kind", "in_use"),): 3,
                                                      (("kind", "waiting"),): 4}
    calls = fams["batch_scheduler_http_calls"]
    assert calls.type == "counter"
    assert samples(calls, "_total")[(("endpoint", "retrieve"), ("status", "429"))] == 2
    assert samples(fams["batch_scheduler_http_retries"], "_total") == {(("endpoint", "retrieve"),): 2}
    assert samples(fams["batch_scheduler_poll_calls"], "_total") == {(("kind", "retrieve"),): 40,
                                                                     (("kind", "list"),): 3}
    assert samples(fams["batch_scheduler_result_bytes"]) == {(): 98_765}
    assert samples(fams["batch_scheduler_tokens"])[(("kind", "output"),)] == 5000
    assert samples(fams["batch_scheduler_spend_usd"]) == {(): 0.0375}
    assert samples(fams["batch_scheduler_key_checks"], "_total")[(("outcome", "refused"),)] == 2
    assert samples(fams["batch_scheduler_notifications"], "_total") == {
        (("kind", "webhook"), ("outcome", "delivered")): 3}
    assert samples(fams["batch_scheduler_up"]) == {(): 1}


def test_observations_land_in_their_buckets_and_process_metrics_are_there():
    m = Metrics()
    m.http_call("create", "200", 0.03)
    m.http_call("create", "200", 0.2)
    m.http_call("retrieve", "429", 0.004)
    m.batch_collected(*batch_times(1000.0, 1000.0 + 90.0, 1000.0 + 90.0 + 0.7))
    m.batch_collected(*batch_times(None, None, 2000.0))  # a batch whose times are unknown is not counted
    fams = parse(m.render(MetricsView()))
    http = fams["batch_scheduler_http_call_duration_seconds"]
    assert http.type == "histogram"
    create = buckets(http, endpoint="create", status="200")
    assert (create["0.025"], create["0.05"], create["0.25"], create["+Inf"]) == (0, 1, 2, 2)
    assert buckets(http, endpoint="retrieve", status="429")["0.005"] == 1
    turnaround = fams["batch_scheduler_batch_turnaround_seconds"]
    assert (buckets(turnaround)["60.0"], buckets(turnaround)["120.0"]) == (0, 1)
    assert samples(turnaround, "_count") == {(): 1} and samples(turnaround, "_sum") == {(): 90.0}
    durable = fams["batch_scheduler_results_durable_delay_seconds"]
    assert (buckets(durable)["0.5"], buckets(durable)["1.0"]) == (0, 1)
    for name in ("process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds",
                 "process_start_time_seconds", "python_info"):
        assert name in fams, name
    assert samples(fams["process_resident_memory_bytes"])[()] > 1_000_000


def test_a_provider_clock_ahead_of_ours_counts_as_no_delay():
    assert batch_times(100.0, 99.0, 98.5) == (0.0, 0.0)


async def test_a_finished_job_shows_its_batches_and_calls_in_the_histograms(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url)) as run, aiohttp.ClientSession() as http:
        drop(spool, "small", 60)  # 3 batches of 20
        await until(lambda: state(spool, "small") == "done", "the job done")
        async with http.get(run.daemon.url + "/metrics") as r:
            assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            fams = parse(await r.text())
    assert samples(fams["batch_scheduler_batch_turnaround_seconds"], "_count") == {(): 3}
    assert samples(fams["batch_scheduler_results_durable_delay_seconds"], "_count") == {(): 3}
    creates = samples(fams["batch_scheduler_http_call_duration_seconds"], "_count")
    assert creates[(("endpoint", "create"), ("status", "200"))] == 3
    assert samples(fams["batch_scheduler_requests"])[(("state", "succeeded"),)] == 60
    assert samples(fams["batch_scheduler_jobs"])[(("state", "done"),)] == 1
