"""Every HTTP status and aiohttp failure maps to one place in the error tree."""


import aiohttp
import pytest

from batch_scheduler.core import errors

BODY = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'


@pytest.mark.parametrize(("status", "cls"), [
    (400, errors.RequestRejected), (401, errors.AuthRefused), (403, errors.AuthRefused),
    (404, errors.RequestRejected), (408, errors.TimeoutError_), (413, errors.RequestTooLarge),
    (429, errors.RateLimited), (500, errors.ServerError), (502, errors.ServerError),
    (503, errors.ServerError), (504, errors.ServerError), (529, errors.ServerError),
])
def test_every_status_maps(status, cls):
    err = errors.from_status(status, BODY, {"retry-after": "7"}, what="create")
    assert type(err) is cls
    assert err.status == status
    assert "rate_limit_error" in str(err) and "slow down" in str(err)


def test_429_carries_retry_after_seconds():
    err = errors.from_status(429, BODY, {"retry-after": "2.5"})
    assert isinstance(err, errors.TransientError)
    assert err.retry_after_s == 2.5


def test_fatal_and_transient_are_disjoint():
    assert issubclass(errors.AuthRefused, errors.FatalError)
    assert not issubclass(errors.AuthRefused, errors.TransientError)
    assert issubclass(errors.OutcomeUnknown, errors.TransientError)


@pytest.mark.parametrize(("exc", "sent", "cls"), [
    (TimeoutError(), False, errors.TimeoutError_),
    (aiohttp.ServerDisconnectedError(), False, errors.NetworkError),
    (aiohttp.ServerDisconnectedError(), True, errors.OutcomeUnknown),
    (aiohttp.ClientPayloadError("cut"), True, errors.OutcomeUnknown),
    (ConnectionResetError(), False, errors.NetworkError),
    (aiohttp.ClientConnectionError("refused"), True, errors.NetworkError),
    (ValueError("bad json"), False, errors.ProtocolError),
])
def test_every_exception_maps(exc, sent, cls):
    assert type(errors.from_exception(exc, what="x", sent=sent)) is cls


def test_request_index_is_read_from_400_message():
    assert errors.rejected_request_index("requests.17.params.stream: not allowed") == 17
    assert errors.rejected_request_index("max_tokens: required") is None


def test_input_error_names_file_and_line():
    err = errors.InputError("in.jsonl", 12, "malformed JSON")
    assert str(err) == "in.jsonl:12: malformed JSON"


QUEUE_FULL = (b'{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your '
              b"organization's limit of 200,000 message batch requests in the processing queue (195,000 queued, "
              b'10,000 in this batch). Please try again once some batches have ended."}}')
RATE = (b'{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your '
        b"organization's rate limit of 1,000 requests per minute on the Message Batches API.\"}}")
SPEND = (b'{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your specified API '
         b'usage limits. You will regain access on 2027-01-01 at 00:00 UTC.","details":{"error_code":'
         b'"enforced_spend_limit_reached"}}}')


def test_a_429_for_the_processing_queue_is_queue_full_with_the_limit_it_states():
    err = errors.from_status(429, QUEUE_FULL, {"retry-after": "1"}, what="POST create")
    assert type(err) is errors.QueueFull and err.stated_limit == 200_000
    assert isinstance(err, errors.TransientError) and not isinstance(err, errors.RateLimited)


@pytest.mark.parametrize("body", [RATE, SPEND, BODY], ids=["request-rate", "spend-limit", "plain"])
def test_other_429s_are_rate_limits_not_a_full_queue(body):
    assert type(errors.from_status(429, body, {}, what="POST create")) is errors.RateLimited
