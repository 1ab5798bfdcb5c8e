"""S3 as the landing zone and artifact store see it: one bucket + prefix, objects moved in bounded
parallel, and every request counted (so tests and benchmarks can say how many a tick or an ingest
costs). Dagster-free: the resources hand in a boto3 client.
"""

import os
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import urllib3

T = TypeVar("T")
# Requests in flight: at a 20 ms round trip, 32 at once move ~1,600 small objects a second. The
# resources' client pools as many connections (resources/s3_client.py; boto3's default holds 10).
TRANSFER_THREADS = 32
NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
# Above boto3's multipart threshold an upload goes through s3transfer, which cannot send If-None-Match.
CONDITIONAL_PUT_MAX_BYTES = 8 * 1024 * 1024

# A presigned GET's URL is made right before it is sent: an hour is only the slack of a slow transfer.
PRESIGNED_URL_SECONDS = 3600
ERROR_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")
PRESIGNED_QUERY = re.compile(r"\?[^\s'\"]*")

_requests: Counter[str] = Counter()
_requests_lock = threading.Lock()


def _count(operation: str) -> None:
    with _requests_lock:
        _requests[operation] += 1


def count_requests(client: Any) -> Any:
    """Count every S3 call made through `client` by operation (PutObject, ListObjectsV2...)."""

    def counted(model: Any, **_: Any) -> None:
        _count(model.name)

    client.meta.events.register("before-call.s3.*", counted)
    return client


def request_counts() -> Counter[str]:
    """S3 requests made by this process so far, by operation."""
    with _requests_lock:
        return Counter(_requests)


def error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code"))


def is_not_found(error: Exception) -> bool:
    return error_code(error) in NOT_FOUND_CODES


def parallel(fn: Callable[[T], Any], items: Iterable[T]) -> list[Any]:
    """`fn` over `items` on a bounded thread pool (S3 transfers wait on the network, not the CPU)."""
    items = list(items)
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(TRANSFER_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))


class ObjectGetError(OSError):
    """A presigned GET the store answered with an error status (after the pool's retries of 5xx and 429)."""


def presigned_get_pool(ca_bundle: str | bool, max_attempts: int) -> urllib3.PoolManager:
    """The HTTP pool of `S3Prefix.download_into`'s GETs: as many connections as transfers in flight,
    TLS checked against `ca_bundle` (a CA file; False: not checked, as botocore's `verify=False`), and
    lost connections, 5xx and throttling retried with backoff, as the client's standard retry mode does."""
    retries = urllib3.Retry(total=max_attempts - 1, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
                            allowed_methods={"GET"}, raise_on_status=False)
    tls: dict[str, Any] = {"cert_reqs": "CERT_NONE"} if ca_bundle is False else {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_bundle}
    # botocore's own timeouts: 60 s to connect, 60 s between two reads.
    return urllib3.PoolManager(maxsize=TRANSFER_THREADS, retries=retries, timeout=urllib3.Timeout(connect=60, read=60), **tls)


