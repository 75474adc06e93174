"""``tympan evaluate``: frozen-embedding linear probes on downstream tasks, with baselines.

For every task (a HEAR task folder, a folder of them, or a manifest from ``tympan data
ingest``) and every model of the table

    pretrained    the checkpoint's encoder, frozen
    random-init   the same architecture untrained (one network per seed)
    log-mel       log-mel mean/std statistics (no network)
    supervised    the same architecture trained on the task's training split (upper bound)

A spectral task (rows of meta kind "spectra": windows of sensor frames, e.g. the offline
build's ``sensor_sources``) has no audio: it is scored by
:func:`evaluate_spectral_task` with pretrained, random-init and
``third-octave-stats`` (each band's mean/std, in place of log-mel), no supervised model.

clip embeddings are computed with the batch-inference plan of :mod:`tympan.distributed.embed`
(Ray Data actor pool, or the same code in-process with ``backend="local"``), standardised, and
a linear probe is fit (:mod:`tympan.methods.probe`): regularisation chosen on the validation
split only; tasks whose splits are folds (ESC-50's ``fold1..fold5``) are scored by K-fold
cross-validation with inner folds for the regularisation. Multilabel tasks are scored by mAP.

Spread: every model is scored for each seed (``seeds``): random-init networks and supervised
training runs differ by seed; the pretrained and log-mel features are fixed, so their spread is
only the probe's (near zero: the probe is convex). ``std`` is over seeds of the per-seed score
(the per-seed score of a fold task is its mean over folds).

Output in ``out``: ``results.json`` (list of rows ``{task, model, metric, mean, std, n_test,
...}``), ``results.csv``, ``results.md``; one MLflow run tagged with the checkpoint's
pretraining run (``tympan.pretrain_run_id``).
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tympan.distributed.checkpoint_ref import Checkpoint, load_checkpoint
from tympan.distributed.embed import (Source, decode_unit, hear_rows, hear_task_dirs, iter_embedded,
                                      work_units)

__all__ = ["Checkpoint", "EvalConfig", "EvaluateError", "Task", "discover_tasks", "evaluate",
           "evaluate_task", "format_table", "load_checkpoint", "write_results"]

MODELS = ("pretrained", "random-init", "log-mel", "third-octave-stats", "supervised")
_FOLD = re.compile(r"^fold\d+$")


class EvaluateError(ValueError):
    """A task that cannot be evaluated; the message names it."""


# ---- tasks -------------------------------------------------------------------------------------

@dataclass
class Task:
    name: str
    rows: list[dict[str, Any]]
    multilabel: bool
    protocol: str                        # "splits" (train/valid/test) | "folds" (cross-validation)
    folds: list[str] = field(default_factory=list)
    extra_tests: list[str] = field(default_factory=list)   # e.g. test_human
    ignored: dict[str, int] = field(default_factory=dict)  # splits not used, with their sizes


def balanced_subset(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` rows taken round-robin over label sets (each in clip-id order): a capped split keeps
    every class it can instead of the first classes in alphabetical order."""
    by: dict[str, list] = {}
    for r in sorted(rows, key=lambda r: r["clip_id"]):
        by.setdefault("|".join(r["labels"]), []).append(r)
    queues = [by[k] for k in sorted(by)]
    out: list[dict[str, Any]] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out[:n]


def _make_task(name: str, rows: list[dict[str, Any]], multilabel: bool | None, where: str,
               max_per_split: int | None) -> Task:
    splits = Counter(r["split"] for r in rows)
    if multilabel is None:
        multilabel = any(len(r["labels"]) != 1 for r in rows if r["split"] in ("train", "test")
                         or _FOLD.match(r["split"] or ""))
    folds = sorted((s for s in splits if _FOLD.match(s or "")), key=lambda s: int(s[4:]))
    if "train" in splits and "test" in splits:
        protocol, used = "splits", {"train", "valid", "test"}
        extra = sorted(s for s in splits if s.startswith("test_"))
        used |= set(extra)
        folds = []
    elif len(folds) >= 3:
        protocol, used, extra = "folds", set(folds), []
    else:
        raise EvaluateError(f"{where}: task {name!r} needs train and test splits, or at least 3 "
                            f"folds (fold1, fold2, ...); found splits {dict(splits)}")
    ignored = {s: n for s, n in splits.items() if s not in used}
    kept = [r for r in rows if r["split"] in used]
    if not multilabel:
        bad = [r["clip_id"] for r in kept if len(r["labels"]) != 1]
        if bad:
            raise EvaluateError(f"{where}: multiclass task {name!r} has clips without exactly "
                                f"one label, e.g. {bad[:3]}")
    if max_per_split:
        by: dict[str, list] = {}
        for r in kept:
            by.setdefault(r["split"], []).append(r)
        kept = [r for v in by.values() for r in balanced_subset(v, max_per_split)]
    return Task(name, kept, multilabel, protocol, folds, extra, ignored)


