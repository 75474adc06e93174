"""``ray job submit --address http://127.0.0.1:PORT --working-dir . -- tympan pretrain ...``
against a head started with ``ray start --head`` on loopback (its own ports and temp dir; the
test stops exactly that process tree, never ``ray stop``, which would stop every Ray on the
machine). The job must end SUCCEEDED and its run must be on the MLflow server."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import (REPO, VENV_BIN, cli_env, free_port, metric_history, read_summary,  # noqa: E402
                           tiny, wait_http, write_synthetic_shards)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture
def ray_head():
    """``ray start --head --block`` on 127.0.0.1 with free ports; yields the dashboard URL."""
    gcs, dash = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="/tmp/rj")          # short: unix socket paths are limited
    env = cli_env()
    proc = subprocess.Popen(
        [f"{VENV_BIN}/ray", "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
         "--num-cpus", "2", "--include-dashboard", "true", "--temp-dir", temp,
         "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
         "--metrics-export-port", str(free_port()), "--min-worker-port", "20000",
         "--max-worker-port", "20999", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        wait_http(f"{url}/api/version", timeout=600)
        yield url
    finally:
        import os
        import signal
        try:
            os.killpg(proc.pid, signal.SIGTERM)     # the head's own process group only
            proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


def test_ray_job_submit_runs_pretrain(ray_head, mlflow_server, tmp_path, monkeypatch):
    # `ray start --head` in 2.60 turns on token authentication (token in ~/.ray/auth_token);
    # clients use it with RAY_AUTH_MODE=token.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    data = tmp_path / "shards"
    write_synthetic_shards(data)
    out = tmp_path / "run"
    sid = f"tympan-test-{uuid.uuid4().hex[:8]}"
    runtime_env = {"env_vars": {"OMP_NUM_THREADS": "1"}}
    cmd = [f"{VENV_BIN}/ray", "job", "submit", "--address", ray_head, "--working-dir", str(REPO),
           "--submission-id", sid, "--runtime-env-json", json.dumps(runtime_env), "--",
           "tympan", "pretrain", "--method", "triplet", "--data", str(data), "--out", str(out),
           "--workers", "2", "--tracking-uri", mlflow_server, "steps=4", "batch_size=8",
           "checkpoint_every=2", "log_every=2", "val_batches=0", "shuffle_buffer=0", *tiny("triplet")]
    res = subprocess.run(cmd, env=cli_env(RAY_AUTH_MODE="token"), capture_output=True, text=True,
                         timeout=1200)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    from ray.job_submission import JobStatus, JobSubmissionClient
    assert JobSubmissionClient(ray_head).get_job_status(sid) == JobStatus.SUCCEEDED
    s = read_summary(out)
    assert s["steps"] == 4 and s["workers"] == 2
    from mlflow.tracking import MlflowClient
    run = MlflowClient(mlflow_server).get_run(s["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["ray.submission_id"] == sid
    assert [h[0] for h in metric_history(mlflow_server, s["mlflow_run_id"], "loss")] == [2, 4]
    assert "mlflow ui --backend-store-uri" in res.stdout
