"""Where labeled batches land: the interface, archive handling, and the local folder (the S3 prefix
is `s3_landing_zone.py`).

What a batch is (a folder with its marker last, `<batch>.ready` beside it or `_SUCCESS` inside it, or
one archive file) is the landing contract, `yolo_assets/data/landing_contract.py`.
"""

import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import dagster as dg

from yolo_assets.core.hashing import StatHashCache, hash_json
from yolo_assets.data.landing_contract import ARCHIVE_SUFFIXES, READY_SUFFIX, SUCCESS_MARKER, VALID_BATCH_NAME, ready_marker
from yolo_assets.data.quarantine import QuarantineEntry, QuarantineReason, quarantine_entry


@dataclass(frozen=True)
class BatchListing:
    name: str
    is_archive: bool
    # Cheap change signal (marker or archive stat); the content hash is computed only when it moves.
    fingerprint: str


class LandingZone(dg.ConfigurableResource, ABC):
    """The landing zone interface the sensor and `labeled_batch` rely on."""

    @abstractmethod
    def list_complete_batches(self) -> list[BatchListing]:
        """Complete batches only; incomplete uploads are invisible. O(batches), not O(files)."""

    @abstractmethod
    def content_hash(self, name: str) -> str:
        """sha256 over the batch's files (relative path + file hash), marker excluded."""

    @abstractmethod
    @contextmanager
    def open_batch(self, name: str) -> Iterator[tuple[Path, list[QuarantineEntry]]]:
        """A local folder with the batch's files (archives extracted, remote objects downloaded), and
        quarantine entries for what could not safely be brought there."""

    @abstractmethod
    def upload_batch(self, folder: Path, name: str) -> int:
        """Land a local batch folder as batch `name`, its `<name>.ready` marker last (what an uploader
        does); returns the number of files landed, the marker not counted."""