def discover_tasks(paths: Sequence[str], max_per_split: int | None = None) -> list[Task]:
    """PATHs -> tasks: a HEAR task folder, a folder of them, or a manifest ``.parquet``."""
    from tympan.datasets.manifest import read_manifest

    tasks = []
    for p in paths:
        path = Path(p)
        if str(p).endswith(".parquet"):
            rows = read_manifest(p)
            tasks.append(_make_task(path.stem, rows, None, str(p), max_per_split))
            continue
        dirs = hear_task_dirs(path) if path.exists() else []
        if not dirs:
            raise EvaluateError(f"{p}: not a HEAR task folder (task_metadata.json), a folder of "
                                "them, or a manifest (.parquet)")
        for d in dirs:
            meta = json.loads((d / "task_metadata.json").read_text())
            ml = meta.get("prediction_type") == "multilabel"
            tasks.append(_make_task(meta.get("task_name", d.name), hear_rows(d), ml, str(d),
                                    max_per_split))
    names = Counter(t.name for t in tasks)
    if any(n > 1 for n in names.values()):
        raise EvaluateError(f"task names repeat: {[k for k, n in names.items() if n > 1]}")
    return tasks


# ---- scoring -----------------------------------------------------------------------------------

@dataclass
class EvalConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = MODELS
    backend: str = "ray"                  # "ray": Ray Data actor pool; "local": same code in-process
    max_clips_per_split: int | None = None
    supervised_steps: int = 100           # methods/baselines.py SupervisedConfig's defaults
    supervised_batch: int = 16
    supervised_lr: float = 1e-3
    num_actors: int | None = None

    def __post_init__(self):
        from tympan.config import check

        check(len(self.seeds) >= 1, "seeds", self.seeds, "needs at least one seed")
        unknown = set(self.models) - set(MODELS)
        check(not unknown, "models", self.models, f"unknown {sorted(unknown)}; known {MODELS}")
        check(self.backend in ("ray", "local"), "backend", self.backend, "must be ray or local")


def _chance(task: Task, test_labels: list) -> float:
    if task.multilabel:      # mAP of a constant score = mean prevalence of the present classes
        classes = sorted({c for ys in test_labels for c in ys})
        return float(np.mean([np.mean([c in ys for ys in test_labels]) for c in classes]))
    return Counter(test_labels).most_common(1)[0][1] / len(test_labels)


def _labels(task: Task, rows: list[dict[str, Any]]) -> list:
    return [list(r["labels"]) if task.multilabel else r["labels"][0] for r in rows]


def _probe_scores(task: Task, x: np.ndarray, y: list, split: np.ndarray, seed: int
                  ) -> dict[str, float]:
    """Per seed: test split (and extra test splits) -> score."""
    from tympan.methods.probe import cv_probe, linear_probe

    if task.protocol == "folds":
        res = cv_probe(x, y, split, multilabel=task.multilabel, seed=seed)
        return {"test": float(np.mean([r.score for r in res.values()]))}

    def take(s):
        m = split == s
        return x[m], [y[i] for i in np.flatnonzero(m)]

    res = linear_probe(*take("train"), *take("test"), *take("valid"), multilabel=task.multilabel, seed=seed)
    out = {"test": res.score}
    for s in task.extra_tests:
        out[s] = linear_probe(*take("train"), *take(s), multilabel=task.multilabel, l2=res.l2,
                              seed=seed).score
    return out


