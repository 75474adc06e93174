"""``tympan tune sweep``: a hyper-parameter search for any method, with ASHA early stopping on
the validation loss.

The search space is a YAML mapping of config keys (training or method keys, dotted for nested
ones, as ``tympan pretrain`` overrides) to a value or a distribution::

    optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
    width: {choice: [0.125, 0.25]}
    batch_size: 16                       # fixed
    # also: {uniform: [a, b]}, {randint: [a, b]}, {grid: [v1, v2, ...]}

Each trial pretrains on the method's pretraining pool (a fixed subset of ``--size`` clips;
the AV corpus for l3/soundnet) and reports ``val_loss`` every ``--val-every`` steps through
Ray Train's ``TuneReportCallback``; ASHA (``--scheduler asha``) stops trials whose validation
loss is in the worse half at a rung. ``best.yaml`` holds the best finished trial's overrides.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

import yaml

from tympan.config import ConfigError
from tympan.tuning.study import StudyOptions

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice", "grid")


def load_space(path: str | Path) -> dict[str, Any]:
    """space.yaml -> ``{key: value | (dist, args)}``, checked."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("--space", str(p), "file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError("--space", str(p), f"invalid YAML: {e}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("--space", str(p), "must be a non-empty mapping of config keys")
    space = {}
    for k, v in raw.items():
        if isinstance(v, dict):
            if len(v) != 1 or next(iter(v)) not in DISTRIBUTIONS:
                raise ConfigError(f"{p.name}:{k}", v, f"must be a value or one of "
                                  f"{{{'|'.join(DISTRIBUTIONS)}: [...]}}")
            dist, args = next(iter(v.items()))
            if not isinstance(args, list) or not args or (dist in ("loguniform", "uniform", "randint")
                                                          and len(args) != 2):
                raise ConfigError(f"{p.name}:{k}", v, f"{dist} needs a list"
                                  + (" [low, high]" if dist in ("loguniform", "uniform", "randint") else ""))
            if dist in ("loguniform", "uniform", "randint"):
                args = [float(a) if dist != "randint" else int(a) for a in args]
                if not args[0] < args[1] or (dist == "loguniform" and args[0] <= 0):
                    raise ConfigError(f"{p.name}:{k}", v, "needs 0 < low < high" if dist == "loguniform"
                                      else "needs low < high")
            space[str(k)] = (dist, args)
        else:
            space[str(k)] = v
    return space


def tune_space(space: dict[str, Any]) -> dict[str, Any]:
    from ray import tune

    make = {"loguniform": lambda a: tune.loguniform(*a), "uniform": lambda a: tune.uniform(*a),
            "randint": lambda a: tune.randint(*a), "choice": tune.choice, "grid": tune.grid_search}
    return {k: make[v[0]](v[1]) if isinstance(v, tuple) else v for k, v in space.items()}


def _sweep_trial(config: dict) -> None:
    from ray import tune

    from tympan.tuning.study import pretrain_trial

    config = dict(config)
    params = dict(config.pop("params"))
    config["overrides"] = list(config["overrides"]) + [f"{k}={v}" for k, v in params.items()]
    config["choices"] = {**config["choices"], "trial": tune.get_context().get_trial_id()}
    pretrain_trial(config)


def run_sweep(method: str, space_path: str, opts: StudyOptions, *, scheduler: str = "asha",
              samples: int = 8, steps: int = 40, val_every: int = 10, size: int | None = None,
              overrides: tuple[str, ...] = (), seed: int = 0, log: Callable = print) -> dict:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from tympan.distributed.train import resolve_configs
    from tympan.tuning import data as D
    from tympan.tuning import study as S
    from tympan.tuning.l3_design import GENERIC_DEFAULTS, STUDY_DEFAULTS

    if scheduler not in ("asha", "fifo"):
        raise ConfigError("--scheduler", scheduler, "must be asha or fifo")
    if val_every < 1 or steps % val_every:
        raise ConfigError("--val-every", val_every, f"must divide --steps {steps}")
    space = load_space(space_path)
    base = [*STUDY_DEFAULTS.get(method, GENERIC_DEFAULTS), f"steps={steps}",
            f"checkpoint_every={val_every}", f"val_every={val_every}", "val_batches=1",
            f"log_every={val_every}", *overrides]
    # every fixed value and every end of each range must build a valid config
    probe = {k: (v[1][0] if isinstance(v, tuple) else v) for k, v in space.items()}
    resolve_configs(method, None, base + [f"{k}={v}" for k, v in probe.items()])
    root = D.ensure_corpus(opts.corpus, log=log)
    opts.corpus = str(root)
    pool = D.pool(root, method)
    size = size or len(pool)
    D.nested_subset(pool, size, what=f"pretraining pool of {root}")
    S.init_ray(opts.address)
    run = S.open_study_run(opts)
    ctx = S.study_context(opts, run, tasks=(), max_per_split=None)
    param_space = {"study": ctx, "method": method, "choices": {"size": size, "seed": seed},
                   "overrides": base, "params": tune_space(space)}
    rungs = steps // val_every
    sched = (ASHAScheduler(time_attr="training_iteration", max_t=rungs + 1, grace_period=1,
                           reduction_factor=2) if scheduler == "asha" else FIFOScheduler())
    grid = S.run_tuner(opts, _sweep_trial, param_space, metric="val_loss", mode="min",
                       scheduler=sched, num_samples=samples, seed=seed, log=log)
    return finish_sweep(opts, run, grid, rungs, log=log)


def finish_sweep(opts: StudyOptions, run: dict, grid, rungs: int, log: Callable = print) -> dict:
    from tympan.tuning import study as S

    out = Path(opts.out)
    records = {r["trial"]: r for r in S.read_trial_records(out)}
    rows = []
    for res in grid:
        cfg = res.config or {}
        tid = (res.metrics or {}).get("trial_id") or Path(res.path).name
        hist = res.metrics_dataframe
        vals = []
        if hist is not None and "val_loss" in hist:
            during = hist[hist["final"] != 1.0] if "final" in hist else hist   # training reports
            vals = during["val_loss"].dropna().tolist()
        reports = len(vals)
        status = ("error" if res.error else "completed" if tid in records
                  else "stopped early" if reports < rungs else "incomplete")
        rows.append({"trial": tid, **{k: v for k, v in (cfg.get("params") or {}).items()},
                     "reports": reports, "val_loss": vals[-1] if vals else None, "status": status})
    rows.sort(key=lambda r: r["trial"])
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    done = [r for r in rows if r["status"] == "completed" and r["val_loss"] is not None]
    best = min(done, key=lambda r: r["val_loss"]) if done else None
    tracker = run["tracker"]
    if best:
        best_cfg = {k: best[k] for k in cols if k not in ("trial", "reports", "val_loss", "status")}
        (out / "best.yaml").write_text(yaml.safe_dump({"val_loss": float(best["val_loss"]),
                                                       "trial": best["trial"], "config": best_cfg},
                                                      sort_keys=False))
        tracker.log_file(str(out / "best.yaml"))
        tracker.log_metrics(0, {"best_val_loss": float(best["val_loss"])})
    tracker.log_file(str(out / "results.csv"))
    S.close_stopped_trials(run)
    tracker.end("FINISHED")
    (out / "sweep.json").write_text(json.dumps({"rows": rows, "best": best}, indent=1, default=str))
    for r in rows:
        log("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    log(f"tune sweep: {sum(r['status'] == 'stopped early' for r in rows)} of {len(rows)} trial(s) "
        f"stopped early; best: {best and {k: best[k] for k in best if k not in ('reports', 'status')}}"
        f" -> {out}/best.yaml")
    return {"rows": rows, "best": best, "out": out, "mlflow_run_id": run["mlflow_run_id"],
            "tracking_uri": run["tracking_uri"]}
