"""`tympan embed` / `tympan evaluate` end to end on the small offline corpus and on replicas of
ESC-50 and Speech Commands in their published layouts (real audio from the offline build)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from tympan.cli import main
from tympan.config import build
from tympan.distributed.evaluate import balanced_subset
from tympan.methods.registry import get_method

MODELS = {"pretrained", "random-init", "log-mel", "supervised"}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)     # tiny models on two shared cores: one thread is faster
    yield
    torch.set_num_threads(n)


def tiny_checkpoint(path: Path, method: str = "triplet", overrides=("width=0.125",), seed: int = 0) -> Path:
    cls = get_method(method)
    torch.manual_seed(seed)
    cls(build(cls.config_cls, {}, list(overrides))).save(path)
    return path


def copy_task(src: Path, dst: Path, per_split: int) -> Path:
    """A smaller copy of a HEAR task folder: ``per_split`` clips of each split, classes balanced."""
    dst.mkdir(parents=True)
    for f in ("task_metadata.json", "labelvocabulary.csv"):
        shutil.copy(src / f, dst / f)
    for split in ("train", "valid", "test"):
        rows = [{"clip_id": k, "labels": v} for k, v in json.loads((src / f"{split}.json").read_text()).items()]
        items = {r["clip_id"]: r["labels"] for r in balanced_subset(rows, per_split)}
        (dst / f"{split}.json").write_text(json.dumps(items))
        (dst / "16000" / split).mkdir(parents=True)
        for name in items:
            shutil.copy(src / "16000" / split / name, dst / "16000" / split / name)
    return dst


def test_embed_writes_parquet_resumes_and_lists_bad_clips(offline_small, ray_cluster, tmp_path, capsys):
    root, _ = offline_small
    task = copy_task(root / "tasks" / "speech_music_noise", tmp_path / "smn", per_split=6)
    bad = next(iter(sorted((task / "16000" / "test").glob("*.wav"))))
    bad.write_bytes(bad.read_bytes()[:30])                      # truncated header
    ck = tiny_checkpoint(tmp_path / "tri.pt")
    out = tmp_path / "emb"
    args = ["embed", "--checkpoint", str(ck), "--data", str(task), "--out", str(out),
            "--timestamps", "--part-size", "8"]
    assert main(args) == 0
    table = pq.read_table(sorted(out.glob("part-*.parquet")))
    assert table.num_rows == 17 and set(table.column("split").to_pylist()) == {"train", "valid", "test"}
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    assert emb.shape == (17, 128) and emb.dtype == np.float32 and np.isfinite(emb).all()
    assert all(len(v) == 1 for v in table.column("labels").to_pylist())
    times = table.column("timestamps_ms").to_pylist()
    frames = table.column("frame_embeddings").to_pylist()
    for t, f, d in zip(times, frames, table.column("duration_s").to_pylist()):
        assert len(t) == len(f) >= 1 and len(f[0]) == 128
        assert np.all(np.diff(t) > 0) and 0 < t[0] < 1000 * max(d, 0.96)   # centres, in ms
    bad_list = json.loads((out / "bad_clips.json").read_text())
    assert [b["clip_id"] for b in bad_list["clips"]] == [f"test/{bad.stem}"]
    assert bad_list["counts"] and sum(bad_list["counts"].values()) == 1
    # The scene embedding is the mean of the frame embeddings (one implementation).
    first = table.slice(0, 1).to_pylist()[0]
    np.testing.assert_allclose(np.mean(first["frame_embeddings"], axis=0), first["embedding"], atol=1e-5)

    # A rerun finds every unit written and does nothing; another checkpoint is refused.
    capsys.readouterr()
    assert main(args) == 0
    assert "3 units (3 already written)" in capsys.readouterr().out
    other = tiny_checkpoint(tmp_path / "other.pt", seed=1)
    assert main(["embed", "--checkpoint", str(other), "--data", str(task), "--out", str(out)]) == 1
    assert "weights_sha1" in capsys.readouterr().err


def test_evaluate_hear_tasks_every_baseline_and_mlflow(offline_small, ray_cluster, tmp_path):
    import mlflow

    root, _ = offline_small
    ck = tiny_checkpoint(tmp_path / "tri.pt")
    tasks = tmp_path / "tasks"
    for name in ("speech_music_noise", "bird_detection"):
        copy_task(root / "tasks" / name, tasks / name, per_split=16)
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ck), "--tasks", str(tasks), "--out", str(out),
                 "--seeds", "2", "--supervised-steps", "40"]) == 0
    rows = json.loads((out / "results.json").read_text())
    for name in ("speech_music_noise", "bird_detection"):
        got = {r["model"]: r for r in rows if r["task"] == name}
        assert set(got) == MODELS
        for r in got.values():
            assert r["metric"] == "accuracy" and r["n_test"] == 16 and r["n_seeds"] == 2
            assert 0.0 <= r["mean"] <= 1.0 and r["std"] >= 0.0
    assert {"task", "model", "metric", "mean", "std", "n_test"} <= set(
        (out / "results.csv").read_text().splitlines()[0].split(","))
    md = (out / "results.md").read_text()
    assert "| speech_music_noise | accuracy | 16 |" in md and "supervised" in md
    summary = json.loads((out / "evaluation.json").read_text())
    mlflow.set_tracking_uri(summary["tracking_uri"])
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.data.metrics["speech_music_noise/log-mel"] == pytest.approx(
        next(r["mean"] for r in rows if r["task"] == "speech_music_noise" and r["model"] == "log-mel"))


def _esc50_replica(root: Path, dst: Path, per_class_fold: int = 2) -> int:
    """ESC-50 layout (meta/esc50.csv + audio/{fold}-{src}-{take}-{target}.wav) from the
    offline speech/music/noise clips: 3 classes x 5 folds."""
    src = root / "tasks" / "speech_music_noise"
    by_label: dict[str, list[Path]] = {}
    for split in ("train", "valid", "test"):
        for name, labels in sorted(json.loads((src / f"{split}.json").read_text()).items()):
            by_label.setdefault(labels[0], []).append(src / "16000" / split / name)
    (dst / "audio").mkdir(parents=True)
    (dst / "meta").mkdir()
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for target, (label, files) in enumerate(sorted(by_label.items())):
        for k in range(5 * per_class_fold):
            fold, take = 1 + k // per_class_fold, "ABCDEFGH"[k % per_class_fold]
            srcid = 100000 + 100 * target + k
            name = f"{fold}-{srcid}-{take}-{target}.wav"
            audio, sr = sf.read(files[k], dtype="float32")
            sf.write(dst / "audio" / name, np.resize(audio, 5 * sr), sr)   # ESC-50 clips: 5 s
            lines.append(f"{name},{fold},{target},{label},False,{srcid},{take}")
    (dst / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def test_esc50_layout_is_scored_by_cross_validation(offline_small, tmp_path):
    root, _ = offline_small
    n = _esc50_replica(root, tmp_path / "ESC-50-master")
    m = tmp_path / "esc50.parquet"
    assert main(["data", "ingest", "esc50", str(tmp_path / "ESC-50-master"), "--out", str(m)]) == 0
    ck = tiny_checkpoint(tmp_path / "tri.pt")
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ck), "--tasks", str(m), "--out", str(out),
                 "--backend", "local", "--seeds", "1", "--models", "pretrained,log-mel"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert {r["model"] for r in rows} == {"pretrained", "log-mel"}
    for r in rows:
        # every clip is a test clip exactly once over the 5 folds
        assert r["task"] == "esc50" and r["protocol"] == "5-fold CV" and r["n_test"] == n
    logmel = next(r for r in rows if r["model"] == "log-mel")
    assert logmel["mean"] > 0.6          # speech / music / noise: chance 1/3, log-mel ~0.9


def test_cv_probe_tests_each_fold_once_with_inner_selection():
    from tympan.methods.probe import cv_probe

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 8)) * 3
    y = rng.integers(0, 3, 60)
    x = centres[y] + 0.5 * rng.standard_normal((60, 8))
    folds = [f"fold{1 + i % 5}" for i in range(60)]
    res = cv_probe(x, [f"c{v}" for v in y], folds)
    assert sorted(res) == [f"fold{i}" for i in range(1, 6)]
    assert all(r.score > 0.9 and r.valid_score > 0.9 for r in res.values())


def test_multilabel_probe_is_scored_by_map():
    from tympan.methods.probe import linear_probe

    rng = np.random.default_rng(0)
    y = rng.random((200, 4)) < 0.3                    # 4 independent labels
    x = y * 2.0 + 0.5 * rng.standard_normal((200, 4)) # each visible in one feature
    labels = [[f"l{j}" for j in np.flatnonzero(r)] for r in y]
    good = linear_probe(x[:150], labels[:150], x[150:], labels[150:], multilabel=True)
    assert good.metric == "mAP" and good.score > 0.9
    shuffled = [labels[i] for i in rng.permutation(50) + 150]
    assert linear_probe(x[:150], labels[:150], x[150:], shuffled, multilabel=True).score < 0.6


def _speechcommands_replica(root: Path, dst: Path, words: int = 4) -> None:
    """Speech Commands layout (<word>/<speaker>_nohash_<n>.wav, validation_list.txt,
    testing_list.txt, _background_noise_/) from the offline keyword clips; a voice is a speaker."""
    src = root / "tasks" / "keywords"
    lists = {"valid": [], "test": []}
    kept = sorted({lab[0] for lab in json.loads((src / "train.json").read_text()).values()})[:words]
    for split in ("train", "valid", "test"):
        for name, labels in sorted(json.loads((src / f"{split}.json").read_text()).items()):
            word = labels[0]
            if word not in kept:
                continue
            voice = name[len(word) + 1:].rsplit("-", 1)[0]
            speaker = hashlib.sha1(voice.encode()).hexdigest()[:8]
            rel = f"{word}/{speaker}_nohash_0.wav"
            (dst / word).mkdir(parents=True, exist_ok=True)
            shutil.copy(src / "16000" / split / name, dst / rel)
            if split in lists:
                lists[split].append(rel)
    (dst / "validation_list.txt").write_text("\n".join(lists["valid"]) + "\n")
    (dst / "testing_list.txt").write_text("\n".join(lists["test"]) + "\n")
    (dst / "_background_noise_").mkdir()
    sf.write(dst / "_background_noise_" / "white_noise.wav",
             0.1 * np.random.default_rng(0).standard_normal(32000).astype(np.float32), 16000)


def test_speechcommands_layout_ingest_then_evaluate(offline_small, tmp_path, capsys):
    root, _ = offline_small
    _speechcommands_replica(root, tmp_path / "speech_commands_v0.02")
    m = tmp_path / "sc.parquet"
    assert main(["data", "ingest", "speechcommands", str(tmp_path / "speech_commands_v0.02"),
                 "--out", str(m)]) == 0
    ck = tiny_checkpoint(tmp_path / "cola.pt", "cola", ("width=0.1", "depth=0.1"))
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ck), "--tasks", str(m), "--out", str(out),
                 "--backend", "local", "--seeds", "1", "--models", "pretrained,random-init,log-mel"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert {r["model"] for r in rows} == {"pretrained", "random-init", "log-mel"}
    assert all(r["task"] == "sc" and r["protocol"] == "splits" and r["n_test"] == 16 for r in rows)
    info = json.loads((out / "evaluation.json").read_text())["tasks"][0]
    assert info["ignored_splits"] == {"background": 1}          # reported, not scored

    # bad input: a clear error naming the path, non-zero exit
    assert main(["evaluate", "--checkpoint", str(ck), "--tasks", str(tmp_path / "nope")]) == 1
    assert "nope" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt"), "--tasks", str(m)]) == 1
    assert "missing.pt" in capsys.readouterr().err


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 (sqlite store, proxied artifacts)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        # cwd outside the repository: `python -m` puts cwd first on sys.path, where the
        # repository's datasets/ folder would shadow Hugging Face `datasets` for MLflow
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(480):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("mlflow server did not start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_evaluate_a_runs_uri_checkpoint_and_tag_its_run(offline_small, mlflow_server, tmp_path, monkeypatch):
    import mlflow

    root, _ = offline_small
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("pretrain-stand-in")   # this server's own experiment, not one cached from another
    ck = tiny_checkpoint(tmp_path / "model.pt")
    with mlflow.start_run() as run:               # stands in for a pretraining run
        mlflow.log_artifact(str(ck), artifact_path="checkpoint")
    task = copy_task(root / "tasks" / "speech_music_noise", tmp_path / "smn", per_split=6)
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", f"runs:/{run.info.run_id}/checkpoint/model.pt",
                 "--tasks", str(task), "--out", str(out), "--backend", "local", "--seeds", "1",
                 "--models", "pretrained,log-mel"]) == 0
    summary = json.loads((out / "evaluation.json").read_text())
    ev = mlflow.get_run(summary["mlflow_run_id"])
    assert summary["tracking_uri"] == mlflow_server
    assert ev.data.tags["tympan.pretrain_run_id"] == run.info.run_id
    assert "results.json" in {a.path for a in mlflow.MlflowClient().list_artifacts(ev.info.run_id)}


# Measured (docs/results.md section 5; 3 seeds, whole splits of the small build): supervised
# minus random-init, means over seeds, +0.48 on pitch and +0.24 on language_id, one seed's score
# moving by up to ~0.17. A margin of 0.10 on the means is well inside both gaps. Not asserted:
# speech_music_noise (+0.02), bird_detection (-0.01) and scenes (-0.015), whose test clips come
# from held-out sources: there the gap is inside the seed spread (section 5, LP-FT included).
SUPERVISED_MARGIN = 0.10


def test_supervised_baseline_beats_random_init_on_small_tasks(offline_small, tmp_path):
    from tympan.distributed.evaluate import EvalConfig, evaluate

    root, _ = offline_small
    ck = tiny_checkpoint(tmp_path / "tri.pt")
    names = ("pitch", "language_id")
    rows = evaluate(str(ck), [str(root / "tasks" / n) for n in names], tmp_path / "eval",
                    EvalConfig(seeds=(0, 1, 2), models=("random-init", "supervised"), backend="local"),
                    mlflow_run=False, log=lambda *a: None)
    got = {(r["task"], r["model"]): r for r in rows}
    for name in names:
        sup, rnd = got[(name, "supervised")], got[(name, "random-init")]
        assert sup["n_seeds"] == rnd["n_seeds"] == 3 and sup["n_test"] == rnd["n_test"] >= 24
        assert sup["mean"] > rnd["mean"] + SUPERVISED_MARGIN, (name, sup["scores"], rnd["scores"])