def batch_files(folder: Path) -> list[Path]:
    """The files of a local batch folder to land (its own marker and hidden files left out)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != SUCCESS_MARKER
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def check_batch_name(name: str) -> None:
    if not VALID_BATCH_NAME.match(name) or name.endswith((*ARCHIVE_SUFFIXES, READY_SUFFIX)):
        raise ValueError(f"batch name {name!r}: use letters, digits, '.', '_', '-' (and no archive or {READY_SUFFIX} suffix)")


def complete_batches(
    folders: Iterable[str], stamps: Mapping[str, str], inner_markers: Callable[[list[str]], list[str | None]]
) -> list[BatchListing]:
    """The complete batches in one listing of a landing zone's top level, sorted by name.

    `folders` are the sub-folder names, `stamps` each top-level file's change stamp (size or ETag, and
    time) by name. A folder is complete when its `.ready` marker is among the files (its stamp is the
    batch's fingerprint); the folders without one are passed to `inner_markers`, which returns the stamp
    of each one's `_SUCCESS`, or None where it is absent (still uploading)."""
    batches = [BatchListing(name, True, stamp) for name, stamp in stamps.items()
               if VALID_BATCH_NAME.match(name) and name.endswith(ARCHIVE_SUFFIXES)]
    candidates = [name for name in folders if VALID_BATCH_NAME.match(name) and not name.endswith(READY_SUFFIX)]
    batches += [BatchListing(name, False, stamps[ready_marker(name)]) for name in candidates if ready_marker(name) in stamps]
    without_ready = [name for name in candidates if ready_marker(name) not in stamps]
    if without_ready:
        batches += [BatchListing(name, False, stamp)
                    for name, stamp in zip(without_ready, inner_markers(without_ready), strict=True) if stamp is not None]
    return sorted(batches, key=lambda b: b.name)


def _member_is_safe(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return not path.is_absolute() and ".." not in path.parts and not re.match(r"^[A-Za-z]:", name)


def extract_archive(archive: Path, dest: Path) -> list[QuarantineEntry]:
    """Extract a zip/tar archive member by member. Members that would land outside `dest` (`../`,
    absolute paths: zip-slip) and links are never written; they come back as quarantine entries."""
    rejected: list[QuarantineEntry] = []

    def reject(name: str, why: str) -> None:
        rejected.append(quarantine_entry(name, None, QuarantineReason.ARCHIVE_MEMBER_UNSAFE, why))

    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                if not _member_is_safe(member.filename):
                    reject(member.filename, "path leaves the batch folder (zip-slip): not extracted")
                elif stat.S_ISLNK(member.external_attr >> 16):
                    reject(member.filename, "symbolic link inside the archive: not extracted")
                else:
                    zf.extract(member, dest)
    else:
        with tarfile.open(archive) as tf:
            for entry in tf.getmembers():
                if not _member_is_safe(entry.name):
                    reject(entry.name, "path leaves the batch folder: not extracted")
                elif not (entry.isfile() or entry.isdir()):
                    reject(entry.name, "link or special file inside the archive: not extracted")
                else:
                    tf.extract(entry, dest, filter="data")
    return rejected


def unpacked_root(folder: Path) -> Path:
    """Archives usually wrap the batch in one top-level folder: the batch root is inside it."""
    entries = [e for e in folder.iterdir() if not e.name.startswith((".", "__MACOSX"))] if folder.is_dir() else []
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


def _stat_stamp(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


class LocalLandingZone(LandingZone):
    """Landing zone on a local folder; file hashes go through a persistent stat cache."""

    root: str
    hash_cache_path: str

    @property
    def _root(self) -> Path:
        return Path(self.root)

    def _hasher(self) -> StatHashCache:
        return StatHashCache(Path(self.hash_cache_path))

    def list_complete_batches(self) -> list[BatchListing]:
        if not self._root.is_dir():
            return []
        folders: list[str] = []
        stamps: dict[str, str] = {}
        with os.scandir(self._root) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    folders.append(entry.name)
                elif entry.is_file():
                    stamps[entry.name] = _stat_stamp(entry.stat())

        def inner_markers(names: list[str]) -> list[str | None]:
            stamped: list[str | None] = []
            for name in names:
                try:
                    stamped.append(_stat_stamp(os.stat(self._root / name / SUCCESS_MARKER)))
                except FileNotFoundError:
                    stamped.append(None)
            return stamped

        return complete_batches(folders, stamps, inner_markers)

    def _batch_path(self, name: str) -> Path:
        path = self._root / name
        if not VALID_BATCH_NAME.match(name) or not path.exists():
            raise FileNotFoundError(f"batch {name!r} is not in the landing zone {self.root}")
        return path

    def content_hash(self, name: str) -> str:
        path = self._batch_path(name)
        if path.is_file():
            return self._hasher().hash_file(path)
        files: list[Path] = []
        links: list[Path] = []
        for dirpath, _, filenames in os.walk(path):  # links are recorded, never followed
            for filename in filenames:
                file = Path(dirpath) / filename
                if filename == SUCCESS_MARKER or filename.startswith("."):
                    continue
                (links if file.is_symlink() else files).append(file)
        hashes = self._hasher().hash_files(files)
        entries = [[p.relative_to(path).as_posix(), hashes[str(p.resolve())]] for p in files]
        entries += [[p.relative_to(path).as_posix(), "link:" + os.readlink(p)] for p in links]
        return hash_json(sorted(entries))

    def upload_batch(self, folder: Path, name: str) -> int:
        check_batch_name(name)
        files = batch_files(folder)
        target = self._root / name
        for path in files:
            destination = target / path.relative_to(folder)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
        (self._root / ready_marker(name)).write_bytes(b"")  # last: the batch is complete from here on
        return len(files)

    @contextmanager
    def open_batch(self, name: str) -> Iterator[tuple[Path, list[QuarantineEntry]]]:
        path = self._batch_path(name)
        if path.is_dir():
            yield path, []
            return
        scratch = Path(tempfile.mkdtemp(prefix=f"batch-{name}-"))
        try:
            rejected = extract_archive(path, scratch)
            yield unpacked_root(scratch), rejected
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
