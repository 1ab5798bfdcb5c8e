"""The S3 landing zone and artifact store against a real S3 server (SeaweedFS on 127.0.0.1)."""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from dagster_aws.s3 import S3Resource
from helpers import REPO

from resources.s3_artifact_store import COMPLETE, S3ArtifactStore
from resources.s3_landing_zone import S3LandingZone, unsafe_key_reason
from yolo_assets.assets.keys import LABELED_BATCH, PROCESSED_IMAGES
from yolo_assets.core.s3 import request_counts
from yolo_assets.data.synth import write_batch
from yolo_assets.ops.services import SeaweedFS


def s3_resource(server: SeaweedFS) -> S3Resource:
    return S3Resource(endpoint_url=server.endpoint_url, region_name="us-east-1",
                      aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)


@pytest.fixture
def bucket(seaweedfs: SeaweedFS) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    seaweedfs.create_bucket(name)
    return name


def store_on(server: SeaweedFS, bucket: str, cache: Path, **settings: int) -> S3ArtifactStore:
    return S3ArtifactStore(s3=s3_resource(server), bucket=bucket, cache_dir=str(cache), **settings)


def test_put_and_get_are_byte_equal_with_the_default_checksums(seaweedfs: SeaweedFS, bucket: str) -> None:
    client = seaweedfs.client()
    payload = os.urandom(300_000) + b"\x00\xff"
    client.put_object(Bucket=bucket, Key="x/blob", Body=payload)
    assert client.get_object(Bucket=bucket, Key="x/blob")["Body"].read() == payload


