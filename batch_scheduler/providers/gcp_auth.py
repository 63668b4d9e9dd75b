"""Google Cloud credentials for `--provider vertex`: OAuth 2 access tokens from Application Default Credentials.

The credentials file is the one ADC reads first (`GOOGLE_APPLICATION_CREDENTIALS`: a service account's
JSON key, or a user's `gcloud auth application-default login` file; other kinds, and ADC's metadata-server
fallback, are not taken yet), loaded by its type through `google-auth` (the `vertex` extra). Its token request goes to the `token_uri` the file names, with
redirects refused, as every other call of this program; the key itself never leaves google-auth and
the token goes only into the `Authorization` header of calls to the configured hosts. A token is
refreshed when google-auth says it is no longer valid (it keeps a margin before the expiry), one refresh
at a time, off the event loop (google-auth's transport is synchronous).

Failures: a file that cannot be read or is not credentials is a UsageError naming the variable; a token
endpoint that refuses the credentials is AuthRefused (exit 3); one that cannot be reached is a
NetworkError (transient: the caller's retry policy applies).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from batch_scheduler.core import errors

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
EXTRA = "pip install 'batch-scheduler[vertex]'"
TOKEN_TIMEOUT_S = 30.0


def _load(path: str) -> tuple[Any, str | None]:
    """(credentials, the file's project) of a service account's key or a gcloud user login, loaded by type
    (google-auth's own loader of any type is deprecated: a file may name any token endpoint and command)."""
    try:
        import google.auth.transport.requests  # noqa: F401 - needs `requests`, which google-auth leaves optional
        from google.oauth2 import credentials as user
        from google.oauth2 import service_account
    except ImportError:
        raise errors.UsageError(f"--provider vertex needs google-auth: {EXTRA}") from None
    with open(path, "rb") as f:
        info = json.loads(f.read())
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        return service_account.Credentials.from_service_account_info(info, scopes=list(SCOPES)), info.get("project_id")
    if kind == "authorized_user":
        return user.Credentials.from_authorized_user_info(info, scopes=list(SCOPES)), info.get("quota_project_id")
    raise ValueError(f"type {kind!r}: a service_account key or an authorized_user login is needed")


class _NoRedirects:
    """A `requests` session whose calls never follow a redirect (a 3xx is the answer google-auth reads)."""

    def __init__(self) -> None:
        import requests

        self._session = requests.Session()

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        kwargs["allow_redirects"] = False
        kwargs.setdefault("timeout", TOKEN_TIMEOUT_S)
        return self._session.request(method, url, **kwargs)

    def close(self) -> None:
        self._session.close()


class TokenSource:
    """Access tokens of one credentials file; `await token()` before each call."""

    def __init__(self, path: str, variable: str = "GOOGLE_APPLICATION_CREDENTIALS"):
        try:
            self._credentials, self.project = _load(path)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise errors.UsageError(f"{variable}: the file it names cannot be used as Google credentials "
                                    f"({err}); give a service account's JSON key, or run "
                                    f"`gcloud auth application-default login` and name its file") from None
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if not self._credentials.valid:
            async with self._lock:
                if not self._credentials.valid:
                    await asyncio.to_thread(self._refresh)
        token = self._credentials.token
        if not isinstance(token, str) or not token:
            raise errors.AuthRefused("the token endpoint answered without an access token")
        return token

    def _refresh(self) -> None:
        import google.auth.exceptions
        import google.auth.transport.requests

        session = _NoRedirects()
        try:
            self._credentials.refresh(google.auth.transport.requests.Request(session=session))  # type: ignore[arg-type]
        except google.auth.exceptions.RefreshError as err:
            if getattr(err, "retryable", False):  # a 5xx or 429 of the token endpoint
                raise errors.ServerError(f"token: the token endpoint failed ({_first_line(err)})") from None
            raise errors.AuthRefused(f"the token endpoint refused the credentials: {_first_line(err)}",
                                     status=401) from None
        except google.auth.exceptions.TransportError as err:
            raise errors.NetworkError(f"token: cannot reach the token endpoint ({_first_line(err)})") from None
        finally:
            session.close()


def _first_line(err: BaseException) -> str:
    text = str(err.args[0] if err.args else err)
    return text.splitlines()[0][:200] if text else type(err).__name__
