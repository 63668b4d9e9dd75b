"""/metrics is the Prometheus text format: what we write by hand, Prometheus' own parser reads back."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batch_scheduler.daemon.metrics import Family, MetricsView, daemon_families, format_value, render

pytestmark = pytest.mark.timeout(20)


def parse(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family) -> dict:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


def test_label_values_with_quotes_backslashes_and_newlines_survive_the_parser():
    text = render([Family("x_things", "gauge", 'help with "quotes" and \\ and\nnewline')
                   .add(3, name='a "quoted" name', path="C:\\dir", note="two\nlines")])
    fam = parse(text)["x_things"]
    assert fam.type == "gauge"
    assert fam.documentation == 'help with "quotes" and \\ and\nnewline'
    assert samples(fam) == {(("name", 'a "quoted" name'), ("note", "two\nlines"), ("path", "C:\\dir")): 3.0}


def test_counters_are_named_total_and_read_back_as_counters():
    text = render([Family("x_calls_total", "counter", "calls").add(7, endpoint="create", status="200")])
    fam = parse(text)["x_calls"]
    assert fam.type == "counter"
    assert [(s.name, s.value) for s in fam.samples] == [("x_calls_total", 7.0)]


@pytest.mark.parametrize("name, kind", [("x_calls", "counter"), ("bad-name", "gauge"), ("x", "histogram")])
def test_a_family_the_format_cannot_carry_is_refused(name, kind):
    with pytest.raises(ValueError):
        Family(name, kind, "help")


def test_a_bad_label_name_is_refused():
    with pytest.raises(ValueError):
        Family("x", "gauge", "h").add(1, **{"bad-label": "v"})


@pytest.mark.parametrize("value, text", [(3, "3"), (2.0, "2"), (0.25, "0.25"), (float("nan"), "NaN"),
                                         (float("inf"), "+Inf"), (True, "1")])
def test_values_are_written_as_prometheus_reads_them(value, text):
    assert format_value(value) == text


def test_the_daemon_families_parse_and_carry_every_number():
    view = MetricsView(
        start_time_s=1_700_000_000.5, jobs_by_state={"running": 2, "done": 5, "paused": 1},
        requests_by_state={"accepted": 900, "finished": 700, "succeeded": 690, "errored": 10},
        batches_in_flight=3, slots_capacity=8, slots_in_use=3, slots_waiting=4,
        http_calls={("create", "200"): 12, ("retrieve", "429"): 2, ("results", "ClientConnectionError"): 1},
        http_retries={"retrieve": 2}, http_download_bytes=123_456, poll_calls={"retrieve": 40, "list": 3},
        result_bytes=98_765, tokens={"input": 1000, "output": 5000}, spend_usd=0.0375,
        key_checks={"refused": 2, "accepted": 1})
    fams = parse(render(daemon_families(view)))
    assert samples(fams["batch_scheduler_jobs"])[(("state", "running"),)] == 2
    assert samples(fams["batch_scheduler_requests"])[(("state", "succeeded"),)] == 690
    assert samples(fams["batch_scheduler_batches_in_flight"]) == {(): 3}
    assert samples(fams["batch_scheduler_slots"]) == {(("kind", "capacity"),): 8, (("kind", "in_use"),): 3,
                                                      (("kind", "waiting"),): 4}
    calls = fams["batch_scheduler_http_calls"]
    assert calls.type == "counter"
    assert samples(calls)[(("endpoint", "retrieve"), ("status", "429"))] == 2
    assert samples(fams["batch_scheduler_http_retries"]) == {(("endpoint", "retrieve"),): 2}
    assert samples(fams["batch_scheduler_poll_calls"]) == {(("kind", "retrieve"),): 40, (("kind", "list"),): 3}
    assert samples(fams["batch_scheduler_result_bytes"]) == {(): 98_765}
    assert samples(fams["batch_scheduler_tokens"])[(("kind", "output"),)] == 5000
    assert samples(fams["batch_scheduler_spend_usd"]) == {(): 0.0375}
    assert samples(fams["batch_scheduler_key_checks"])[(("outcome", "refused"),)] == 2
    assert samples(fams["batch_scheduler_up"]) == {(): 1}
