"""The landing contract uploaders follow, shared by the landing zones and the synthetic batch writer.

A batch is a top-level folder that is complete once its `_SUCCESS` marker exists (uploaders write it
last), or a single `.zip` / `.tar.gz` / `.tgz` / `.tar` archive file (complete by construction).
"""

import re

SUCCESS_MARKER = "_SUCCESS"
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
# Dagster partition keys must stay printable and unambiguous in selections.
VALID_BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
