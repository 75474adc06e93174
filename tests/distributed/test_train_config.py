"""The pretraining configuration, refused or accepted before any Ray resource is taken; the
learning-rate schedule; worker sizing; credential redaction; the CLI's pretrain options.
No Ray here (tests/distributed/test_train.py runs the loop)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from tympan.cli import build_parser, main
from tympan.config import ConfigError
from tympan.distributed.train import (TrainConfig, check_data_cpus, check_world_sizes, lr_factor,
                                      parse_workers, resolve_configs, worker_resources)
from tympan.distributed.tracking import redact, resolve_tracking_uri, secret_values
from tympan.methods.registry import METHODS


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_takes_steps_and_global_batch(method):
    train, cfg = resolve_configs(method, None, ["steps=7", "batch_size=12"])
    assert train.steps == 7 and train.batch_size == 12 and cfg.batch_size == 12


def test_keys_split_between_training_and_method(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 50\nwidth: 0.5\noptim:\n  lr: 0.002\n  weight_decay: 0.1\n")
    train, cfg = resolve_configs("cola", f, ["optim.lr=3e-4", "grad_accum=2", "frontend.n_mels=32"])
    assert (train.steps, train.grad_accum) == (50, 2)
    assert cfg.width == 0.5 and cfg.frontend.n_mels == 32
    assert cfg.optim.lr == 3e-4 and cfg.optim.weight_decay == 0.1    # override on top, file kept
    assert train.batch_size == cfg.batch_size == 64                    # the method's default
    # a resumed run: stored configs first, new overrides win
    base = {**dataclasses.asdict(cfg), **dataclasses.asdict(train)}
    train2, cfg2 = resolve_configs("cola", None, ["steps=80"], base=base)
    assert train2.steps == 80 and train2.grad_accum == 2 and cfg2.optim.weight_decay == 0.1


@pytest.mark.parametrize("override, key", [
    ("steps=0", "steps"), ("batch_size=-4", "batch_size"), ("warmup_steps=100", "warmup_steps"),
    ("nonsense=1", "nonsense"), ("optim.lr=-1", "optim.lr"), ("width=abc", "width"),
    ("precision=fp8", "precision"), ("min_lr_ratio=2", "min_lr_ratio")])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        resolve_configs("triplet", None, ["steps=10", override])
    assert e.value.key == key


def test_unknown_key_lists_both_configs():
    with pytest.raises(ConfigError, match="training keys: .*checkpoint_every"):
        resolve_configs("cola", None, ["checkpoint_evry=5"])


def test_global_batch_must_split_over_every_world_size():
    train = TrainConfig(batch_size=64)
    with pytest.raises(ConfigError, match=r"on 3 worker\(s\).*multiple of 12"):
        check_world_sizes(train, (2, 4))
    check_world_sizes(TrainConfig(batch_size=48), (1, 4))            # 1, 2, 3, 4 all divide 48
    with pytest.raises(ConfigError, match="micro-batch"):
        check_world_sizes(TrainConfig(batch_size=12, grad_accum=8), (1, 1))
    assert parse_workers("3") == (3, 3) and parse_workers("1-2") == (1, 2)
    for bad in ("0", "3-2", "two", "1-x"):
        with pytest.raises(ConfigError):
            parse_workers(bad)


def test_warmup_then_cosine():
    t = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    f = [lr_factor(s, t) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)        # linear warm-up
    assert all(a < b for a, b in zip(f[:10], f[1:10]))
    assert all(a >= b for a, b in zip(f[10:], f[11:]))                       # then decays
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, t) == pytest.approx(0.1)                           # floor at the end
    assert TrainConfig(steps=200).warmup == 10                              # default: 5 %


def test_workers_leave_cpus_to_the_data_pipeline():
    assert worker_resources(2, 0, cluster_cpus=2) == {"CPU": 0.5}          # 2 workers, 2 cores
    assert worker_resources(1, 0, cluster_cpus=2) == {"CPU": 1.0}
    assert worker_resources(8, 0, cluster_cpus=4) == {"CPU": 0.25}
    assert worker_resources(2, 0, cluster_cpus=2, cpus_per_worker=1.5) == {"CPU": 1.5}
    gpu = worker_resources(8, 1, cluster_cpus=96)
    assert gpu == {"CPU": 1.0, "GPU": 1}
    assert check_data_cpus(8, gpu, 96, data_cpus_per_gpu=4) is None          # 88 left >= 32
    assert "8 GPU worker(s) leave 8 CPUs" in check_data_cpus(8, gpu, 16, data_cpus_per_gpu=4)


def test_redaction_of_credentials(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-sentinel-value")
    monkeypatch.setenv("MY_API_TOKEN", "tok-123456789")
    assert "s3cr3t-sentinel-value" in secret_values()
    assert redact("key=s3cr3t-sentinel-value; t=tok-123456789") == "key=***; t=***"
    assert redact("http://alice:pw@mlflow:5000/x") == "http://***@mlflow:5000/x"
    assert redact("s3://bucket/prefix") == "s3://bucket/prefix"


def test_tracking_uri_is_absolute(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("sqlite:///rel/m.db", "x") == f"sqlite:///{tmp_path.resolve()}/rel/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("http://h:1", tmp_path) == "http://h:1"


def test_cli_options_and_refusals(tmp_path, capsys):
    args = build_parser().parse_args(
        ["pretrain", "--method", "cola", "--data", "d", "--workers", "2-8", "--gpus-per-worker", "1",
         "--address", "auto", "--name", "n", "--out", "o", "--storage", "s3://b/ck",
         "--tracking-uri", "http://127.0.0.1:5000", "--resume", "--config", "c.yaml", "steps=5"])
    assert (args.workers, args.gpus_per_worker, args.storage, args.overrides) == \
        ("2-8", 1.0, "s3://b/ck", ["steps=5"])
    # refused before Ray starts: exit status 2 and the key named
    assert main(["pretrain", "--method", "cola", "--data", str(tmp_path), "batch_size=10",
                 "--workers", "3"]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert main(["pretrain", "--method", "nope", "--data", str(tmp_path)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(tmp_path)]) == 2
    assert "--method is required" in capsys.readouterr().err
    assert main(["pretrain", "--method", "cola", "--data", str(tmp_path), "--resume",
                 "--out", str(tmp_path / "none")]) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err


def test_bench_train_section_keeps_the_other_sections(tmp_path):
    from tympan.distributed.bench_train import SECTION, write_markdown

    res = {"date": "2026-11-30", "cores": 2, "cpu": "x86_64", "gpu": None, "torch": "t", "ray": "r",
           "steps": 4, "config": {"batch_size": 16}, "load_average": [1.0, 1.0, 1.0],
           "rows": [{"method": "cola", "plain_samples_per_s": 10.0, "ray_samples_per_s": 9.6,
                     "ratio": 0.96, "pipeline_workers": 2, "pipeline_samples_per_s": 8.0,
                     "pipeline_data_wait_fraction": 0.25}]}
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\n## `tympan bench data`\n\ndata table\n")
    write_markdown(res, md, "tympan bench train")
    res["rows"][0]["ratio"] = 0.5
    write_markdown(res, md, "tympan bench train")              # replaced, not appended twice
    text = md.read_text()
    assert text.count(SECTION) == 1 and "data table" in text
    assert "| cola | 10.0 | 9.6 | 0.50 | 8.0 | 0.25 |" in text
