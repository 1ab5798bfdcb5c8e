"""The landing zone on S3 (dagster-aws `S3Resource`): batches uploaded under a bucket prefix.

A batch is a top-level prefix that is complete once its marker object exists, written last: the
`<batch>.ready` object beside it, or `_SUCCESS` inside it; or a single archive object. An idle tick
costs one listing of the top level (Delimiter='/', 1,000 entries a page): the `.ready` markers and the
archives are in it with their ETag and time, so 1,000 batches cost 2 requests. Each folder without a
`.ready` marker costs one HEAD of its `_SUCCESS` on every tick.

What changes a batch: its fingerprint is the marker's ETag + LastModified (the archive's, for an
archive), and its content hash, which keys the run and the cache, is built from the listing: every
object's key, size and ETag. A single-part ETag is the MD5 of the bytes; a multipart ETag is not a
content hash (it depends on the part size), so re-uploading the same bytes in other parts ingests the
batch once more, to the same data version: `labeled_batch` hashes the bytes it downloads.
"""

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from resources.landing_zone import (
    BatchListing,
    LandingZone,
    batch_files,
    check_batch_name,
    complete_batches,
    extract_archive,
    unpacked_root,
)
from resources.s3_client import transfer_prefix
from yolo_assets.core.hashing import hash_json
from yolo_assets.core.s3 import S3Prefix, parallel
from yolo_assets.data.landing_contract import ARCHIVE_SUFFIXES, SUCCESS_MARKER, VALID_BATCH_NAME, ready_marker
from yolo_assets.data.quarantine import QuarantineEntry, QuarantineReason, quarantine_entry


def unsafe_key_reason(relative_key: str) -> str | None:
    """Why an object key must not become a local path (like a zip-slip archive member), or None."""
    if any(ord(c) < 32 or ord(c) == 127 for c in relative_key):
        return "control character in the object key: not downloaded"
    path = PurePosixPath(relative_key)
    if relative_key.startswith("/") or ".." in path.parts or "\\" in relative_key:
        return "object key leaves the batch folder: not downloaded"
    return None


def _stamp(entry: dict[str, Any]) -> str:
    """A listed or HEAD object's change stamp: its ETag and LastModified."""
    return f"{entry['ETag']}:{entry['LastModified'].isoformat()}"


class S3LandingZone(LandingZone):
    s3: S3Resource
    """Endpoint, region and credentials (from the environment through EnvVar)."""
    bucket: str
    prefix: str = "landing"
    scratch_dir: str
    """Where a batch is downloaded while `labeled_batch` reads it (removed afterwards)."""

    _root: S3Prefix | None = PrivateAttr(default=None)

    @property
    def remote(self) -> S3Prefix:
        if self._root is None:
            self._root = transfer_prefix(self.s3, self.bucket, self.prefix)
        return self._root

    def list_complete_batches(self) -> list[BatchListing]:
        folders, objects = self.remote.list_level()

        def inner_markers(names: list[str]) -> list[str | None]:
            heads = parallel(lambda name: self.remote.child(name).head(SUCCESS_MARKER), names)
            return [_stamp(head) if head is not None else None for head in heads]

        return complete_batches(folders, {entry["Key"]: _stamp(entry) for entry in objects}, inner_markers)

    def _batch_objects(self, name: str) -> list[dict[str, Any]]:
        if not VALID_BATCH_NAME.match(name):
            raise FileNotFoundError(f"batch {name!r} is not in the landing zone s3://{self.bucket}/{self.remote.key('')}")
        if name.endswith(ARCHIVE_SUFFIXES):
            head = self.remote.head(name)
            if head is not None:
                return [{"Key": "", "ETag": head["ETag"], "Size": head["ContentLength"]}]
        else:
            listed = [entry for entry in self.remote.child(name).walk() if entry["Key"] != SUCCESS_MARKER]
            if listed or self.remote.head(ready_marker(name)) or self.remote.child(name).head(SUCCESS_MARKER):
                return listed
        raise FileNotFoundError(f"batch {name!r} is not in the landing zone s3://{self.bucket}/{self.remote.key('')}")

    def content_hash(self, name: str) -> str:
        return hash_json(sorted([entry["Key"], entry["Size"], entry["ETag"]] for entry in self._batch_objects(name)))

    def upload_batch(self, folder: Path, name: str) -> int:
        check_batch_name(name)
        files = batch_files(folder)
        batch = self.remote.child(name)
        parallel(lambda path: batch.upload(path.relative_to(folder).as_posix(), path), files)
        # Last: the batch is complete from here on. The body (the time) gives every rewrite a new ETag:
        # LastModified counts whole seconds, so an empty marker rewritten within one would look unchanged.
        self.remote.put_bytes(ready_marker(name), datetime.now(UTC).isoformat().encode())
        return len(files)

    @contextmanager
    def open_batch(self, name: str) -> Iterator[tuple[Path, list[QuarantineEntry]]]:
        objects = self._batch_objects(name)
        Path(self.scratch_dir).mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"batch-{name}-", dir=self.scratch_dir))
        try:
            if name.endswith(ARCHIVE_SUFFIXES):
                archive = scratch / name
                self.remote.download(name, archive)
                extracted = scratch / "extracted"
                unsafe_members = extract_archive(archive, extracted)
                yield unpacked_root(extracted), unsafe_members
                return
            rejected: list[QuarantineEntry] = []
            safe: list[str] = []
            for entry in objects:
                reason = unsafe_key_reason(entry["Key"])
                if reason:
                    rejected.append(quarantine_entry(entry["Key"], None, QuarantineReason.OBJECT_KEY_UNSAFE, reason))
                elif not entry["Key"].endswith("/"):  # "folder" placeholder objects hold nothing
                    safe.append(entry["Key"])
            self.remote.child(name).download_into(safe, scratch)
            yield scratch, rejected
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
