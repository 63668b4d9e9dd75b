"""Google Cloud credentials for `--provider vertex`: OAuth 2 access tokens by Application Default Credentials.

Found as `google.auth.default()` finds them, in its order, through `google-auth` (the `vertex` extra):

    1. the file GOOGLE_APPLICATION_CREDENTIALS (or --api-key) names: a service account's JSON key, or a
       user's `gcloud auth application-default login` file;
    2. gcloud's own login file (`application_default_credentials.json` in gcloud's configuration
       directory: CLOUDSDK_CONFIG, else ~/.config/gcloud), of the same two kinds;
    3. the metadata server of the Google Cloud machine the program runs on (GCE_METADATA_HOST /
       GCE_METADATA_IP name another, as google-auth reads them): its service account's tokens, its project.

A file is loaded by its type (google-auth's loader of any type is deprecated: a file may name any token
endpoint and command), so other kinds are refused by name. Token requests go to the `token_uri` the file
names or to the metadata server, with redirects refused, as every other call of this program; the key
itself never leaves google-auth and the token goes only into the `Authorization` header of calls to the
configured hosts. A token is refreshed when google-auth says it is no longer valid (it keeps a margin
before the expiry), one refresh at a time, off the event loop (google-auth's transport is synchronous);
finding the credentials may ask the metadata server, so `TokenSource.find` is called off the loop too.

Failures: no credentials anywhere, or a file that cannot be read or is not credentials, is a UsageError
saying what to set; a token endpoint that refuses the credentials is AuthRefused (exit 3); one that
cannot be reached is a NetworkError (transient: the caller's retry policy applies).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from batch_scheduler.core import errors
from batch_scheduler.core.settings import OWN_CREDENTIALS

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
EXTRA = "pip install 'batch-scheduler[vertex]'"
TOKEN_TIMEOUT_S = 30.0
NO_CREDENTIALS = ("no Google credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service account's JSON key, "
                  "run `gcloud auth application-default login`, or run on Google Cloud, where the metadata "
                  "server gives the machine's service account")


def _imports() -> None:
    try:
        import google.auth.transport.requests  # noqa: F401 - needs `requests`, which google-auth leaves optional
    except ImportError:
        raise errors.UsageError(f"--provider vertex needs google-auth: {EXTRA}") from None


def _file(path: str, named: str, what: str) -> tuple[Any, str | None]:
    """(credentials, the file's project) of a service account's key or a gcloud user login, loaded by type;
    a UsageError naming `named` when it cannot be used."""
    _imports()
    from google.oauth2 import credentials as user
    from google.oauth2 import service_account

    try:
        with open(path, "rb") as f:
            info = json.loads(f.read())
        kind = info.get("type") if isinstance(info, dict) else None
        if kind == "service_account":
            return (service_account.Credentials.from_service_account_info(info, scopes=list(SCOPES)),
                    info.get("project_id"))
        if kind == "authorized_user":
            return user.Credentials.from_authorized_user_info(info, scopes=list(SCOPES)), info.get("quota_project_id")
        raise ValueError(f"type {kind!r}: a service_account key or an authorized_user login is needed")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise errors.UsageError(f"{named}: {what} cannot be used as Google credentials ({err}); give a service "
                                f"account's JSON key, or run `gcloud auth application-default login` and name "
                                f"its file") from None


def _metadata_server() -> tuple[Any, str | None] | None:
    """(credentials, project) of the metadata server, when one answers as Google's does; else None."""
    from google.auth import compute_engine, exceptions
    from google.auth.compute_engine import _metadata
    from google.auth.transport.requests import Request

    session = _NoRedirects()
    try:
        request = Request(session=session)  # type: ignore[arg-type]
        if not _metadata.is_on_gce(request=request):
            return None
        try:
            project = _metadata.get_project_id(request=request)
        except exceptions.TransportError:
            project = None
    finally:
        session.close()
    return compute_engine.Credentials(scopes=list(SCOPES)), project if isinstance(project, str) else None


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
    """Access tokens of one set of credentials; `await token()` before each call."""

    def __init__(self, credentials: Any, project: str | None, source: str):
        self._credentials = credentials
        self.project = project  # the credentials' own project, if they name one
        self.source = source  # where they were found, as said to a user (never the key)
        self._lock = asyncio.Lock()

    @classmethod
    def find(cls, key: str) -> TokenSource:
        """The Application Default Credentials, in google-auth's order (the module's docstring); blocking.
        `key` is the file GOOGLE_APPLICATION_CREDENTIALS or --api-key names, or OWN_CREDENTIALS (none)."""
        if key and key != OWN_CREDENTIALS:
            return cls(*_file(key, "GOOGLE_APPLICATION_CREDENTIALS", "the file it names"), "GOOGLE_APPLICATION_CREDENTIALS")
        _imports()
        from google.auth import _cloud_sdk

        login = _cloud_sdk.get_application_default_credentials_path()
        if os.path.isfile(login):
            return cls(*_file(login, login, "gcloud's login file"), login)
        found = _metadata_server()
        if found is None:
            raise errors.UsageError(NO_CREDENTIALS)
        return cls(*found, "the metadata server")

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
