"""What Google Cloud's simulated APIs share (Vertex AI jobs, Cloud Storage): the OAuth token endpoint,
the bearer-token check, google.rpc.Status error bodies and the gate every call goes through.

    POST /token   grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT  (a service account)
                  grant_type=refresh_token&refresh_token=...&client_id=...             (a user's gcloud login)
                  -> {"access_token", "expires_in", "token_type": "Bearer"}

The JWT's claims are read, its signature is not checked (a test makes its own RSA key): `valid_keys`, when
set, names the service accounts (`iss`) or client ids the endpoint accepts; others are answered 400
`invalid_grant`, as Google answers a deleted key. API calls need a token this endpoint issued (401
UNAUTHENTICATED otherwise). Errors are `{"error": {"code", "message", "status"}}`; the fault kinds of
faults.py map to 429 RESOURCE_EXHAUSTED, 500 INTERNAL, 504 DEADLINE_EXCEEDED, 409 ABORTED, 503 UNAVAILABLE.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

import batch_scheduler.simulator.faults as faults
from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.responses import Rejected, Style, drop, json_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN_PATH = "/token"
TOKEN_LIFETIME_S = 3599
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                409: "ABORTED", 412: "FAILED_PRECONDITION", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_GOOGLE_STATUS = {"overloaded_error": 503, "billing_error": 403}  # Google has no 529 and no 402
_MESSAGES = {
    "rate_limit_error": "Resource exhausted. Please try again later. Please refer to "
                        "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
    "api_error": "Internal error encountered.",
    "timeout_error": "The request timed out. Please try again.",
    "conflict_error": "The operation was aborted due to a concurrent change. Please retry.",
    "overloaded_error": "The service is currently unavailable.",
}


def google_error(exc: Rejected) -> web.Response:
    status = _GOOGLE_STATUS.get(exc.kind, exc.status)
    message = _MESSAGES.get(exc.kind, exc.message) if exc.kind in faults.FAULT_KINDS else exc.message
    doc = {"error": {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}}
    return json_response(doc, status=status, headers=exc.headers)


def _claims(assertion: str) -> dict[str, Any]:
    try:
        payload = assertion.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, orjson.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


class GoogleAuth:
    """The token endpoint and the tokens it issued."""

    def __init__(self, ctx: SimContext):
        self.ctx = ctx
        self.issued: set[str] = set()

    async def token(self, request: web.Request) -> web.Response:
        self.ctx.stats["tokens_issued"] = self.ctx.stats.get("tokens_issued", 0) + 1
        form = await request.post()
        grant = form.get("grant_type")
        if grant == JWT_GRANT:
            who = _claims(str(form.get("assertion") or "")).get("iss")
        elif grant == "refresh_token":
            who = form.get("client_id")
        else:
            return json_response({"error": "unsupported_grant_type", "error_description": f"Invalid grant_type: {grant!r}"},
                                 status=400)
        valid = self.ctx.config.valid_keys
        if not who or (valid is not None and who not in valid):
            return json_response({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, status=400)
        token = "ya29.sim-" + secrets.token_urlsafe(24)
        self.issued.add(token)
        return json_response({"access_token": token, "expires_in": TOKEN_LIFETIME_S, "token_type": "Bearer"})

    def check(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.issued:
            raise Rejected("authentication_error", "Request had invalid authentication credentials. Expected OAuth 2 "
                           "access token, login cookie or other valid authentication credential.")


class GoogleGate:
    """Every call of a Google API: counted, the token checked, maybe a fault, then the handler; a create
    may lose its answer after the job exists (the connection drops)."""

    def __init__(self, ctx: SimContext, auth: GoogleAuth):
        self.ctx = ctx
        self.auth = auth

    def route(self, name: str, handler: Handler, *, create: bool = False) -> Handler:
        async def gate(request: web.Request) -> web.StreamResponse:
            ctx = self.ctx
            calls = ctx.stats["calls"]
            calls[name] = calls.get(name, 0) + 1
            try:
                self.auth.check(request)
                kind = faults.draw_kind(ctx.rng, ctx.config)
                if kind is not None:
                    ctx.stats["faults"][kind] = ctx.stats["faults"].get(kind, 0) + 1
                    if kind == "dropped":
                        await request.read()
                        drop(request)
                        return web.Response()
                    return google_error(faults.fault_error(kind, Style.OPENAI, ctx.config.retry_after_s))
                lose = create and ctx.config.lost_create_rate and ctx.rng.random() < ctx.config.lost_create_rate
                creates = ctx.stats["creates"]
                resp = await handler(request)
                if lose and ctx.stats["creates"] > creates:
                    ctx.stats["lost_creates"] += 1
                    drop(request)
                return resp
            except Rejected as exc:
                return google_error(exc)
        return gate
