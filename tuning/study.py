"""The machinery every study shares: one MLflow study run, a resumable Ray Tune experiment
whose trials pretrain through Ray Train, and the per-trial record on disk.

Shape of a study (``tympan tune l3-design / scaling / sweep``):

* the **driver** checks every choice before Ray starts, opens (or, on a rerun, reopens) the
  study's MLflow run, then runs a ``Tuner`` whose experiment lives in ``OUT/tune/<name>``; a
  rerun of the same command finds it and continues it with ``Tuner.restore(path, trainable,
  resume_errored=True)``;
* a **trial** is a function trainable (:func:`pretrain_trial`) that builds and fits a
  ``TorchTrainer`` through :func:`tympan.distributed.train.pretrain` (the Train V2 pattern),
  with ``TuneReportCallback`` so every checkpoint's metrics (``val_loss`` ...) reach Tune and
  its schedulers; its pretraining run is the trial's MLflow run, nested under the study run
  (tag ``mlflow.parentRunId``); it then scores the encoder with linear probes and writes
  ``OUT/trials/<key>.json`` atomically;
* a trial that finds its record already written reports it again without training: a study
  killed after some trials finished repeats none of them, even if Tune's own experiment state
  was saved before they finished. A trial killed mid-run continues from its last Ray Train
  checkpoint (same MLflow run); one killed before its first checkpoint starts over, and the
  MLflow run of that attempt is deleted (one run per trial).
* ``max_concurrent_trials`` follows the cluster: CPUs / (workers x CPUs per worker + one CPU
  for the trial's data stream), at least 1.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tympan.config import ConfigError, check

STUDY_FILE = "study.json"
TRIAL_CPU = 0.25


@dataclass
class StudyOptions:
    """Where and how a study runs (the options every ``tympan tune`` command shares)."""

    kind: str                               # l3-design | scaling | sweep
    name: str
    out: str                                # study directory
    corpus: str
    address: str | None = None
    tracking_uri: str | None = None
    workers: int = 1                        # Ray Train workers per trial
    max_concurrent: int | None = None       # None: from the cluster's CPUs
    settings: dict = field(default_factory=dict)   # what makes two runs the same study

    def __post_init__(self):
        check(self.workers >= 1, "--workers", self.workers, "must be >= 1")
        check(self.max_concurrent is None or self.max_concurrent >= 1, "--max-concurrent",
              self.max_concurrent, "must be >= 1")
        check(bool(self.name) and "/" not in self.name, "--name", self.name,
              "must be a non-empty name without '/'")
        self.out = str(Path(self.out).resolve())


def max_concurrent_trials(cluster_cpus: float, workers: int) -> int:
    """How many trials fit side by side: each takes ``workers`` training workers (as sized by
    :func:`tympan.distributed.train.worker_resources` for the cluster) plus a CPU for its data."""
    from tympan.distributed.train import worker_resources

    per_worker = worker_resources(workers, 0.0, cluster_cpus, 0.0)["CPU"]
    return max(1, int(math.floor(cluster_cpus / (workers * per_worker + 1.0))))


def _atomic_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


# ---- the study's MLflow run ---------------------------------------------------------------------

def open_study_run(opts: StudyOptions) -> dict:
    """Create the study's MLflow run, or reopen the one a previous run of the same command
    recorded in ``OUT/study.json``. A different study under the same directory is refused."""
    from tympan.distributed.tracking import Tracker, resolve_tracking_uri

    out = Path(opts.out)
    rec_path = out / STUDY_FILE
    record = json.loads(rec_path.read_text()) if rec_path.is_file() else None
    if record is not None and (record["kind"], record["settings"]) != (opts.kind, opts.settings):
        diff = sorted(k for k in set(record["settings"]) | set(opts.settings)
                      if record["settings"].get(k) != opts.settings.get(k))
        raise ConfigError("--name", opts.name, f"{out} holds a different {record['kind']} study "
                          f"(settings differ: {', '.join(diff) or 'kind'}); rerun it with the "
                          "same options to continue it, or choose another --name / --out")
    tracking_uri = resolve_tracking_uri(opts.tracking_uri, out)
    out.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(tracking_uri)
    run_id = tracker.start(f"study-{opts.name}", artifact_dir=out / "mlartifacts",
                           run_id=record["mlflow_run_id"] if record else None)
    if record is None:
        tracker.log_params({"study": opts.kind, "corpus": opts.corpus, "workers": opts.workers,
                            **opts.settings})
        tracker.set_tags({"tympan.study": opts.name, "tympan.study_kind": opts.kind})
        record = {"kind": opts.kind, "name": opts.name, "settings": opts.settings,
                  "mlflow_run_id": run_id, "tracking_uri": tracking_uri,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _atomic_json(rec_path, record)
    return {**record, "tracking_uri": tracking_uri, "tracker": tracker}


def close_stopped_trials(run: dict, status: str = "KILLED") -> int:
    """Mark the study's trial runs still RUNNING in MLflow (trials a scheduler stopped or a
    failure ended mid-fit: their driver never closed them) as ``status``; returns how many."""
    client = run["tracker"].client
    parent = client.get_run(run["mlflow_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' and attributes.status = 'RUNNING'")
    for child in children:
        client.set_terminated(child.info.run_id, status=status)
    return len(children)


# ---- one trial ----------------------------------------------------------------------------------

def trial_record_path(out: str | Path, key: str) -> Path:
    return Path(out) / "trials" / f"{key}.json"


def _discard_attempt(run_dir: Path, tracking_uri: str) -> None:
    """A trial attempt killed before its first checkpoint: delete its MLflow run and files."""
    rec = run_dir / "run.json"
    if rec.is_file():
        from mlflow.tracking import MlflowClient

        run_id = json.loads(rec.read_text()).get("mlflow_run_id")
        if run_id:
            try:
                MlflowClient(tracking_uri).delete_run(run_id)
            except Exception as e:           # already gone: nothing to discard
                print(f"tune: could not delete MLflow run {run_id}: {e}", file=sys.stderr)
    shutil.rmtree(run_dir, ignore_errors=True)


def pretrain_trial(config: dict) -> None:
    """Tune function trainable: pretrain one configuration on Ray Train, score it, record it.

    ``config``: ``study`` (out, corpus, tracking_uri, parent_run_id, name, workers, tasks,
    max_per_split, val_clips), ``method``, ``choices`` (content, size, seed and anything
    else that names the trial), ``overrides`` (key=value for the training and method configs).
    """
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from tympan.distributed import checkpoints as ck
    from tympan.distributed.train import RunSpec, pretrain, resolve_configs
    from tympan.tuning import data as D

    study, method, choices = config["study"], config["method"], dict(config["choices"])
    key = trial_key(method, choices)
    out = Path(study["out"])
    done = trial_record_path(out, key)
    if done.is_file():                       # finished before the driver was killed
        row = json.loads(done.read_text())
        ray.tune.report({**numeric(row), "final": 1.0, "reused": 1.0})
        return

    train_cfg, method_cfg = resolve_configs(
        method, None, list(config["overrides"]) + [f"seed={int(choices.get('seed', 0))}"])
    root = Path(study["corpus"])
    ids = D.nested_subset(D.pool(root, method, choices.get("content", "all")), int(choices["size"]),
                          seed=0)
    image_size = getattr(method_cfg, "image_size", 224)
    feed = D.SubsetFeed(method, method_cfg, D.load_clips(root, method, ids, image_size),
                        D.load_clips(root, method, D.val_ids(root, method, study["val_clips"]),
                                     image_size),
                        examples=train_cfg.steps * train_cfg.batch_size,
                        val_examples=train_cfg.val_batches * train_cfg.batch_size,
                        seed=int(choices.get("seed", 0)))
    run_dir = out / "runs" / key
    storage = run_dir / "checkpoints"
    resume = bool(ck.list_checkpoints(str(storage / key)))
    if not resume and run_dir.exists():
        _discard_attempt(run_dir, study["tracking_uri"])
    spec = RunSpec(method=method, data=f"subset:{root}#{choices.get('content', 'all')}/{len(ids)}",
                   workers=(study["workers"], study["workers"]), name=key, out=str(run_dir),
                   storage=str(storage), tracking_uri=study["tracking_uri"], resume=resume)
    t0 = time.perf_counter()
    summary = pretrain(spec, train_cfg, method_cfg, feed, verbose=False,
                       callbacks=[TuneReportCallback()],
                       tags={"mlflow.parentRunId": study["parent_run_id"],
                             "tympan.study": study["name"], "tympan.trial": key})
    train_s = time.perf_counter() - t0

    import torch
    torch.set_num_threads(max(1, study.get("threads", 1)))
    from tympan.tuning.probes import score_tasks
    scores = score_tasks(summary["checkpoint"], root, study["tasks"], study["max_per_split"])
    row = {**choices, "method": method, "steps": summary["steps"], "clips": len(ids),
           **{f"acc_{t}": round(v, 4) for t, v in scores.items()},
           "average": round(sum(scores.values()) / len(scores), 4) if scores else None,
           "loss_first": summary["loss_first"], "loss_last": summary["loss_last"],
           "val_loss": summary["val_loss"], "train_seconds": round(train_s, 1),
           "seconds": round(time.perf_counter() - t0, 1), "mlflow_run_id": summary["mlflow_run_id"],
           "trial_key": key}
    if scores:
        from mlflow.tracking import MlflowClient

        from tympan.distributed.tracking import log_metrics
        log_metrics(MlflowClient(study["tracking_uri"]), summary["mlflow_run_id"], summary["steps"],
                    {k: v for k, v in row.items() if k.startswith("acc_") or k == "average"})
    _atomic_json(done, row)
    ray.tune.report({**numeric(row), "final": 1.0})


def trial_key(method: str, choices: Mapping[str, Any]) -> str:
    parts = [method] + [f"{k}={choices[k]}" for k in sorted(choices)]
    return "_".join(parts).replace("/", "-").replace(" ", "")


def numeric(row: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


# ---- the Tune experiment ------------------------------------------------------------------------

def init_ray(address: str | None):
    import ray

    if not ray.is_initialized():
        ray.init(address=address, configure_logging=False, include_dashboard=False)
    return ray


def run_tuner(opts: StudyOptions, trainable: Callable, param_space: dict, *, metric: str | None = None,
              mode: str | None = None, scheduler=None, num_samples: int = 1, seed: int = 0,
              log: Callable = print):
    """A new Tune experiment in ``OUT/tune/<name>``, or the one found there continued
    (``Tuner.restore(..., resume_errored=True)``). Returns the ResultGrid."""
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    path = Path(opts.out) / "tune" / opts.name
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    concurrent = opts.max_concurrent or max_concurrent_trials(cpus, opts.workers)
    log(f"tune: {opts.kind} {opts.name}: {cpus:g} CPUs, up to {concurrent} trial(s) at a time")
    # The trial itself mostly waits for its TorchTrainer (whose workers and data tasks hold the
    # CPUs); it takes a sliver so Tune can place it (a zero request is refused).
    trainable = tune.with_resources(trainable, {"CPU": TRIAL_CPU})
    if tune.Tuner.can_restore(str(path)):
        log(f"tune: continuing the study found in {path}")
        tuner = tune.Tuner.restore(str(path), trainable, resume_errored=True,
                                   param_space=param_space)
    else:
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            # a seeded variant generator: the same command samples the same configurations;
            # it also holds the concurrency limit (Tune ignores max_concurrent_trials beside it)
            tune_config=tune.TuneConfig(metric=metric, mode=mode, scheduler=scheduler,
                                        search_alg=BasicVariantGenerator(random_state=seed,
                                                                         max_concurrent=concurrent),
                                        num_samples=num_samples,
                                        trial_dirname_creator=lambda t: t.trial_id),
            run_config=tune.RunConfig(name=opts.name, storage_path=str(path.parent), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=1)))
    return tuner.fit()


def study_context(opts: StudyOptions, run: Mapping[str, Any], *, tasks: Sequence[str],
                  max_per_split: int | None, val_clips: int = 16, threads: int = 1) -> dict:
    """The constant part of every trial's config."""
    return {"out": opts.out, "corpus": str(Path(opts.corpus).resolve()), "name": opts.name,
            "tracking_uri": run["tracking_uri"], "parent_run_id": run["mlflow_run_id"],
            "workers": opts.workers, "tasks": list(tasks), "max_per_split": max_per_split,
            "val_clips": val_clips, "threads": threads}


def read_trial_records(out: str | Path) -> list[dict]:
    d = Path(out) / "trials"
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []


def settings_of(**kw) -> dict:
    """JSON-normal settings (lists, not tuples) so a rerun's settings compare equal."""
    return json.loads(json.dumps(kw, default=lambda o: dataclasses.asdict(o)))
