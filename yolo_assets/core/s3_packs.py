"""Content-addressed objects packed on S3: what one call publishes goes up as one object, read back
with ranged GETs. Dagster-free: the S3 artifact store hands in its bucket prefix and local cache.

Layout under `<store>/_packs/<namespace>/`:
- `<id>.pack`: the objects' bytes one after another (`id` is the SHA-256 of these bytes);
- `<id>.json`: the index, `{"objects": {name: [offset, length]}}`, written LAST: a pack without its
  index is not there (an upload cut short never looks valid), and nothing is ever overwritten.

Objects are found through the indexes: one listing of the namespace's packs (one request per 1,000),
each index read once per machine (kept in the local cache). Stores written before packs keep one
object per key under `<store>/_objects/<namespace>/`: a name no index holds is read from there, and
only when that folder holds anything at all (one listing, remembered once seen non-empty).
"""

import hashlib
import json
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolo_assets.core.fileio import atomic_write_bytes
from yolo_assets.core.s3 import S3Prefix, parallel

PACK_SUFFIX, INDEX_SUFFIX = ".pack", ".json"
# A pack stays below this size (a batch of 10,000 photos becomes several), so a failed upload
# costs at most this much again.
MAX_PACK_BYTES = 256 * 1024 * 1024
# Neighbouring objects of one pack are read in one GET up to this size; a gap below RANGE_GAP_BYTES
# between wanted objects is read and dropped (cheaper than another request).
MAX_RANGE_BYTES = 16 * 1024 * 1024
RANGE_GAP_BYTES = 256 * 1024


@dataclass(frozen=True)
class PackedObject:
    """Where an object's bytes are: `length` bytes at `offset` of pack `pack`."""

    pack: str
    offset: int
    length: int


@dataclass(frozen=True)
class ByteRange:
    """One ranged GET: the bytes `start`..`end` (exclusive) of one pack, and the objects in them."""

    pack: str
    start: int
    end: int
    members: tuple[tuple[str, PackedObject], ...]


def plan_ranges(wanted: Iterable[tuple[str, PackedObject]]) -> list[ByteRange]:
    """Group objects into ranged GETs: objects of one pack in offset order, merged while the gap
    between them stays under RANGE_GAP_BYTES and the range under MAX_RANGE_BYTES."""
    by_pack: dict[str, list[tuple[str, PackedObject]]] = {}
    for name, where in wanted:
        by_pack.setdefault(where.pack, []).append((name, where))
    ranges: list[ByteRange] = []
    for pack, members in sorted(by_pack.items()):
        members.sort(key=lambda member: member[1].offset)
        group: list[tuple[str, PackedObject]] = []
        for name, where in members:
            if group:
                start, end = group[0][1].offset, group[-1][1].offset + group[-1][1].length
                if where.offset - end > RANGE_GAP_BYTES or where.offset + where.length - start > MAX_RANGE_BYTES:
                    ranges.append(ByteRange(pack, start, end, tuple(group)))
                    group = []
            group.append((name, where))
        if group:
            ranges.append(ByteRange(pack, group[0][1].offset, group[-1][1].offset + group[-1][1].length, tuple(group)))
    return ranges


def chunk_by_size(names: list[str], root: Path, limit: int = MAX_PACK_BYTES) -> Iterator[list[str]]:
    """`names` in order, cut into groups whose files add up to at most `limit` bytes (a larger file alone)."""
    group: list[str] = []
    size = 0
    for name in names:
        length = (root / name).stat().st_size
        if group and size + length > limit:
            yield group
            group, size = [], 0
        group.append(name)
        size += length
    if group:
        yield group


def read_exactly(body: Any, length: int, pack: str) -> bytes:
    """The next `length` bytes of a response body (a read may return fewer: read again until done)."""
    parts, remaining = [], length
    while remaining > 0:
        part = body.read(remaining)
        if not part:
            raise OSError(f"pack {pack}: the response ended {remaining} bytes short")
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