def test_an_artifact_exists_only_once_its_completion_object_is_written(seaweedfs: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    store = store_on(seaweedfs, bucket, tmp_path / "a")
    with pytest.raises(RuntimeError), store.write_artifact(PROCESSED_IMAGES, "v1") as staging:
        (staging / "manifest.json").write_text("{}")
        raise RuntimeError("killed mid-build")
    assert not store.exists(PROCESSED_IMAGES, "v1")
    with store.write_artifact(PROCESSED_IMAGES, "v1") as staging:
        (staging / "manifest.json").write_text('{"a": 1}')
        (staging / "lists").mkdir()
        (staging / "lists" / "train.txt").write_text("x\n")
    keys = sorted(o["Key"] for o in seaweedfs.client().list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["store/processed_images/v1/_COMPLETE.json", "store/processed_images/v1/lists/train.txt", "store/processed_images/v1/manifest.json"]
    # Another machine (an empty cache) reads it back through its own cache.
    other = store_on(seaweedfs, bucket, tmp_path / "b")
    assert other.exists(PROCESSED_IMAGES, "v1") and other.versions(PROCESSED_IMAGES) == ["v1"]
    assert other.read_json(PROCESSED_IMAGES, "v1", "manifest.json") == {"a": 1}
    assert (other.local_path(PROCESSED_IMAGES, "v1") / "lists" / "train.txt").read_text() == "x\n"
    with pytest.raises(FileNotFoundError):
        other.local_path(PROCESSED_IMAGES, "v2")


CRASHING_UPLOAD = """
import os, sys
from dagster_aws.s3 import S3Resource
from resources.s3_artifact_store import S3ArtifactStore
from yolo_assets.assets.keys import LABELED_BATCH
import yolo_assets.core.s3 as s3
endpoint, key, secret, bucket, cache = sys.argv[1:]
store = S3ArtifactStore(s3=S3Resource(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
                                      aws_secret_access_key=secret), bucket=bucket, cache_dir=cache)
original = s3.S3Prefix.upload
def upload_then_die(self, name, path):
    original(self, name, path)
    os._exit(9)  # the process dies after its first file went up: no cleanup, no completion object
s3.S3Prefix.upload = upload_then_die
with store.write_artifact(LABELED_BATCH, "v9") as staging:
    for index in range(3):
        (staging / f"part{index}.bin").write_bytes(os.urandom(1000))
"""


def test_a_crash_mid_upload_leaves_no_valid_looking_artifact(seaweedfs: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    crashed = subprocess.run([sys.executable, "-c", CRASHING_UPLOAD, seaweedfs.endpoint_url, seaweedfs.access_key,
                              seaweedfs.secret_key, bucket, str(tmp_path / "crash")], cwd=REPO, capture_output=True, text=True)
    assert crashed.returncode == 9, crashed.stderr[-2000:]
    uploaded = [o["Key"] for o in seaweedfs.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert uploaded and not any(key.endswith(COMPLETE) for key in uploaded)
    store = store_on(seaweedfs, bucket, tmp_path / "next")
    assert not store.exists(LABELED_BATCH, "v9")
    with store.write_artifact(LABELED_BATCH, "v9") as staging:  # the next writer completes it
        (staging / "part0.bin").write_bytes(b"ok")
    assert store.exists(LABELED_BATCH, "v9")


def test_the_local_cache_is_bounded_least_recently_used_first(seaweedfs: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    writer = store_on(seaweedfs, bucket, tmp_path / "writer")
    for version in ("v1", "v2", "v3"):
        with writer.write_artifact(PROCESSED_IMAGES, version) as staging:
            (staging / "data.bin").write_bytes(os.urandom(40_000))
    reader = store_on(seaweedfs, bucket, tmp_path / "reader", cache_max_bytes=100_000)
    reader.local_path(PROCESSED_IMAGES, "v1")
    reader.local_path(PROCESSED_IMAGES, "v2")
    os.utime(reader.local_path(PROCESSED_IMAGES, "v1") / ".complete", (1, 1))  # v1 used long ago
    reader.local_path(PROCESSED_IMAGES, "v3")
    cached = sorted(p.name for p in (tmp_path / "reader" / "processed_images").iterdir())
    assert cached == ["v2", "v3"]
    before = request_counts()["GetObject"]
    assert (reader.local_path(PROCESSED_IMAGES, "v3") / "data.bin").stat().st_size == 40_000
    assert request_counts()["GetObject"] == before  # a cache hit downloads nothing


def test_objects_are_uploaded_once_and_fetched_where_missing(seaweedfs: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    store = store_on(seaweedfs, bucket, tmp_path / "a")
    for name in ("ab/abc1", "cd/cde2"):
        path = store.object_root("blobs") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
    assert store.publish_objects("blobs", ["ab/abc1", "cd/cde2"]) == 2
    assert store.publish_objects("blobs", ["ab/abc1", "cd/cde2"]) == 0  # already there: no PUT
    other = store_on(seaweedfs, bucket, tmp_path / "b")
    assert other.fetch_objects("blobs", ["ab/abc1", "zz/missing"]) == 1
    assert (other.object_root("blobs") / "ab/abc1").read_bytes() == b"ab/abc1"
    assert other.fetch_objects("blobs", ["ab/abc1"]) == 0


def upload(server: SeaweedFS, bucket: str, folder: Path, prefix: str, marker: bool = True) -> None:
    client = server.client()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "_SUCCESS"):
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
    if marker:
        client.put_object(Bucket=bucket, Key=f"{prefix}/_SUCCESS", Body=b"")


def test_the_landing_zone_lists_complete_batches_in_o_batches_requests(seaweedfs: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    batch = write_batch(tmp_path / "batch", 5, seed=1)
    for name in ("b1", "b2", "b3"):
        upload(seaweedfs, bucket, batch, f"landing/{name}")
    upload(seaweedfs, bucket, batch, "landing/b4_uploading", marker=False)
    zone = S3LandingZone(s3=s3_resource(seaweedfs), bucket=bucket, scratch_dir=str(tmp_path / "scratch"))
    before = request_counts()
    listing = zone.list_complete_batches()
    spent = request_counts() - before
    assert [b.name for b in listing] == ["b1", "b2", "b3"]
    assert spent == {"ListObjectsV2": 1, "HeadObject": 4}  # one listing page, one HEAD per batch folder
    assert len({zone.content_hash(name) for name in ("b1", "b2")}) == 1  # same bytes, same hash
    with zone.open_batch("b1") as (root, rejected):
        assert rejected == [] and len(list((root / "images").iterdir())) == 5
        downloaded = root
    assert not downloaded.exists()


def test_unsafe_object_keys_are_quarantined_not_downloaded(seaweedfs: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    batch = write_batch(tmp_path / "batch", 2, seed=2)
    upload(seaweedfs, bucket, batch, "landing/b1")
    # SeaweedFS itself refuses keys with `..` segments (AWS S3 does not: see the unit test of the rule).
    seaweedfs.client().put_object(Bucket=bucket, Key="landing/b1/images/bell\x07.jpg", Body=b"x")
    zone = S3LandingZone(s3=s3_resource(seaweedfs), bucket=bucket, scratch_dir=str(tmp_path / "scratch"))
    with zone.open_batch("b1") as (root, rejected):
        assert [(entry["image"], entry["reason"]) for entry in rejected] == [("images/bell\x07.jpg", "object_key_unsafe")]
        assert len(list((root / "images").iterdir())) == 2


@pytest.mark.parametrize("key", ["../escape.txt", "images/../../escape.txt", "/etc/passwd", "images\\..\\x.jpg", "a\x00b", "tab\there"])
def test_keys_that_would_leave_the_batch_folder_are_unsafe(key: str) -> None:
    assert unsafe_key_reason(key) is not None


def test_ordinary_keys_are_safe() -> None:
    assert unsafe_key_reason("images/train/part_0001.jpg") is None and unsafe_key_reason("labels/..hidden.txt") is None


def test_an_archive_object_is_a_complete_batch(seaweedfs: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    batch = write_batch(tmp_path / "line_zip", 3, seed=3)
    (batch / "_SUCCESS").unlink()
    archive = shutil.make_archive(str(tmp_path / "line_zip"), "zip", root_dir=tmp_path, base_dir="line_zip")
    seaweedfs.client().upload_file(archive, bucket, "landing/line_zip.zip")
    zone = S3LandingZone(s3=s3_resource(seaweedfs), bucket=bucket, scratch_dir=str(tmp_path / "scratch"))
    [listing] = zone.list_complete_batches()
    assert (listing.name, listing.is_archive) == ("line_zip.zip", True)
    with zone.open_batch("line_zip.zip") as (root, rejected):
        assert rejected == [] and len(list((root / "images").iterdir())) == 3