def _supervised_scores(task: Task, method: str, method_cfg: Any, waves: list, y: list,
                       split: np.ndarray, seed: int, cfg: EvalConfig) -> dict[str, float]:
    from tympan.methods.baselines import SupervisedConfig, supervised_score, supervised_scores

    scfg = SupervisedConfig(steps=cfg.supervised_steps, batch_size=cfg.supervised_batch,
                            lr=cfg.supervised_lr)

    def take(mask):
        idx = np.flatnonzero(mask)
        return [waves[i] for i in idx], [y[i] for i in idx]

    if task.protocol == "folds":
        scores = []
        for k, test in enumerate(task.folds):
            # model selection on one of the training folds (the next one), never on the test fold
            valid = task.folds[(k + 1) % len(task.folds)]
            s, _ = supervised_score(method, method_cfg, take((split != test) & (split != valid)),
                                    take(split == valid), take(split == test),
                                    multilabel=task.multilabel, cfg=scfg, seed=seed)
            scores.append(s)
        return {"test": float(np.mean(scores))}
    # one trained model per seed, scored on the test split and every extra test split
    out, _ = supervised_scores(method, method_cfg, take(split == "train"), take(split == "valid"),
                               {s: take(split == s) for s in ["test", *task.extra_tests]},
                               multilabel=task.multilabel, cfg=scfg, seed=seed)
    return out