@dataclass
class ObjectPacks:
    """One namespace of content-addressed objects on S3, written as packs, read by ranges."""

    packs: S3Prefix
    """`<store>/_packs/<namespace>`."""
    loose: S3Prefix
    """`<store>/_objects/<namespace>`: one object per key, as stores before packs wrote them."""
    index_cache: Path
    """This machine's copies of the indexes (an index never changes once written)."""
    _where: dict[str, PackedObject] = field(default_factory=dict, init=False, repr=False)
    _indexes_read: set[str] = field(default_factory=set, init=False, repr=False)
    _has_loose: bool = field(default=False, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def locations(self, names: Iterable[str] = ()) -> dict[str, PackedObject]:
        """Where every packed object is. Lists the packs again only when a name asked for (or any,
        when none are named) is not known yet: objects never move once packed."""
        names = list(names)
        with self._lock:
            if not names or any(name not in self._where for name in names):
                _, listed = self.packs.list_level()
                indexes = sorted(entry["Key"][: -len(INDEX_SUFFIX)] for entry in listed if entry["Key"].endswith(INDEX_SUFFIX))
                new = [pack for pack in indexes if pack not in self._indexes_read]
                for pack, objects in zip(new, parallel(self._read_index, new)):
                    for name, (offset, length) in objects.items():
                        self._where.setdefault(name, PackedObject(pack, offset, length))
                    self._indexes_read.add(pack)
            return dict(self._where)

    def _read_index(self, pack: str) -> dict[str, list[int]]:
        local = self.index_cache / f"{pack}{INDEX_SUFFIX}"
        if local.exists():
            data = local.read_bytes()
        else:
            fetched = self.packs.get_bytes(f"{pack}{INDEX_SUFFIX}")
            if fetched is None:  # listed a moment ago, so never so: indexes are not deleted
                raise FileNotFoundError(f"pack index {self.packs.key(pack + INDEX_SUFFIX)} vanished")
            data = fetched
            atomic_write_bytes(local, data)
        objects: dict[str, list[int]] = json.loads(data)["objects"]
        return objects

    def publish(self, root: Path, names: Iterable[str]) -> int:
        """Pack the files `root/<name>` that no pack holds yet; returns how many were packed. A pack's
        bytes go up first, its index last, each with one conditional PUT (content-addressed)."""
        wanted = sorted(set(names))
        known = self.locations(wanted)
        new = [name for name in wanted if name not in known]
        for group in chunk_by_size(new, root):
            self._upload_pack(root, group)
        return len(new)

    def _upload_pack(self, root: Path, names: list[str]) -> None:
        staging = self.index_cache / f".pack-{uuid.uuid4().hex}"
        staging.parent.mkdir(parents=True, exist_ok=True)
        objects: dict[str, list[int]] = {}
        digest = hashlib.sha256()
        try:
            with open(staging, "wb") as pack:
                for name in names:
                    data = (root / name).read_bytes()
                    objects[name] = [pack.tell(), len(data)]
                    digest.update(data)
                    pack.write(data)
            pack_id = digest.hexdigest()
            index = json.dumps({"objects": objects}, sort_keys=True).encode()
            self.packs.upload_new(f"{pack_id}{PACK_SUFFIX}", staging)
            atomic_write_bytes(self.index_cache / f"{pack_id}{INDEX_SUFFIX}", index)
            self.packs.upload_new(f"{pack_id}{INDEX_SUFFIX}", self.index_cache / f"{pack_id}{INDEX_SUFFIX}")
        finally:
            staging.unlink(missing_ok=True)
        with self._lock:
            for name, (offset, length) in objects.items():
                self._where.setdefault(name, PackedObject(pack_id, offset, length))
            self._indexes_read.add(pack_id)

    def fetch(self, root: Path, names: Iterable[str]) -> int:
        """Bring the named objects into `root` where they are missing (those no pack and no loose
        object holds are skipped); returns how many were downloaded."""
        missing = sorted({name for name in names if not (root / name).exists()})
        if not missing:
            return 0
        known = self.locations(missing)
        packed = [(name, known[name]) for name in missing if name in known]
        fetched = sum(parallel(lambda byte_range: self._read_range(root, byte_range), plan_ranges(packed)))
        loose = [name for name in missing if name not in known]
        if loose and self._any_loose():
            fetched += sum(parallel(lambda name: self.loose.download(name, root / name), loose))
        return fetched

    def _read_range(self, root: Path, byte_range: ByteRange) -> int:
        """One ranged GET, its members written as they arrive: a thread holds one object in memory, not
        the whole range (32 ranges of 16 MiB in flight would be half a GiB in a step pod)."""
        body = self.packs.open_range(f"{byte_range.pack}{PACK_SUFFIX}", byte_range.start, byte_range.end)
        position = byte_range.start
        for name, where in byte_range.members:
            read_exactly(body, where.offset - position, byte_range.pack)  # a gap small enough to read through
            atomic_write_bytes(root / name, read_exactly(body, where.length, byte_range.pack))
            position = where.offset + where.length
        return len(byte_range.members)

    def _any_loose(self) -> bool:
        """Whether this namespace holds objects from before packs (remembered once true: they stay)."""
        if not self._has_loose:
            listed = self.loose.client.list_objects_v2(Bucket=self.loose.bucket, Prefix=self.loose.key(""), MaxKeys=1)
            self._has_loose = bool(listed.get("KeyCount", 0))
        return self._has_loose


def pack_keys(packs: S3Prefix) -> list[str]:
    """Every pack and index key of a namespace, relative to `packs` (what a copy of it must read)."""
    return sorted(entry["Key"] for entry in packs.walk() if entry["Key"].endswith((PACK_SUFFIX, INDEX_SUFFIX)))
