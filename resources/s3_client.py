"""The boto3 client the S3 landing zone and artifact store share the settings of: dagster-aws'
`S3Resource` (endpoint, region, credentials from EnvVar, retries), with a connection pool as wide as the
transfers in flight. `S3Resource.get_client()` keeps boto3's pool of 10 connections and takes no client
config, so at real-S3 round trips (10-50 ms) the 11th concurrent request would wait for a connection.
"""

from typing import Any

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from dagster_aws.s3 import S3Resource

from yolo_assets.core.s3 import TRANSFER_THREADS, count_requests


def transfer_client(s3: S3Resource) -> Any:
    """A counted S3 client with `s3`'s settings and `TRANSFER_THREADS` pooled connections."""
    session = boto3.session.Session(profile_name=s3.profile_name)
    client = session.client(
        "s3",
        region_name=s3.region_name,
        endpoint_url=s3.endpoint_url,
        use_ssl=s3.use_ssl,
        verify=s3.verify,
        aws_access_key_id=s3.aws_access_key_id,
        aws_secret_access_key=s3.aws_secret_access_key,
        aws_session_token=s3.aws_session_token,
        config=Config(
            retries={"max_attempts": s3.max_attempts, "mode": "standard"},
            max_pool_connections=TRANSFER_THREADS,
            signature_version=UNSIGNED if s3.use_unsigned_session else None,  # a public bucket, as S3Resource allows
        ),
    )
    return count_requests(client)
