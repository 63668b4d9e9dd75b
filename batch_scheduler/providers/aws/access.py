"""AWS access for `--provider bedrock`: credentials, region, endpoints and SigV4, all by botocore.

botocore (the `bedrock` extra) is used for what it does best and nothing else: its standard chain finds
the credentials (environment, shared config and profiles, SSO, container and instance roles) and the
region, its client metadata says the endpoints as it reads them (`AWS_ENDPOINT_URL_BEDROCK`,
`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, the config file's `endpoint_url`), and its signer signs each
call (SigV4, signing names `bedrock` and `s3`). The calls themselves go through the program's HttpClient,
so they share its retry policy, its error mapping and its metrics; botocore is not asked to send anything.

What the job's environment says (`.env` as well as the process's: Settings.credential_env, AWS_ENV here)
is handed to botocore's session explicitly: the keys (and session token), the region (AWS_REGION, then
AWS_DEFAULT_REGION), the profile, the config and credentials files, S3's endpoint. The process
environment is never written, so what a daemon reads from `.env` stays in its Settings, never in a log.

Resolving the chain may take network calls (an instance role), so it runs once, off the loop (`ready`).
S3 objects are addressed virtual-hosted on AWS and path-style on any other endpoint (moto, MinIO).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from batch_scheduler.core.errors import UsageError

EXTRA_HINT = "pip install 'batch-scheduler[bedrock]'"
NO_CREDENTIALS = ("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
                  "(or run where an instance or container role applies)")
NO_REGION = "no AWS region: set AWS_DEFAULT_REGION (or region in ~/.aws/config, for AWS_PROFILE)"
_SAFE_KEY = "/-_.~"  # what stays unquoted in an S3 key's path
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
           "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_FILES = (("AWS_CONFIG_FILE", "config_file"), ("AWS_SHARED_CREDENTIALS_FILE", "credentials_file"))


def botocore_modules() -> Any:
    """botocore's session module, or UsageError naming the extra (exit 2)."""
    try:
        import botocore.session
    except ImportError:
        raise UsageError(f"--provider bedrock needs botocore: {EXTRA_HINT}") from None
    return botocore.session


def split_s3_uri(uri: str, what: str) -> tuple[str, str]:
    """(bucket, key prefix without slashes at its ends) of `s3://bucket/prefix`; UsageError otherwise."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise UsageError(f"{what} {uri!r}: expected s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


@dataclass(frozen=True)
class AwsAccess:
    """What every signed call needs: the region, the endpoints and the credentials (refreshed by botocore)."""

    region: str
    bedrock_url: str
    s3_url: str
    credentials: Any  # botocore.credentials.Credentials

    def sign(self, method: str, url: str, service: str, body: bytes = b"",
             headers: dict[str, str] | None = None) -> dict[str, str]:
        """The headers of one call, signed now (x-amz-date, authorization, and for S3 the payload hash)."""
        from botocore.auth import S3SigV4Auth, SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
        signer = S3SigV4Auth if service == "s3" else SigV4Auth  # S3's also signs the payload's hash
        signer(self.credentials.get_frozen_credentials(), service, self.region).add_auth(request)
        return {k: v for k, v in request.headers.items() if k.lower() != "host"}

    def object_url(self, bucket: str, key: str) -> str:
        """The URL of an S3 object: virtual-hosted on AWS, path-style on another endpoint."""
        parts = urlsplit(self.s3_url)
        path = quote(key, safe=_SAFE_KEY)
        if parts.hostname and parts.hostname.endswith(".amazonaws.com") and "." not in bucket:
            return f"{parts.scheme}://{bucket}.{parts.netloc}/{path}"
        return f"{self.s3_url.rstrip('/')}/{bucket}/{path}"


def _session(env: dict[str, str]) -> Any:
    """A botocore session told what `env` holds (the rest of its chain as botocore has it)."""
    session = botocore_modules().Session()
    from botocore.exceptions import ProfileNotFound

    for variable, name in _FILES:
        if env.get(variable):
            session.set_config_variable(name, env[variable])
    if env.get("AWS_PROFILE"):
        session.set_config_variable("profile", env["AWS_PROFILE"])
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        session.set_config_variable("region", region)
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        session.set_credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN"))
    try:
        session.get_scoped_config()
    except ProfileNotFound:
        raise UsageError(f"AWS_PROFILE {env.get('AWS_PROFILE')!r}: no such profile in the AWS config files") from None
    return session


def _resolve(base_url: str | None, env: dict[str, str]) -> AwsAccess:
    """The chain's answer (blocking: may ask an instance's metadata service)."""
    session = _session(env)
    region = session.get_config_variable("region")
    if not region:
        raise UsageError(NO_REGION)
    credentials = session.get_credentials()
    if credentials is None:
        raise UsageError(NO_CREDENTIALS)
    s3 = session.create_client("s3", region_name=region,
                               endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None)
    bedrock_url = base_url
    if bedrock_url is None:
        bedrock_url = session.create_client("bedrock", region_name=region).meta.endpoint_url
    return AwsAccess(region, bedrock_url.rstrip("/"), s3.meta.endpoint_url.rstrip("/"), credentials)


class AwsChain:
    """The chain resolved once, on first use, off the event loop; every later caller gets the same answer."""

    def __init__(self, base_url: str | None, env: dict[str, str] | None = None):
        self._base_url = base_url
        self._env = env or {}
        self._access: AwsAccess | None = None
        self._lock = asyncio.Lock()

    async def access(self) -> AwsAccess:
        if self._access is None:
            async with self._lock:
                if self._access is None:
                    self._access = await asyncio.to_thread(_resolve, self._base_url, self._env)
        return self._access
