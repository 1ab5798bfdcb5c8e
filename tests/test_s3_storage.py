"""The S3 landing zone and artifact store against a real S3 server (SeaweedFS on 127.0.0.1)."""

import os
import shutil
import subprocess
import sys
import traceback
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.definitions.sensor_definition import SensorExecutionData
from dagster_aws.s3 import S3Resource
from helpers import REPO, Home

from resources.s3_artifact_store import COMPLETE, S3ArtifactStore
from resources.s3_landing_zone import S3LandingZone, unsafe_key_reason
from sensors.labeled_data import labeled_data_sensor
from yolo_assets.assets.keys import LABELED_BATCH, PROCESSED_IMAGES
from yolo_assets.core.s3 import ObjectGetError, count_requests, parallel, request_counts
from yolo_assets.data.synth import write_batch
from yolo_assets.ops.services import SeaweedFS, free_ports


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


def write_objects(store: S3ArtifactStore, namespace: str, objects: dict[str, bytes]) -> None:
    for name, data in objects.items():
        path = store.object_root(namespace) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_objects_are_packed_once_and_fetched_where_missing_by_ranged_gets(seaweedfs: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    store = store_on(seaweedfs, bucket, tmp_path / "a")
    objects = {f"{i:02x}/{i:02x}{'e' * 10}": os.urandom(1000 + i) for i in range(40)}
    write_objects(store, "blobs", objects)
    before = request_counts()
    assert store.publish_objects("blobs", list(objects)) == 40
    # One listing of the namespace's packs, then the pack and, last, its index: one conditional PUT each.
    assert request_counts() - before == {"ListObjectsV2": 1, "PutObject": 2}
    keys = [o["Key"] for o in seaweedfs.client().list_objects_v2(Bucket=bucket, Prefix="store/")["Contents"]]
    assert len(keys) == 2 and all(key.startswith("store/_packs/blobs/") for key in keys), keys
    first = next(iter(objects))
    (store.object_root("blobs") / first).write_bytes(b"other bytes")  # (content-addressed: never so)
    before = request_counts()
    assert store.publish_objects("blobs", list(objects)) == 0  # already packed: not sent again, nothing replaced
    assert request_counts() - before == {}  # this store wrote the index: known without a request
    other = store_on(seaweedfs, bucket, tmp_path / "b")
    before = request_counts()
    assert other.fetch_objects("blobs", [*objects, "zz/missing"]) == 40
    # The listing, the index, one ranged GET for the 40 neighbours; the missing name costs one listing
    # of the folder of loose objects (empty: a store written with packs only), not a GET.
    assert request_counts() - before == {"ListObjectsV2": 2, "GetObject": 2}
    assert all((other.object_root("blobs") / name).read_bytes() == data for name, data in objects.items())
    assert other.fetch_objects("blobs", list(objects)) == 0
    every_other = store_on(seaweedfs, bucket, tmp_path / "c")  # the gaps between them are read through
    wanted = list(objects)[::2]
    assert every_other.fetch_objects("blobs", wanted) == 20
    assert all((every_other.object_root("blobs") / name).read_bytes() == objects[name] for name in wanted)
    assert not (every_other.object_root("blobs") / list(objects)[1]).exists()


def test_a_pack_whose_index_is_not_written_is_not_there(seaweedfs: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    """An upload cut short between a pack and its index: the objects are packed again, not lost."""
    client = seaweedfs.client()
    store = store_on(seaweedfs, bucket, tmp_path / "a")
    write_objects(store, "blobs", {"ab/abc1": b"one", "cd/cde2": b"two"})
    client.put_object(Bucket=bucket, Key="store/_packs/blobs/" + "0" * 64 + ".pack", Body=b"onetwo")
    reader = store_on(seaweedfs, bucket, tmp_path / "reader")
    assert reader.fetch_objects("blobs", ["ab/abc1"]) == 0
    assert store.publish_objects("blobs", ["ab/abc1", "cd/cde2"]) == 2
    assert reader.fetch_objects("blobs", ["ab/abc1", "cd/cde2"]) == 2
    assert (reader.object_root("blobs") / "cd/cde2").read_bytes() == b"two"


def test_a_store_written_before_packs_stays_readable(seaweedfs: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    """One object per key under `_objects/<namespace>/` (the layout before packs) is still read, and
    publishing next to it packs only what is new there."""
    client = seaweedfs.client()
    client.put_object(Bucket=bucket, Key="store/_objects/blobs/ab/abc1", Body=b"old layout")
    store = store_on(seaweedfs, bucket, tmp_path / "a")
    write_objects(store, "blobs", {"cd/cde2": b"new"})
    assert store.publish_objects("blobs", ["cd/cde2"]) == 1
    reader = store_on(seaweedfs, bucket, tmp_path / "reader")
    assert reader.fetch_objects("blobs", ["ab/abc1", "cd/cde2", "zz/missing"]) == 2
    assert (reader.object_root("blobs") / "ab/abc1").read_bytes() == b"old layout"
    assert (reader.object_root("blobs") / "cd/cde2").read_bytes() == b"new"


def upload(server: SeaweedFS, bucket: str, folder: Path, prefix: str, marker: str | None = "ready") -> None:
    """Land `folder` under `prefix` as an uploader would: the objects, then the marker, `ready` (the
    `<prefix>.ready` object beside the folder), `inner` (`<prefix>/_SUCCESS`) or none (still uploading)."""
    client = server.client()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "_SUCCESS"):
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
    if marker is not None:
        # A new body each time: LastModified counts whole seconds, the ETag tells two writes apart.
        body = uuid.uuid4().hex.encode()
        client.put_object(Bucket=bucket, Key=f"{prefix}.ready" if marker == "ready" else f"{prefix}/_SUCCESS", Body=body)


def landing_zone(server: SeaweedFS, bucket: str, tmp_path: Path) -> S3LandingZone:
    return S3LandingZone(s3=s3_resource(server), bucket=bucket, scratch_dir=str(tmp_path / "scratch"))


def sensor_tick(zone: S3LandingZone, home: Home, cursor: str | None) -> SensorExecutionData:
    """One `labeled_data_sensor` tick of the code location `home` loads, over the S3 landing zone `zone`."""
    with dg.build_sensor_context(instance_ref=home.instance.get_ref(), cursor=cursor, definitions=home.defs,
                                 resources={"landing_zone": zone}) as context:
        return labeled_data_sensor.evaluate_tick(context)


def requested_batches(result: SensorExecutionData) -> list[str]:
    return sorted(request.partition_key or "" for request in result.run_requests or [])


def test_the_landing_zone_finds_ready_markers_in_its_listing_and_heads_only_folders_without_one(
    seaweedfs: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    batch = write_batch(tmp_path / "batch", 5, seed=1)
    for name in ("b1", "b2"):
        upload(seaweedfs, bucket, batch, f"landing/{name}")
    upload(seaweedfs, bucket, batch, "landing/b3_inner_marker", marker="inner")
    upload(seaweedfs, bucket, batch, "landing/b4_uploading", marker=None)
    zone = landing_zone(seaweedfs, bucket, tmp_path)
    before = request_counts()
    listing = zone.list_complete_batches()
    spent = request_counts() - before
    assert [b.name for b in listing] == ["b1", "b2", "b3_inner_marker"]
    assert spent == {"ListObjectsV2": 1, "HeadObject": 2}  # one listing page; a HEAD for each folder without `.ready`
    assert len({zone.content_hash(name) for name in ("b1", "b2", "b3_inner_marker")}) == 1  # same bytes, same hash
    with zone.open_batch("b1") as (root, rejected):
        assert rejected == [] and len(list((root / "images").iterdir())) == 5
        downloaded = root
    assert not downloaded.exists()


def test_an_idle_tick_over_1000_batches_costs_two_requests_and_a_batch_landed_while_it_lists_is_found(
    seaweedfs: SeaweedFS, bucket: str, tmp_path: Path, home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = seaweedfs.client()
    names = [f"b{index:04d}" for index in range(1, 1001)]
    parallel(lambda name: client.put_object(Bucket=bucket, Key=f"landing/{name}/images/a.jpg", Body=b"x"), names)
    parallel(lambda name: client.put_object(Bucket=bucket, Key=f"landing/{name}.ready", Body=b""), names)
    zone = landing_zone(seaweedfs, bucket, tmp_path)
    first = sensor_tick(zone, home, None)
    assert requested_batches(first) == names

    before = request_counts()
    idle = sensor_tick(zone, home, first.cursor)
    assert (request_counts() - before) == {"ListObjectsV2": 2} and not idle.run_requests  # 2,000 entries, 2 pages

    # Two batches land, whole, while the tick lists: one sorts into the page already read, one after it.
    landed: list[str] = []

    def land_during_the_listing(**_: object) -> None:
        if not landed:
            for name in ("a_early", "z_late"):
                client.put_object(Bucket=bucket, Key=f"landing/{name}/images/a.jpg", Body=b"x")
                client.put_object(Bucket=bucket, Key=f"landing/{name}.ready", Body=b"")
                landed.append(name)

    def client_landing_during_the_listing(client: Any) -> Any:  # the sensor's own client, from its resource
        client.meta.events.register("after-call.s3.ListObjectsV2", land_during_the_listing)
        return count_requests(client)

    with monkeypatch.context() as patched:
        patched.setattr("resources.s3_client.count_requests", client_landing_during_the_listing)
        during = sensor_tick(zone, home, idle.cursor)
    after = sensor_tick(zone, home, during.cursor)
    assert landed and requested_batches(during) == ["z_late"] and requested_batches(after) == ["a_early"]
    assert not sensor_tick(zone, home, after.cursor).run_requests


def test_a_late_marker_and_a_re_upload_with_new_content_are_found(
    seaweedfs: SeaweedFS, bucket: str, tmp_path: Path, home: Home
) -> None:
    batch = write_batch(tmp_path / "batch", 3, seed=4)
    zone = landing_zone(seaweedfs, bucket, tmp_path)
    upload(seaweedfs, bucket, batch, "landing/line_a", marker=None)
    uploading = sensor_tick(zone, home, None)
    assert not uploading.run_requests  # objects without their marker: still uploading

    seaweedfs.client().put_object(Bucket=bucket, Key="landing/line_a.ready", Body=b"")
    complete = sensor_tick(zone, home, uploading.cursor)
    assert requested_batches(complete) == ["line_a"]

    label = next((batch / "labels").iterdir())
    label.write_text("0 0.5 0.5 0.2 0.2\n")
    upload(seaweedfs, bucket, batch, "landing/line_a")  # new content, then the marker rewritten
    again = sensor_tick(zone, home, complete.cursor)
    assert requested_batches(again) == ["line_a"]
    assert {r.run_key for r in again.run_requests or []}.isdisjoint({r.run_key for r in complete.run_requests or []})


def test_unsafe_object_keys_are_quarantined_not_downloaded(seaweedfs: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    batch = write_batch(tmp_path / "batch", 2, seed=2)
    upload(seaweedfs, bucket, batch, "landing/b1")
    # SeaweedFS itself refuses keys with `..` segments (AWS S3 does not: see the unit test of the rule).
    seaweedfs.client().put_object(Bucket=bucket, Key="landing/b1/images/bell\x07.jpg", Body=b"x")
    zone = S3LandingZone(s3=s3_resource(seaweedfs), bucket=bucket, scratch_dir=str(tmp_path / "scratch"))
    with zone.open_batch("b1") as (root, rejected):
        assert [(entry["image"], entry["reason"]) for entry in rejected] == [("images/bell\x07.jpg", "object_key_unsafe")]
        assert len(list((root / "images").iterdir())) == 2


def test_a_batch_is_downloaded_by_presigned_gets_one_each_and_a_failure_names_the_object_not_the_credentials(
    seaweedfs: SeaweedFS, bucket: str, tmp_path: Path,
) -> None:
    batch = write_batch(tmp_path / "batch", 3, seed=4)
    upload(seaweedfs, bucket, batch, "landing/b1")
    zone = S3LandingZone(s3=s3_resource(seaweedfs), bucket=bucket, scratch_dir=str(tmp_path / "scratch"))
    assert zone.remote.gets is not None  # the landing zone's downloads go through the presigned-GET pool
    before = request_counts()
    with zone.open_batch("b1") as (root, rejected):
        assert rejected == [] and {p.relative_to(root) for p in root.rglob("*") if p.is_file()} == {
            p.relative_to(batch) for p in batch.rglob("*") if p.is_file() and p.name != "_SUCCESS"}
        assert all((root / p.relative_to(batch)).read_bytes() == p.read_bytes() for p in (batch / "images").iterdir())
    spent = request_counts() - before
    assert spent["GetObject"] == 3 * 2 + 1  # images, labels, data.yaml: one GET each (and one listing)
    with pytest.raises(ObjectGetError, match=r"HTTP 404 NoSuchKey"):
        zone.remote.child("b1").download_into(["images/missing.jpg"], tmp_path / "missing")
    wrong = S3LandingZone(s3=S3Resource(endpoint_url=seaweedfs.endpoint_url, region_name="us-east-1", aws_access_key_id=seaweedfs.access_key,
                                        aws_secret_access_key="not-the-secret"), bucket=bucket, scratch_dir=str(tmp_path / "scratch"))
    with pytest.raises(ObjectGetError, match=r"HTTP 403 SignatureDoesNotMatch"):
        wrong.remote.child("b1").download_into(["data.yaml"], tmp_path / "wrong")
    closed = S3LandingZone(s3=S3Resource(endpoint_url=f"http://127.0.0.1:{free_ports(1)[0]}", region_name="us-east-1", max_attempts=1,
                                         aws_access_key_id=seaweedfs.access_key, aws_secret_access_key=seaweedfs.secret_key),
                           bucket=bucket, scratch_dir=str(tmp_path / "scratch"))
    with pytest.raises(ConnectionError) as refused:
        closed.remote.child("b1").download_into(["data.yaml"], tmp_path / "closed")
    text = "".join(traceback.format_exception(refused.value))
    assert "Connection refused" in text and f"s3://{bucket}/landing/b1/data.yaml" in text  # transient, and which object
    assert seaweedfs.access_key not in text and "X-Amz-Signature" not in text  # the presigned URL's query stays out


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
