"""Where a cluster job's results live: a directory every node shares, or a bucket (S3, GCS, Azure).

    objects = open_objects("s3://bucket/prefix")     # or gs://, az://, or a local path
    await objects.put_once("results/x.jsonl", data)  # write-once: never replaces what is there
    await objects.put("summary.json", data)          # replaces

Keys are relative to the URL's prefix, with `/` between parts. Buckets go through `obstore` (the
`cluster` extra), credentials and endpoint from the standard environment (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP=true for a plain-http endpoint;
the GCS and Azure equivalents). A write-once PUT is `If-None-Match: *`; when its answer was lost and
a retry finds the object there, an object of the same size and ETag (the MD5 of a single PUT) is ours,
anything else is `ObjectExists`. On a local directory a write-once put is a hard link of a complete,
fsync'd temporary file (`KEY.tmp-RANDOM`, never listed): it fails if the name exists, so a reader never
sees half an object. A kill -9 between the temporary's write and its removal leaves it behind, under
a name that starts with its key: `leftovers(prefix)` names them (a bucket has none: a PUT lands whole
or not at all), so the clean-up of the job that wrote them removes them (object_shards.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from batch_scheduler.core import errors
from batch_scheduler.core.durable import makedirs, replace, sync_dir

if TYPE_CHECKING:  # the cluster extra's types, for the checker only
    from obstore.store import RetryConfig

OBJECT_SCHEMES = ("s3://", "s3a://", "gs://", "az://", "abfs://", "abfss://")
TMP_MARK = ".tmp-"  # a local write's temporary: KEY.tmp-RANDOM until it is linked (or renamed) into place


class ObjectExists(errors.SchedulerError):
    """A write-once key holds another object."""


class InputChanged(errors.JobMismatch):
    """An input object is not the version the job started with (its ETag changed): nothing is read mixed."""

    def __init__(self, url: str, etag: str):
        super().__init__(f"input {url} changed since the job started (it is no longer the object of ETag {etag}); "
                         f"nothing of it is read mixed and the job is not done. Put the original object back to "
                         f"carry on, or start afresh with another --out")
        self.url = url


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str | None = None


def is_object_url(path: str) -> bool:
    return path.startswith(OBJECT_SCHEMES)


def join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p)


class LocalObjects:
    """A directory as an object store (a filesystem every node mounts)."""

    def __init__(self, root: str):
        self.url = self.root = os.path.abspath(root)

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def _write_tmp(self, path: str, data: bytes) -> str:
        makedirs(os.path.dirname(path))
        tmp = f"{path}{TMP_MARK}{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def _put_once(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_tmp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            if os.path.getsize(path) != len(data) or _read(path) != data:
                raise ObjectExists(f"{path} exists and holds something else") from None
        finally:
            with contextlib.suppress(FileNotFoundError):  # a finished job's clean-up took a fenced node's
                os.unlink(tmp)
        sync_dir(os.path.dirname(path))  # the name too, as a bucket's PUT is durable once answered

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        replace(self._write_tmp(path, data), path)  # the directory synced after it

    def _walk(self, prefix: str) -> list[tuple[str, str]]:
        """(key, path) of every file under `prefix`, temporaries included."""
        base = self._path(prefix) if prefix else self.root
        return [(os.path.relpath(full, self.root).replace(os.sep, "/"), full)
                for dirpath, _, files in os.walk(base) for full in (os.path.join(dirpath, n) for n in files)]

    def _list(self, prefix: str) -> list[ObjectInfo]:
        out = [ObjectInfo(key, os.path.getsize(full)) for key, full in self._walk(prefix) if not _temporary(key)]
        return sorted(out, key=lambda o: o.key)

    def _leftovers(self, prefix: str) -> list[str]:
        return sorted(key for key, _ in self._walk(prefix) if _temporary(key))

    def _delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def _get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        with open(self._path(key), "rb") as f:
            f.seek(start)
            return f.read() if end is None else f.read(max(0, end - start))

    def _head(self, key: str) -> ObjectInfo:
        return ObjectInfo(key, os.path.getsize(self._path(key)))

    async def put_once(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put_once, key, data)

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, key, data)

    async def leftovers(self, prefix: str = "") -> list[str]:
        """The temporaries of writes a kill cut short under `prefix` (never listed); `delete` removes one."""
        return await asyncio.to_thread(self._leftovers, prefix)

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        return await asyncio.to_thread(self._list, prefix)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        return await asyncio.to_thread(self._get, key, start, end)

    async def head(self, key: str) -> ObjectInfo:
        return await asyncio.to_thread(self._head, key)

    def local_path(self, key: str) -> str:
        return self._path(key)


class BucketObjects:
    """A bucket and prefix through obstore (S3, GCS, Azure)."""

    def __init__(self, url: str):
        try:
            from obstore.store import from_url
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise errors.UsageError(f"{url}: object storage needs the cluster extra: "
                                    f"pip install 'batch-scheduler[cluster]'") from None
        self.url = url.rstrip("/")
        try:
            retry: RetryConfig = {"max_retries": 8, "retry_timeout": timedelta(seconds=60),
                                  "backoff": {"init_backoff": timedelta(milliseconds=50),
                                              "max_backoff": timedelta(seconds=2), "base": 2}}
            # client options are left to the environment (AWS_ALLOW_HTTP, ...): setting any replaces them all
            self._store = from_url(self.url, retry_config=retry)
        except Exception as err:  # noqa: BLE001 - obstore raises its own types for a bad URL or config
            raise errors.UsageError(f"{url}: {err}") from None

    async def put_once(self, key: str, data: bytes) -> None:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError
        try:
            await obstore.put_async(self._store, key, data, mode="create")
        except (AlreadyExistsError, PreconditionError):
            # a retry of a PUT whose answer was lost finds its own object: same size, same MD5 ETag
            have = await self.head(key)
            want = hashlib.md5(data, usedforsecurity=False).hexdigest()
            if have.size != len(data) or (have.etag and have.etag.strip('"') != want):
                raise ObjectExists(f"{self.url}/{key} exists and holds something else") from None

    async def put(self, key: str, data: bytes) -> None:
        import obstore
        await obstore.put_async(self._store, key, data)

    async def leftovers(self, prefix: str = "") -> list[str]:
        """None: a PUT lands whole or not at all."""
        return []

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        import obstore
        out: list[ObjectInfo] = []
        async for batch in obstore.list(self._store, prefix or None):
            out += [ObjectInfo(m["path"], int(m["size"]), m.get("e_tag")) for m in batch]
        return sorted(out, key=lambda o: o.key)

    async def delete(self, key: str) -> None:
        import obstore
        from obstore.exceptions import NotFoundError
        try:
            await obstore.delete_async(self._store, key)
        except NotFoundError:
            pass

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        import obstore
        if start == 0 and end is None:
            got = await obstore.get_async(self._store, key)
            return bytes(await got.bytes_async())
        if end is not None and end <= start:
            return b""
        return bytes(await obstore.get_range_async(self._store, key, start=start, end=end))

    async def head(self, key: str) -> ObjectInfo:
        import obstore
        meta = await obstore.head_async(self._store, key)
        return ObjectInfo(key, int(meta["size"]), meta.get("e_tag"))

    def head_sync(self, key: str) -> ObjectInfo:
        import obstore
        meta = obstore.head(self._store, key)
        return ObjectInfo(key, int(meta["size"]), meta.get("e_tag"))

    def get_range_sync(self, key: str, start: int, end: int, *, etag: str | None = None) -> bytes:
        """Bytes [start, end) of `key` (blocking); with `etag`, only of that version of it (`If-Match`:
        the S3 and Azure ETag, the GCS object's, which names its generation), else `InputChanged`."""
        import obstore
        from obstore.exceptions import PreconditionError
        if etag is None:
            return bytes(obstore.get_range(self._store, key, start=start, end=end))
        try:
            got = obstore.get(self._store, key, options={"range": (start, end), "if_match": etag})
            return bytes(got.bytes())
        except PreconditionError:
            raise InputChanged(f"{self.url}/{key}", etag) from None


class RangeReader:
    """A bucket object as a read-only file: each `read(n)` is one ranged GET (blocking: call it in a thread).
    With `etag` (the version the job started with) every GET sends `If-Match`, and a changed object is
    `InputChanged`, never bytes of another version."""

    def __init__(self, objects: BucketObjects, key: str, pos: int = 0, *, etag: str | None = None):
        self._objects = objects
        self._key = key
        self._pos = pos
        self._etag = etag
        self._size: int | None = None

    def seek(self, pos: int) -> int:
        self._pos = pos
        return pos

    def read(self, n: int = -1) -> bytes:
        if self._size is None:
            info = self._objects.head_sync(self._key)
            if self._etag is not None and info.etag != self._etag:
                raise InputChanged(f"{self._objects.url}/{self._key}", self._etag)
            self._size = info.size
        end = self._size if n < 0 else min(self._size, self._pos + n)
        if end <= self._pos:
            return b""
        data = self._objects.get_range_sync(self._key, self._pos, end, etag=self._etag)
        self._pos += len(data)
        return data

    def close(self) -> None:
        pass


def split_object_url(url: str) -> tuple[str, str]:
    """`s3://bucket/dir/file.jsonl` -> (`s3://bucket`, `dir/file.jsonl`)."""
    scheme, rest = url.split("://", 1)
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise errors.UsageError(f"{url}: expected {scheme}://BUCKET/KEY")
    return f"{scheme}://{bucket}", key


def object_fingerprint(url: str) -> dict:
    """An input object's identity: its size and ETag (a changed object has another)."""
    base, key = split_object_url(url)
    try:
        info = BucketObjects(base).head_sync(key)
    except errors.SchedulerError:
        raise
    except Exception as err:  # noqa: BLE001 - obstore's own errors: not found, refused
        raise errors.UsageError(f"{url}: cannot read it ({str(err).splitlines()[0]})") from None
    return {"path": url, "size": info.size, "etag": info.etag}


Objects = LocalObjects | BucketObjects


def open_objects(url: str) -> Objects:
    """The store for an OUT (or an input's bucket): a bucket URL, or a local directory."""
    if is_object_url(url):
        return BucketObjects(url)
    if "://" in url and not url.startswith("file://"):
        raise errors.UsageError(f"{url}: not a local path nor an s3://, gs:// or az:// URL")
    return LocalObjects(url.removeprefix("file://"))


def _temporary(key: str) -> bool:
    return TMP_MARK in key.rpartition("/")[2]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
