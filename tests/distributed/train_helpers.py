"""Shared by the pretraining tests (tests/distributed/test_train*.py): a real ``mlflow server``
on 127.0.0.1, a tiny SoundNet teacher, shard sets of synthetic clips every method can read
(audio + 1-fps frames + a transcript), tiny method configs, and a CLI runner.

Imported by the test modules (``from train_helpers import ...``), fixtures included."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
VENV_BIN = str(Path(sys.executable).parent)

# Narrow versions of each method (the architectures of tests/methods, smaller still).
_SLICE = ["slice_frames=32", "width=0.125", "dim=32", "frontend.n_mels=32"]
TINY: dict[str, list[str]] = {
    "audio2vec-cbow": _SLICE, "audio2vec-skipgram": _SLICE, "temporal-gap": _SLICE, "triplet": _SLICE,
    "cola": ["crop_frames=48", "width=0.125", "projection_dim=32", "frontend.n_mels=32"],
    "l3": ["audio_input=mel128", "crop_s=0.25", "image_size=32", "width=0.125"],
    "soundnet": ["n_classes=4", "crop_s=0.5", "width=0.125", "teacher.image_size=32"],
    "audio-word2vec": ["hidden=16", "max_s=0.5"],
    "audio-text": ["crop_s=0.5", "width=0.125", "embed_dim=32", "vocab_size=512", "word_hidden=32"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120.0) -> None:
    """Until ``url`` answers HTTP at all (a 401 of a token-protected Ray dashboard counts)."""
    import urllib.error

    t0 = time.time()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            pass
        if time.time() - t0 > timeout:
            raise TimeoutError(f"{url} did not answer within {timeout} s")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 (free port), sqlite backend and artifact store in tmp."""
    d = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    log = open(d / "server.log", "w")
    proc = subprocess.Popen(
        [PYTHON, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}",
         "--artifacts-destination", str(d / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=d)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", timeout=600)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def teacher_path(tmp_path_factory) -> str:
    """A tiny TorchScript image classifier (4 classes) standing in for SoundNet's teacher."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.jit.script(net.eval()).save(str(path))
    return str(path)


def tiny(method: str, teacher: str | None = None) -> list[str]:
    extra = [f"teacher.path={teacher}"] if method == "soundnet" else []
    return TINY[method] + extra


def write_synthetic_shards(out: Path, n_shards: int = 4, per_shard: int = 12, seed: int = 0,
                           corrupt: tuple[str, ...] = ()) -> list[str]:
    """Shards of 2-s synthetic clips with 32x32 frames and a transcript (every method reads
    them). Clips whose id is in ``corrupt`` get undecodable FLAC bytes. Returns the clip ids."""
    from tympan.datasets.shards import encode_record, shard_name, write_shard
    from tympan.datasets.synthetic import synthetic_clips

    clips = synthetic_clips(n_shards * per_shard, duration_s=2.0, seed=seed, with_frames=True,
                            with_words=True, frame_size=32)
    out.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        records = []
        for c in clips[s * per_shard:(s + 1) * per_shard]:
            row = {"clip_id": c.clip_id, "source": f"synthetic://{c.clip_id}", "start_s": None,
                   "end_s": None, "split": "train", "video_source": None, "labels": c.labels,
                   "meta": c.meta}
            rec = encode_record(row, c.audio, c.frames, c.frame_times)
            if c.clip_id in corrupt:
                rec = [(n, b"\x00garbage, not FLAC" * 8) if n.endswith(".flac") else (n, b)
                       for n, b in rec]
            records.append(rec)
        write_shard(str(out / shard_name(s)), records)
    return [c.clip_id for c in clips]


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for a ``tympan`` subprocess: this checkout first on the path, the venv's
    console scripts on PATH, one torch thread (2 shared cores)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                       if p and p != str(REPO)])
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def read_summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float, int]]:
    """``[(step, value, timestamp)]`` in logging order."""
    from mlflow.tracking import MlflowClient

    hist = MlflowClient(tracking_uri).get_metric_history(run_id, key)
    return sorted(((m.step, m.value, m.timestamp) for m in hist), key=lambda x: (x[2], x[0]))


def all_artifact_bytes(tracking_uri: str, run_id: str, dst: Path) -> dict[str, bytes]:
    """Every artifact of the run, downloaded: ``{relative path: bytes}``."""
    from mlflow.artifacts import download_artifacts

    local = Path(download_artifacts(run_id=run_id, artifact_path="", dst_path=str(dst),
                                    tracking_uri=tracking_uri))
    return {str(p.relative_to(local)): p.read_bytes() for p in local.rglob("*") if p.is_file()}


def finite(x) -> bool:
    return x is not None and bool(np.isfinite(x))
