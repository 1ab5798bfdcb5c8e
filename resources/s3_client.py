"""The boto3 client the S3 landing zone and artifact store share the settings of: dagster-aws'
`S3Resource` (endpoint, region, credentials from EnvVar, retries), with a connection pool as wide as the
transfers in flight. `S3Resource.get_client()` keeps boto3's pool of 10 connections and takes no client
config, so at real-S3 round trips (10-50 ms) the 11th concurrent request would wait for a connection.
Beside it, a urllib3 pool for the presigned GETs of a landed batch's many small files (`S3Prefix.download_into`).
"""

import boto3
import botocore.session
from botocore import UNSIGNED
from botocore.config import Config
from botocore.httpsession import get_cert_path
from dagster_aws.s3 import S3Resource

from yolo_assets.core.s3 import TRANSFER_THREADS, S3Prefix, count_requests, presigned_get_pool


def transfer_prefix(s3: S3Resource, bucket: str, prefix: str) -> S3Prefix:
    """`bucket`/`prefix` through a counted S3 client with `s3`'s settings and `TRANSFER_THREADS` pooled
    connections, and a pool for the presigned GETs of many small objects, its TLS checked as the client's."""
    core = botocore.session.Session(profile=s3.profile_name)
    session = boto3.session.Session(botocore_session=core)
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
    # What botocore checks TLS against: nothing with verify=False, else AWS_CA_BUNDLE / the profile's
    # ca_bundle, else certifi's bundle.
    ca_bundle = False if s3.verify is False else (core.get_config_variable("ca_bundle") or get_cert_path(True))
    return S3Prefix(count_requests(client), bucket, prefix, presigned_get_pool(ca_bundle, s3.max_attempts))
