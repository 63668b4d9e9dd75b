"""The part of Cloud Storage's JSON API that `--provider vertex` stages its files through.

    upload    POST {storage}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={object}
    list      GET  {storage}/storage/v1/b/{bucket}/o?prefix=&pageToken=     {"items": [{"name"}], "nextPageToken"}
    download  GET  {storage}/storage/v1/b/{bucket}/o/{object}?alt=media   (streamed, in line blocks)
    delete    DELETE {storage}/storage/v1/b/{bucket}/o/{object}
    bucket    GET  {storage}/storage/v1/b/{bucket}                          (before anything is uploaded)

Spoken through the job's own `HttpClient` (not the cluster's object-store layer): the same OAuth token
as the Vertex calls, the same retry policy, error mapping and refusal of redirects, and a results download
streamed in line blocks that the collector restarts from its first line when it is cut. An upload under
a name made from the chunk's tag is safe to repeat: the same bytes replace the same object.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import quote, urlencode

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.providers.answers import document, items, shown

log = logging.getLogger("batch_scheduler.providers")

DEFAULT_STORAGE_URL = "https://storage.googleapis.com"
LIST_PAGES_MAX = 100  # pages of 1,000 names: a job's output directory holds a few files
Token = Callable[[], Awaitable[str]]


def split_gs(uri: str, what: str) -> tuple[str, str]:
    """(bucket, object path) of `gs://bucket/path`; UsageError naming `what` for anything else."""
    if not uri.startswith("gs://"):
        raise errors.UsageError(f"{what} {uri!r}: expected gs://BUCKET/PREFIX")
    bucket, _, path = uri[5:].partition("/")
    if not bucket or any(c in bucket for c in " \t\r\n?#"):
        raise errors.UsageError(f"{what} {uri!r}: expected gs://BUCKET/PREFIX")
    return bucket, path.strip("/")


class Storage:
    def __init__(self, http: HttpClient, base_url: str, token: Token):
        self.http = http
        self._base = base_url.rstrip("/")
        self._token = token

    async def _auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {await self._token()}"}

    def _object_url(self, bucket: str, name: str) -> str:
        return f"{self._base}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"

    async def bucket(self, bucket: str) -> None:
        """Raises the mapped error when the bucket cannot be seen (NotFound, AuthRefused)."""
        await self.http.call("GET", f"{self._base}/storage/v1/b/{quote(bucket, safe='')}", "gcs.bucket",
                             headers=await self._auth())

    async def upload(self, bucket: str, name: str, data: bytes) -> None:
        query = urlencode({"uploadType": "media", "name": name})
        headers = {**await self._auth(), "content-type": "application/jsonl"}
        answer = await self.http.call("POST", f"{self._base}/upload/storage/v1/b/{quote(bucket, safe='')}/o?{query}",
                                      "gcs.upload", body=data, headers=headers)
        document(answer, f"upload of gs://{bucket}/{name}")

    async def names(self, bucket: str, prefix: str) -> list[str]:
        """Every object name under `prefix`, sorted; bounded whatever the answers say."""
        found: list[str] = []
        token: str | None = None
        for page_no in range(1, LIST_PAGES_MAX + 1):
            what = f"list of gs://{bucket}/{prefix} (page {page_no})"
            query = {"prefix": prefix, **({"pageToken": token} if token else {})}
            page = document(await self.http.call(
                "GET", f"{self._base}/storage/v1/b/{quote(bucket, safe='')}/o?{urlencode(query)}", "gcs.list",
                headers=await self._auth()), what)
            for item in items(page, "items", what):
                name = item.get("name") if isinstance(item, dict) else None
                if not isinstance(name, str) or not name.startswith(prefix):
                    raise errors.BadAnswer(f"{what}: an item's name is {shown(name)}, expected one under the prefix")
                found.append(name)
            following = page.get("nextPageToken")
            if not following:
                return sorted(found)
            if not isinstance(following, str) or following == token:
                raise errors.BadAnswer(f"{what}: nextPageToken is {shown(following)}")
            token = following
        raise errors.BadAnswer(f"list of gs://{bucket}/{prefix}: more than {LIST_PAGES_MAX} pages")

    async def lines(self, bucket: str, name: str) -> AsyncIterator[list[bytes]]:
        """The object's lines, in blocks; one attempt (see HttpClient.line_blocks)."""
        url = self._object_url(bucket, name) + "?alt=media"
        async for block in self.http.line_blocks(url, "gcs.download", headers=await self._auth()):
            yield block

    async def delete(self, bucket: str, name: str) -> None:
        """Best effort: an object left behind is reported, never an error."""
        try:
            await self.http.call("DELETE", self._object_url(bucket, name), "gcs.delete", headers=await self._auth())
        except errors.NotFound:
            pass
        except errors.ProviderError as err:
            log.warning("could not remove gs://%s/%s (%s); remove it by hand", bucket, name, err)
