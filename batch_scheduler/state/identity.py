"""A job's identity: the inputs it reads (path, size and edge hashes of each) and the options that shape
its batches, recorded in the ledger by the first run (`check_identity`). A later run over the same job
must bring the same; otherwise it is another job and nothing of it is written.

Within one run an input must not change either (`InputIdentity`): a local file's size, mtime_ns, inode
and edge hashes are taken when the run opens the job and compared when it ends; an object in a bucket
is read only at the ETag (or generation) it had when the job started (state/objects.py sends If-Match).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

from batch_scheduler.core import errors
from batch_scheduler.core.options import BY_NAME, kept_flags
from batch_scheduler.core.settings import Settings
from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.objects import is_object_url, object_fingerprint
from batch_scheduler.state.owner import META_KEY, new_owner

VERSION_KEY = "anthropic_version"  # ledger meta: the version the job's requests are sent (and checked) under
EDGE_BYTES = 1 << 20


def fingerprint(path: str, edge_bytes: int = EDGE_BYTES) -> dict:
    """Size and a checksum of the head and tail: enough to notice a changed input."""
    size = os.path.getsize(path)
    return {"path": os.path.abspath(path), "size": size, "sha256_edges": _edges(path, size, edge_bytes)}


def fingerprints(inputs: list[str]) -> list[dict]:
    """Each input's fingerprint: an object's size and ETag, a local file's size and edge hashes."""
    return [object_fingerprint(p) if is_object_url(p) else fingerprint(p) for p in inputs]


def _edges(path: str, size: int, edge_bytes: int = EDGE_BYTES) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(edge_bytes))
        if size > edge_bytes:
            f.seek(max(edge_bytes, size - edge_bytes))
            h.update(f.read(edge_bytes))
    return h.hexdigest()


@dataclass(frozen=True)
class InputIdentity:
    """A local input as a run found it: what an edit in place, a replacement or a rename over it changes."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    edges: str

    @classmethod
    def of(cls, path: str) -> InputIdentity:
        st = os.stat(path)
        return cls(path, st.st_size, st.st_mtime_ns, st.st_ino, _edges(path, st.st_size))

    def changed(self) -> str | None:
        """What changed since (None: nothing); an input gone or unreadable counts as changed."""
        try:
            now = InputIdentity.of(self.path)
        except OSError as err:
            return f"it cannot be read any more ({err.strerror})"
        diff = [what for what, a, b in (("size", self.size, now.size), ("mtime", self.mtime_ns, now.mtime_ns),
                                        ("inode", self.inode, now.inode), ("content", self.edges, now.edges))
                if a != b]
        return f"its {', '.join(diff)} changed" if diff else None


def local_identities(inputs: list[str]) -> list[InputIdentity]:
    """The identity of each local input, as this run starts (objects are pinned by If-Match instead)."""
    return [InputIdentity.of(p) for p in inputs if not is_object_url(p)]


def changed_input(found: list[InputIdentity]) -> str | None:
    """The message for the first input that changed during the run (None: none did)."""
    for identity in found:
        what = identity.changed()
        if what is not None:
            return (f"input {identity.path} changed while the job ran ({what}): its answers may belong to "
                    f"two versions of it, so the job is not done. Put the original input back and run again, "
                    f"or start afresh with another --out")
    return None


def check_identity(ledger: Ledger, settings: Settings, out_dir: str, prints: list[dict], remembered: dict) -> Ledger:
    """The first run records the job's inputs and batch options; a later one must bring the same (else
    JobMismatch, the ledger closed)."""
    meta = ledger.read_meta()
    shaping = settings.shaping()
    if not meta:
        ledger.write_meta({"inputs": prints, "shaping": shaping, "created_at": time.time(), "version": 1,
                           "flags": kept_flags(remembered), "job_name": settings.job_name,
                           VERSION_KEY: settings.anthropic_version, META_KEY: new_owner(settings.job_name or out_dir)})
        return ledger
    how = f"to start fresh, use another --out or delete {out_dir}"
    if [p["path"] for p in meta["inputs"]] != [p["path"] for p in prints]:
        ledger.close()
        raise errors.JobMismatch(f"{out_dir} holds a job over other input files "
                                 f"({', '.join(p['path'] for p in meta['inputs'])}); {how}")
    for old, new in zip(meta["inputs"], prints, strict=True):
        if old != new:
            ledger.close()
            raise errors.JobMismatch(f"input {new['path']} changed since the job started "
                                     f"(size or content differs); {how}")
    # an option newer than the job's ledger counts as its default there (such a job resumes after an upgrade;
    # job.as_started gives the run what the job ran with before the option existed, where that differs)
    before = {k: meta["shaping"].get(k, BY_NAME[k].default) for k in shaping}
    changed = [k for k in shaping if before[k] != shaping[k]]
    if changed:
        ledger.close()
        detail = ", ".join(f"{k}: was {before[k]!r}, now {shaping[k]!r}" for k in changed)
        raise errors.JobMismatch(f"{out_dir} was started with other batch options ({detail}); "
                                 f"run again with the same options, or {how}")
    return ledger
