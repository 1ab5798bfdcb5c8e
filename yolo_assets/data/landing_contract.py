"""The landing contract uploaders follow, shared by the landing zones and the synthetic batch writer.

A batch is a top-level folder that is complete once its marker exists, written last by the uploader:
  - `<batch>.ready`, an empty file (object) beside the folder: the one to use on S3, where a tick finds
    every such marker in its listing of the top level (2 requests for 1,000 batches), and the safe one
    for tools that upload a folder in no fixed order (`aws s3 sync`, `s5cmd cp`);
  - or `_SUCCESS` inside the folder (the Hadoop/Spark convention, what `synth` writes): on S3 it costs
    one HEAD per such folder on every tick.
Or a batch is a single `.zip` / `.tar.gz` / `.tgz` / `.tar` archive file (complete by construction).
Rewriting the marker after new content is uploaded makes the batch a new version (on S3 with a new
body, such as the time: LastModified counts whole seconds, the ETag tells two writes apart).
"""

import re

SUCCESS_MARKER = "_SUCCESS"
READY_SUFFIX = ".ready"
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
# Dagster partition keys must stay printable and unambiguous in selections.
VALID_BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def ready_marker(batch: str) -> str:
    """The name of the marker beside batch folder `batch`."""
    return batch + READY_SUFFIX
