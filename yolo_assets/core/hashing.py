"""Content hashing: sha256 of bytes, files (through a stat cache) and canonical JSON."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
# A cache entry is only trusted for files whose mtime is older than this many seconds at the
# time they were hashed: a file edited twice within the filesystem's timestamp granularity
# could otherwise keep (size, mtime_ns, inode) and a stale hash ("racy git" problem).
RACY_WINDOW_S = 2.0


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def hash_json(value: Any) -> str:
    """Hash of a JSON-serialisable value, independent of dict ordering."""
    return sha256_bytes(canonical_json(value))


class StatHashCache:
    """(path, size, mtime_ns, inode) -> sha256, persisted in SQLite so unchanged files are not re-read.

    Shared by the sensor and run processes; SQLite's WAL mode keeps concurrent readers cheap.
    """

    def __init__(self, db_path: Path) -> None:
        self._db_path = Path(db_path)
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            self._db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._db_path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS file_hash (path TEXT PRIMARY KEY, size INTEGER, "
                "mtime_ns INTEGER, inode INTEGER, sha256 TEXT)"
            )
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def hash_file(self, path: Path) -> str:
        return self.hash_files([path])[str(Path(path).resolve())]

    def hash_files(self, paths: list[Path]) -> dict[str, str]:
        """Hashes keyed by resolved path; reads only files whose stat signature changed."""
        conn = self._connection()
        resolved = [str(Path(p).resolve()) for p in paths]
        known: dict[str, tuple[int, int, int, str]] = {}
        for start in range(0, len(resolved), 500):
            batch = resolved[start : start + 500]
            marks = ",".join("?" * len(batch))
            for row in conn.execute(
                f"SELECT path, size, mtime_ns, inode, sha256 FROM file_hash WHERE path IN ({marks})", batch
            ):
                known[row[0]] = (row[1], row[2], row[3], row[4])
        result: dict[str, str] = {}
        fresh: list[tuple[str, int, int, int, str]] = []
        now_ns = time.time_ns()
        for path in resolved:
            st = os.stat(path)
            signature = (st.st_size, st.st_mtime_ns, st.st_ino)
            cached = known.get(path)
            if cached is not None and cached[:3] == signature:
                result[path] = cached[3]
                continue
            digest = sha256_file(Path(path))
            result[path] = digest
            if now_ns - st.st_mtime_ns > RACY_WINDOW_S * 1e9:
                fresh.append((path, *signature, digest))
        if fresh:
            conn.executemany("INSERT OR REPLACE INTO file_hash VALUES (?, ?, ?, ?, ?)", fresh)
        return result
