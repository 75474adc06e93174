"""Fixture of the study tests: an ``mlflow server`` on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on a free 127.0.0.1 port with a sqlite store; yields its URI."""
    d = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}",
         "--artifacts-destination", str(d / "artifacts")],
        stdout=open(d / "server.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((d / "server.log").read_text()[-2000:])
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("mlflow server did not start in 120 s")
    yield uri
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:        # a loaded machine: gunicorn is slow to stop
        os.killpg(proc.pid, 9)
        proc.wait()


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """The session's local Ray cluster (2 CPUs), always a new one (``address="local"``): a
    ``ray start`` head another process left running on this machine is never joined."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()
