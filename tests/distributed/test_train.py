"""``tympan pretrain`` end to end on real local Ray (2 workers, the session's 2-CPU cluster), fed
by the Ray Data pipeline from real shards, logging to a real ``mlflow server`` on 127.0.0.1:
every method trains and checkpoints; ``--resume`` continues; a corrupt record is counted and
listed; a credential in the environment is logged nowhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import (all_artifact_bytes, finite, metric_history, read_summary, tiny,  # noqa: E402
                           write_synthetic_shards)

from tympan.cli import main  # noqa: E402
from tympan.methods.registry import METHODS, load_method  # noqa: E402

pytestmark = pytest.mark.slow
SUMMARY_KEYS = {"method", "steps", "workers", "bad_clips", "loss_first", "loss_last",
                "samples_per_s", "data_wait_fraction", "checkpoint", "mlflow_run_id"}
SMOKE = ["steps=4", "batch_size=8", "checkpoint_every=2", "log_every=2", "val_batches=0",
         "shuffle_buffer=0"]
CORRUPT = "synthetic-0-000005"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_shards")
    write_synthetic_shards(root / "good")
    write_synthetic_shards(root / "bad", corrupt=(CORRUPT,))
    return root


def _pretrain(method, data, out, tracking, teacher, *extra, resume=False):
    argv = ["pretrain", "--method", method, "--data", str(data), "--out", str(out),
            "--workers", "2", "--tracking-uri", tracking, *(["--resume"] if resume else []),
            *SMOKE, *tiny(method, teacher), *extra]
    assert main(argv) == 0
    return read_summary(out)


def _client(uri):
    from mlflow.tracking import MlflowClient
    return MlflowClient(uri)


@pytest.mark.parametrize("method", list(METHODS))
def test_two_worker_pretrain_of_every_method(method, ray_cluster, shards, mlflow_server,
                                             teacher_path, tmp_path, capsys):
    s = _pretrain(method, shards / "good", tmp_path / "run", mlflow_server, teacher_path)
    out = capsys.readouterr().out
    assert SUMMARY_KEYS <= set(s) and s["method"] == method
    assert s["steps"] == 4 and s["workers"] == 2 and s["bad_clips"] == 0
    assert finite(s["loss_first"]) and finite(s["loss_last"])
    assert s["samples_per_s"] > 0 and 0.0 <= s["data_wait_fraction"] <= 1.0
    assert f"mlflow ui --backend-store-uri {mlflow_server}" in out
    # the checkpoint: weights_only load, everything resuming and evaluation need
    payload = torch.load(s["checkpoint"], weights_only=True)
    assert payload["method"] == method and payload["step"] == 4
    assert {"optimizer", "scheduler", "frontend", "data", "train", "config"} <= set(payload)
    assert payload["data"]["position"] is not None and payload["train"]["batch_size"] == 8
    model = load_method(s["checkpoint"])
    with torch.no_grad():
        emb = model.embed_clip(torch.zeros(1, 16000))
    assert emb.shape == (1, model.embedding_dim) and torch.isfinite(emb).all()
    # the MLflow run on the server
    client = _client(mlflow_server)
    run = client.get_run(s["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["method"] == method and run.data.params["train.steps"] == "4"
    assert run.data.params["train.batch_size"] == "8"
    assert {"loss", "lr", "samples_per_s", "data_wait_fraction", "bad_clips"} <= set(run.data.metrics)
    assert [h[0] for h in metric_history(mlflow_server, run.info.run_id, "loss")] == [2, 4]
    assert run.data.tags["ray.job_id"] and run.data.tags["tympan.method"] == method
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json", "bad_clips.json", "checkpoint"} <= arts


def test_resume_continues_steps_schedule_and_loss(ray_cluster, shards, mlflow_server, teacher_path,
                                                  tmp_path):
    out = tmp_path / "run"
    first = _pretrain("cola", shards / "good", out, mlflow_server, teacher_path,
                      "steps=4", "warmup_steps=1", "log_every=1")
    second = _pretrain("cola", shards / "good", out, mlflow_server, teacher_path,
                       "steps=8", "warmup_steps=1", "log_every=1", resume=True)
    assert second["mlflow_run_id"] == first["mlflow_run_id"]          # one run, continued
    assert second["steps"] == 8 and second["restarts"] == 1
    loss = metric_history(mlflow_server, first["mlflow_run_id"], "loss")
    assert [h[0] for h in loss] == list(range(1, 9))                   # step continues at 5
    # the schedule continues from the restored scheduler state (lr at step k = factor(k - 1))
    from tympan.distributed.train import TrainConfig, lr_factor
    lr = {h[0]: h[1] for h in metric_history(mlflow_server, first["mlflow_run_id"], "lr")}
    t8 = TrainConfig(steps=8, warmup_steps=1)
    assert lr[5] == pytest.approx(1e-3 * lr_factor(4, t8), rel=1e-6)
    assert lr[8] == pytest.approx(1e-3 * lr_factor(7, t8), rel=1e-6)
    # optimizer state and loss level continue (a re-initialised model starts near log(B) = 2.08)
    payload = torch.load(second["checkpoint"], weights_only=True)
    assert payload["step"] == 8
    assert max(int(s["step"]) for s in payload["optimizer"]["state"].values()) == 8
    values = [h[1] for h in loss]
    assert abs(values[4] - values[3]) < 0.5 * max(values[:4])
    assert payload["history"]["loss_first"] == pytest.approx(first["loss_first"])


SENTINEL = "SENTINEL-aws-secret-0f9e8d7c6b5a"


def test_corrupt_record_is_counted_and_no_secret_is_logged(ray_cluster, shards, mlflow_server,
                                                           teacher_path, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SENTINEL)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SENTINEL + "-token")
    s = _pretrain("triplet", shards / "bad", tmp_path / "run", mlflow_server, teacher_path,
                  "val_batches=1")
    assert s["bad_clips"] == 1 and s["bad_clips_by_reason"] == {"undecodable": 1}
    listed = json.loads((tmp_path / "run" / "bad_clips.json").read_text())
    assert [c["clip_id"] for c in listed["clips"]] == [CORRUPT]
    client = _client(mlflow_server)
    run = client.get_run(s["mlflow_run_id"])
    assert run.data.metrics["bad_clips"] == 1 and finite(run.data.metrics["val_loss"])
    arts = all_artifact_bytes(mlflow_server, run.info.run_id, tmp_path / "artifacts")
    assert CORRUPT in arts["bad_clips.json"].decode()
    assert json.loads(arts["summary.json"])["bad_clips"] == 1
    # the credential is nowhere in the run: params, tags, metric names, any artifact's bytes
    texts = [*run.data.params.items(), *run.data.tags.items(), *run.data.metrics]
    assert not [t for t in texts if SENTINEL in str(t)]
    assert not [p for p, b in arts.items() if SENTINEL.encode() in b]
    assert arts and "checkpoint/checkpoint.pt" in arts
