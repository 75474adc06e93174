"""Shared fixtures: real local services (moto S3 on 127.0.0.1, a local Ray cluster) and the
small offline corpus (built once per session: tasks, AV corpus, pretraining shards).

Per-folder fixtures live in each tests/<folder>/conftest.py.
"""

from __future__ import annotations

import os
import uuid

import pytest


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1; sets AWS_* env vars so every client (pyarrow, s3fs,
    boto3, Ray workers started afterwards) talks to it through the endpoint override.

    Yields ``{"endpoint_url": ..., "storage_options": {...}}``.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield {"endpoint_url": endpoint,
               "storage_options": {"key": "testing", "secret": "testing",
                                   "client_kwargs": {"endpoint_url": endpoint}}}
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh, empty bucket on the moto server; yields its name."""
    import boto3

    name = f"tympan-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server["endpoint_url"]).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """One local Ray cluster for the whole session (2 CPUs, as on CI machines).

    It depends on ``s3_server`` so that the AWS_* environment (endpoint override) exists
    before Ray starts: workers inherit the environment they were started with."""
    import ray

    if not ray.is_initialized():
        # address="local": always a new cluster, never one another process started with `ray start`
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def offline_small(tmp_path_factory):
    """One ``--scale small`` build of the offline corpora (Debian cache reused), shared by every
    test that reads it: ``(root, report)``."""
    from tympan.datasets.offline.build import build_offline

    out = tmp_path_factory.mktemp("offline")
    return out, build_offline(out, scale="small", seed=0)