def evaluate_task(task: Task, ck: Checkpoint, cfg: EvalConfig, log: Callable = print
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All models x seeds on one task -> result rows (one per model and test split)."""
    from tympan.methods.baselines import random_init
    from tympan.methods.base import config_from_dict
    from tympan.methods.registry import get_method

    t0 = time.perf_counter()
    method = ck.payload["method"]
    method_cfg = config_from_dict(get_method(method).config_cls, ck.payload["config"])
    models: dict[str, Any] = {}
    if "pretrained" in cfg.models:
        models["pretrained"] = ck.payload
    if "random-init" in cfg.models:
        for s in cfg.seeds:
            models[f"random-init/{s}"] = random_init(method, method_cfg, 1000 + s).payload()
    if "log-mel" in cfg.models:
        models["log-mel"] = "log-mel"
    units = work_units(Source(task.name, "rows", rows=task.rows))
    recs = list(iter_embedded(units, models, backend=cfg.backend, num_actors=cfg.num_actors))
    bad = [{"clip_id": r["clip_id"], "reason": r["error"], "where": r["where"]} for r in recs if r["error"]]
    good = sorted((r for r in recs if not r["error"]), key=lambda r: r["clip_id"])
    by_id = {r["clip_id"]: r for r in task.rows}
    rows = [by_id[r["clip_id"]] for r in good]
    y, split = _labels(task, rows), np.array([r["split"] for r in rows])
    scores: dict[str, dict[str, list[float]]] = {}
    for name in models:
        x = np.stack([np.frombuffer(r[f"emb::{name}"], dtype=np.float32) for r in good])
        for s in cfg.seeds:
            if name.startswith("random-init/") and name != f"random-init/{s}":
                continue
            model = name.split("/")[0]
            for test, v in _probe_scores(task, x, y, split, s).items():
                scores.setdefault(model, {}).setdefault(test, []).append(v)
    if "supervised" in cfg.models:
        good_ids = {r["clip_id"] for r in good}
        waves_by_id = {}
        for unit in units:
            for r in decode_unit(unit):
                if r["clip_id"] in good_ids:
                    waves_by_id[r["clip_id"]] = np.frombuffer(r["audio"], dtype=np.float32)
        waves = [waves_by_id[r["clip_id"]] for r in rows]
        for s in cfg.seeds:
            for test, v in _supervised_scores(task, method, method_cfg, waves, y, split, s, cfg).items():
                scores.setdefault("supervised", {}).setdefault(test, []).append(v)
    out = []
    tests = ["test", *task.extra_tests]
    for test in tests:
        mask = np.ones(len(rows), bool) if task.protocol == "folds" else split == test
        chance = _chance(task, [y[i] for i in np.flatnonzero(mask)])
        for model in MODELS:
            vals = scores.get(model, {}).get(test)
            if not vals:
                continue
            out.append({"task": task.name if test == "test" else f"{task.name}/{test}",
                        "model": model, "metric": "mAP" if task.multilabel else "accuracy",
                        "mean": float(np.mean(vals)), "std": float(np.std(vals)),
                        "n_test": int(mask.sum()), "n_seeds": len(vals),
                        "protocol": task.protocol if task.protocol == "splits"
                        else f"{len(task.folds)}-fold CV", "chance": round(chance, 4),
                        "scores": [round(v, 4) for v in vals]})
    info = {"task": task.name, "clips": len(rows), "bad_clips": len(bad), "bad": bad[:100],
            "ignored_splits": task.ignored, "seconds": round(time.perf_counter() - t0, 1)}
    line = "  ".join(f"{r['model']} {r['mean']:.3f}" for r in out if r["task"] == task.name)
    log(f"  {task.name} ({info['seconds']} s, {len(rows)} clips, {len(bad)} bad): {line}")
    return out, info


def evaluate_spectral_task(task: Task, ck: Checkpoint, cfg: EvalConfig, log: Callable = print
                           ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``tympan evaluate`` on a spectral task (a :class:`Task` whose
    rows are windows of sensor frames): the checkpoint, random init per seed and third-octave
    statistics (in place of the log-mel baseline: there is no audio), rows in evaluate's format.
    The supervised model needs waveforms and is left out on spectral tasks."""
    from tympan.datasets.offline.sensors import window_levels
    from tympan.distributed.sensor_eval import embed_levels, third_octave_stats
    from tympan.methods.base import config_from_dict
    from tympan.methods.baselines import random_init
    from tympan.methods.registry import get_method, load_method

    t0 = time.perf_counter()
    method = ck.payload["method"]
    method_cfg = config_from_dict(get_method(method).config_cls, ck.payload["config"])
    rows = sorted(task.rows, key=lambda r: r["clip_id"])
    lv = window_levels(rows)
    y, split = _labels(task, rows), np.array([r["split"] for r in rows])
    feats: dict[str, Any] = {}
    if "pretrained" in cfg.models:
        feats["pretrained"] = embed_levels(load_method(ck.payload), lv)
    if "random-init" in cfg.models:
        for s in cfg.seeds:
            feats[f"random-init/{s}"] = embed_levels(random_init(method, method_cfg, 1000 + s), lv)
    if "log-mel" in cfg.models or "third-octave-stats" in cfg.models:
        feats["third-octave-stats"] = third_octave_stats(lv)
    scores: dict[str, list[float]] = {}
    for name, x in feats.items():
        for s in cfg.seeds:
            if name.startswith("random-init/") and name != f"random-init/{s}":
                continue
            scores.setdefault(name.split("/")[0], []).append(_probe_scores(task, x, y, split, s)["test"])
    mask = split == "test"
    chance = _chance(task, [y[i] for i in np.flatnonzero(mask)])
    out = [{"task": task.name, "model": m, "metric": "accuracy", "mean": float(np.mean(v)),
            "std": float(np.std(v)), "n_test": int(mask.sum()), "n_seeds": len(v),
            "protocol": "splits", "chance": round(chance, 4), "scores": [round(x, 4) for x in v]}
           for m, v in scores.items()]
    info = {"task": task.name, "clips": len(rows), "bad_clips": 0, "bad": [], "kind": "spectra",
            "ignored_splits": task.ignored, "seconds": round(time.perf_counter() - t0, 1)}
    log(f"  {task.name} ({info['seconds']} s, {len(rows)} windows of frames): "
        + "  ".join(f"{r['model']} {r['mean']:.3f}" for r in out))
    return out, info


# ---- the table ------------------------------------------------------------------------------

def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per task, one column per model (mean ± std over seeds)."""
    present = [m for m in MODELS if any(r["model"] == m for r in rows)]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    head = ["task", "metric", "n_test", "chance", *present]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---:|" + "---:|" * len(present)]
    for t in tasks:
        rs = {r["model"]: r for r in rows if r["task"] == t}
        any_r = next(iter(rs.values()))
        cells = [t, any_r["metric"], str(any_r["n_test"]), f"{any_r['chance']:.3f}"]
        cells += [f"{rs[m]['mean']:.3f} ± {rs[m]['std']:.3f}" if m in rs else "-" for m in present]
        lines.append("| " + " | ".join(cells) + " |")
    if tasks:
        avg = ["**average**", "", "", ""]
        for m in present:
            vals = [r["mean"] for r in rows if r["model"] == m and "/" not in r["task"]]
            avg.append(f"**{np.mean(vals):.3f}**" if vals else "-")
        lines.append("| " + " | ".join(avg) + " |")
    return "\n".join(lines)


def write_results(rows: list[dict[str, Any]], out: Path, header: str = "") -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "md": out / "results.md"}
    paths["json"].write_text(json.dumps(rows, indent=1))
    fields = ["task", "model", "metric", "mean", "std", "n_test", "n_seeds", "protocol", "chance"]
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    paths["md"].write_text((header + "\n\n" if header else "") + format_table(rows) + "\n")
    return paths


def _log_mlflow(rows, infos, ck: Checkpoint, cfg: EvalConfig, out: Path, paths, tracking_uri):
    from tympan.distributed.tracking import Tracker

    uri = (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ck.tracking_uri
           or f"sqlite:///{(out / 'mlflow.db').resolve()}")
    tags = {"tympan.command": "evaluate", "tympan.checkpoint": ck.path,
            "tympan.method": ck.payload["method"]}
    if ck.pretrain_run_id:
        tags["tympan.pretrain_run_id"] = ck.pretrain_run_id
    tracker = Tracker(uri)
    tracker.start(None, experiment="tympan-evaluate", tags=tags)
    status = "FAILED"
    try:
        tracker.log_params({"checkpoint": ck.path, "method": ck.payload["method"],
                            "seeds": ",".join(map(str, cfg.seeds)), "backend": cfg.backend,
                            "models": ",".join(cfg.models), "supervised_steps": cfg.supervised_steps,
                            "max_clips_per_split": cfg.max_clips_per_split,
                            "tasks": ",".join(i["task"] for i in infos)[:500]})
        metrics = {re.sub(r"[^A-Za-z0-9_\-. /]", "_", f"{r['task']}/{r['model']}"): r["mean"]
                   for r in rows}
        metrics["bad_clips"] = sum(i["bad_clips"] for i in infos)
        tracker.log_metrics(0, metrics)
        for p in paths.values():
            tracker.log_file(str(p))
        status = "FINISHED"
        return tracker.run_id, uri
    finally:
        tracker.end(status)


def evaluate(checkpoint: str, tasks: Sequence[str], out: str | os.PathLike = "runs/evaluate",
             cfg: EvalConfig = EvalConfig(), *, tracking_uri: str | None = None, mlflow_run: bool = True,
             log: Callable = print, checkpoint_obj: Checkpoint | None = None) -> list[dict[str, Any]]:
    """``tympan evaluate``: every task x model -> rows; writes results.* and one MLflow run."""
    from tympan.distributed.sensor_eval import is_spectral

    t0 = time.perf_counter()
    ck = checkpoint_obj or load_checkpoint(checkpoint)
    task_list = discover_tasks(tasks, cfg.max_clips_per_split)
    out = Path(out)
    log(f"evaluate: {ck.payload['method']} from {ck.path} on {len(task_list)} task(s), "
        f"seeds {list(cfg.seeds)}, models {list(cfg.models)}, backend {cfg.backend}")
    rows, infos = [], []
    for task in task_list:
        if is_spectral(task.rows):     # windows of sensor frames, not audio (issue 12)
            r, info = evaluate_spectral_task(task, ck, cfg, log)
        else:
            r, info = evaluate_task(task, ck, cfg, log)
        rows += r
        infos.append(info)
    header = (f"# tympan evaluate\n\ncheckpoint `{ck.path}` (method `{ck.payload['method']}`), "
              f"seeds {list(cfg.seeds)}; mean ± std over seeds")
    paths = write_results(rows, out, header)
    summary = {"checkpoint": ck.path, "method": ck.payload["method"], "config": asdict(cfg),
               "tasks": infos, "seconds": round(time.perf_counter() - t0, 1),
               "pretrain_run_id": ck.pretrain_run_id}
    if mlflow_run:
        summary["mlflow_run_id"], summary["tracking_uri"] = _log_mlflow(
            rows, infos, ck, cfg, out, paths, tracking_uri)
    (out / "evaluation.json").write_text(json.dumps(summary, indent=1))
    log(format_table(rows))
    log(f"evaluate: done in {summary['seconds']} s -> {out}")
    return rows
