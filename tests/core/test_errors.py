"""Every HTTP status and aiohttp failure maps to one place in the error tree."""


import aiohttp
import orjson
import pytest

from batch_scheduler.core import errors

BODY = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'


def body(kind: str, message: str = "slow down", **extra) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message, **extra}})


SPEND = body("rate_limit_error", "You will regain access on 2027-01-01 at 00:00 UTC.",
             details={"error_code": "enforced_spend_limit_reached"})
CONTRACT = body("rate_limit_error", "contract limit", details={"error_code": "contract_spend_limit_reached"})
QUOTA = orjson.dumps({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                                "param": None, "code": "insufficient_quota"}})

# (status, body, headers, class): every status and header the providers' references and the SDKs know
CASES = [
    (400, BODY, {}, errors.RequestRejected), (401, BODY, {}, errors.AuthRefused),
    (402, body("billing_error", "credit balance too low"), {}, errors.SpendLimited),
    (403, BODY, {}, errors.AuthRefused), (404, BODY, {}, errors.NotFound),
    (408, BODY, {}, errors.TimeoutError_), (409, body("conflict_error"), {}, errors.Conflict),
    (413, BODY, {}, errors.RequestTooLarge), (422, BODY, {}, errors.RequestRejected),
    (429, BODY, {"retry-after": "7"}, errors.RateLimited),
    (429, SPEND, {}, errors.SpendLimited), (429, CONTRACT, {}, errors.SpendLimited), (429, QUOTA, {}, errors.SpendLimited),
    (500, BODY, {}, errors.ServerError), (502, BODY, {}, errors.ServerError), (503, BODY, {}, errors.ServerError),
    (504, body("timeout_error"), {}, errors.TimeoutError_), (529, body("overloaded_error"), {}, errors.ServerError),
    (599, BODY, {}, errors.ServerError),
    # x-should-retry beats the status, as in the SDKs' _should_retry ...
    (400, BODY, {"x-should-retry": "true"}, errors.ServerError),
    (404, BODY, {"X-Should-Retry": "true"}, errors.ServerError),
    (500, BODY, {"x-should-retry": "false"}, errors.RequestRejected),
    (409, BODY, {"x-should-retry": "false"}, errors.RequestRejected),
    (429, BODY, {"x-should-retry": "false"}, errors.RequestRejected),
    (408, BODY, {"x-should-retry": "true"}, errors.TimeoutError_),
    # ... except where the job must pause: a refused key and a spend limit stay what they are
    (401, BODY, {"x-should-retry": "true"}, errors.AuthRefused),
    # a redirect is never followed, nor retried, whatever the header says
    (301, b"", {"location": "http://elsewhere.test/"}, errors.Redirected),
    (307, b"", {"location": "http://elsewhere.test/", "x-should-retry": "true"}, errors.Redirected),
    (429, SPEND, {"x-should-retry": "true"}, errors.SpendLimited),
]


@pytest.mark.parametrize(("status", "data", "headers", "cls"), CASES)
def test_every_status_and_header_maps(status, data, headers, cls):
    err = errors.from_status(status, data, headers, what="create")
    assert type(err) is cls
    assert err.status == status
    assert str(err).startswith(f"create: HTTP {status} ")


@pytest.mark.parametrize("status", range(400, 600))
def test_every_error_status_is_either_transient_or_not(status):
    err = errors.from_status(status, BODY, {})
    transient = status in (408, 409, 429) or status >= 500
    assert isinstance(err, errors.TransientError) is transient


def test_the_message_keeps_kind_and_text():
    err = errors.from_status(429, BODY, {"retry-after": "7"}, what="create")
    assert str(err) == "create: HTTP 429 rate_limit_error: slow down"


def test_a_spend_limit_is_neither_transient_nor_fatal_and_keeps_the_providers_message():
    err = errors.from_status(429, SPEND, {}, what="POST create")
    assert not isinstance(err, errors.TransientError | errors.FatalError)
    assert str(err) == ("POST create: HTTP 429 rate_limit_error: You will regain access on 2027-01-01 "
                        "at 00:00 UTC.")


def test_429_carries_retry_after_seconds():
    err = errors.from_status(429, BODY, {"retry-after": "2.5"})
    assert isinstance(err, errors.TransientError)
    assert err.retry_after_s == 2.5


def test_retry_after_header_names_are_case_insensitive():
    assert errors.from_status(429, BODY, {"Retry-After": "3"}).retry_after_s == 3.0


def test_retry_after_ms_wins_and_an_http_date_is_read():
    assert errors.from_status(429, BODY, {"retry-after": "9", "retry-after-ms": "1500"}).retry_after_s == 1.5
    assert errors.parse_retry_after("Wed, 21 Oct 2026 07:28:10 GMT", now=1792567680.0) == 10.0
    assert errors.parse_retry_after("soon") is None
    assert errors.parse_retry_after("nan") is None


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
SPEND_USAGE = (b'{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your specified API '
               b'usage limits. You will regain access on 2027-01-01 at 00:00 UTC.","details":{"error_code":'
               b'"enforced_spend_limit_reached"}}}')


def test_a_429_for_the_processing_queue_is_queue_full_with_the_limit_it_states():
    err = errors.from_status(429, QUEUE_FULL, {"retry-after": "1"}, what="POST create")
    assert type(err) is errors.QueueFull and err.stated_limit == 200_000
    assert isinstance(err, errors.TransientError) and not isinstance(err, errors.RateLimited)


@pytest.mark.parametrize(("body", "kind"), [(RATE, errors.RateLimited), (SPEND_USAGE, errors.SpendLimited),
                                            (BODY, errors.RateLimited)], ids=["request-rate", "spend-limit", "plain"])
def test_other_429s_are_not_a_full_queue(body, kind):
    assert type(errors.from_status(429, body, {}, what="POST create")) is kind