@dataclass(frozen=True)
class S3Prefix:
    """A folder-like place in a bucket: `key("a/b")` is `<prefix>/a/b`."""

    client: Any
    bucket: str
    prefix: str = ""
    gets: urllib3.PoolManager | None = field(default=None, compare=False, repr=False)
    """Where `download_into` sends its GETs (presigned by `client`); None: through the client itself."""

    def key(self, name: str) -> str:
        return f"{self.prefix.strip('/')}/{name}" if self.prefix.strip("/") else name

    def relative(self, key: str) -> str:
        base = self.key("")
        return key[len(base):] if key.startswith(base) else key

    def child(self, name: str) -> "S3Prefix":
        return S3Prefix(self.client, self.bucket, self.key(name), self.gets)

    def head(self, name: str) -> dict[str, Any] | None:
        """The object's metadata (ETag, LastModified, ContentLength), or None when it is not there."""
        try:
            response: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
            return response
        except Exception as error:
            if is_not_found(error):
                return None
            raise

    def get_bytes(self, name: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read())
        except Exception as error:
            if is_not_found(error):
                return None
            raise

    def open_range(self, name: str, start: int, end: int) -> Any:
        """A stream of the object's bytes `start`..`end` (exclusive): one ranged GET, read as it arrives."""
        return self.client.get_object(Bucket=self.bucket, Key=self.key(name), Range=f"bytes={start}-{end - 1}")["Body"]

    def put_bytes(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data)

    def upload(self, name: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self.key(name))

    def upload_new(self, name: str, path: Path) -> bool:
        """Upload `path` unless the object exists; True when this call wrote it. One request: a PUT
        with `If-None-Match: *`, which the store refuses (412) when the object is there (AWS S3, SeaweedFS
        and MinIO honour it). A large file, or a store that does not implement the condition, costs a HEAD
        before the upload instead. Content-addressed objects only: an existing object is never replaced."""
        if path.stat().st_size <= CONDITIONAL_PUT_MAX_BYTES:
            try:
                with open(path, "rb") as body:
                    self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=body, IfNoneMatch="*")
                return True
            except Exception as error:
                if error_code(error) in {"PreconditionFailed", "412"}:
                    return False
                # 409: a concurrent conditional write of the same key; 501: no conditional writes here.
                if error_code(error) not in {"ConditionalRequestConflict", "409", "NotImplemented", "501"}:
                    raise
        if self.head(name) is not None:
            return False
        self.upload(name, path)
        return True

    def _write(self, name: str, path: Path) -> None:
        """One GET (download_file would HEAD first: most objects here are small), streamed to `path`."""
        body = self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"]
        with open(path, "wb") as output:
            for chunk in body.iter_chunks(1 << 20):
                output.write(chunk)

    def download(self, name: str, target: Path) -> bool:
        """Write the object to `target` atomically; False when there is no such object."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        try:
            self._write(name, partial)
        except Exception as error:
            partial.unlink(missing_ok=True)
            if is_not_found(error):
                return False
            raise
        os.replace(partial, target)
        return True

    def _write_presigned(self, name: str, path: Path) -> None:
        """One GET of a URL the client presigned (its credentials, endpoint and addressing), sent by the
        `gets` pool: ~1.6 ms of client CPU an object here, where boto3's whole call costs ~3 ms; on a
        batch of small files that is most of the download (benchmarks/RESULTS.md)."""
        assert self.gets is not None
        url = self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": self.key(name)},
                                                 ExpiresIn=PRESIGNED_URL_SECONDS)
        _count("GetObject")
        try:
            response = self.gets.request("GET", url, preload_content=False)
        except urllib3.exceptions.HTTPError as error:  # its text holds the URL: the key id and signature stay out of logs
            reason = getattr(error, "reason", None) or error
            raise ConnectionError(f"GET s3://{self.bucket}/{self.key(name)}: {type(reason).__name__}: "
                                  f"{PRESIGNED_QUERY.sub('?...', str(reason))}") from None
        try:
            if response.status != 200:
                code = ERROR_CODE.search(response.read(4096) or b"")
                raise ObjectGetError(f"GET s3://{self.bucket}/{self.key(name)}: HTTP {response.status}"
                                     f"{' ' + code.group(1).decode(errors='replace') if code else ''}")
            with open(path, "wb") as output:
                for chunk in response.stream(1 << 20):
                    output.write(chunk)
        finally:
            response.release_conn()

    def download_into(self, names: Iterable[str], folder: Path) -> None:
        """Every object of `names` to `folder / name`, in parallel. For a folder no one else reads until
        this returns (a step's private scratch): plain writes, its sub-folders made once up front, where
        `download` pays a temporary name and a rename per object to be safe in a shared folder."""
        names = list(names)
        for parent in sorted({(folder / name).parent for name in names}):
            parent.mkdir(parents=True, exist_ok=True)
        write = self._write if self.gets is None else self._write_presigned
        parallel(lambda name: write(name, folder / name), names)

    def delete(self, names: Iterable[str]) -> None:
        keys = [{"Key": self.key(name)} for name in names]
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True})

    def list_level(self) -> tuple[list[str], list[dict[str, Any]]]:
        """One level below this prefix (Delimiter='/'): the sub-folder names and the objects here,
        their `Key` made relative to it."""
        folders, objects = [], []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(""), Delimiter="/"):
            folders += [self.relative(p["Prefix"]).rstrip("/") for p in page.get("CommonPrefixes", [])]
            objects += [{**entry, "Key": self.relative(entry["Key"])} for entry in page.get("Contents", [])]
        return folders, objects

    def walk(self) -> Iterator[dict[str, Any]]:
        """Every object below this prefix, its `Key` made relative to it."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key("")):
            for entry in page.get("Contents", []):
                yield {**entry, "Key": self.relative(entry["Key"])}
