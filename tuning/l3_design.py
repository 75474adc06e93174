"""``tympan tune l3-design`` and ``tympan tune scaling``: the "Look, listen and learn more"
design study and dataset-size saturation curves, as Ray Tune grids.

Cramer, Wu, Salamon & Bello, "Look, listen and learn more: design choices for deep audio
embeddings", ICASSP 2019, pretrain L3 (audio-visual correspondence) with linear, mel128 and
mel256 inputs, on music or environmental videos, with growing numbers of samples, and score
each embedding with a classifier on environmental tasks. Here one trial = one (input, content,
size, seed): pretrain L3 on that many clips of the offline AV corpus (a fixed nested subset,
:func:`tympan.tuning.data.nested_subset`) through Ray Train, then linear probes on scenes,
bird detection, speech/music/noise and the AV corpus's own object classes.
``scaling`` is the same size grid for any method on its pretraining pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tympan.config import ConfigError, check
from tympan.tuning import data as D
from tympan.tuning.study import StudyOptions

INPUTS = ("linear", "mel128", "mel256")

# CPU-scale defaults (the paper's own: width 1, 224 px frames, batch 64, Adam lr 1e-5, for
# tens of millions of samples). Each can be overridden with key=value.
STUDY_DEFAULTS = {
    "l3": ["width=0.25", "image_size=64", "batch_size=16", "optim.lr=1e-3", "embed_hop_s=0.5"],
}
GENERIC_DEFAULTS = ["width=0.25", "batch_size=16"]


@dataclass
class GridSpec:
    method: str = "l3"
    inputs: tuple[str, ...] = ("linear", "mel128", "mel256")   # l3 only
    contents: tuple[str, ...] = ("all",)
    sizes: tuple[int, ...] = (8, 16, 32, 64)
    seeds: int = 2
    steps: int = 60
    tasks: tuple[str, ...] = D.PROBE_TASKS
    max_per_split: int | None = 48
    overrides: tuple[str, ...] = ()

    def __post_init__(self):
        check(self.seeds >= 1, "--seeds", self.seeds, "must be >= 1")
        check(self.steps >= 1, "--steps", self.steps, "must be >= 1")
        check(len(self.sizes) >= 1, "--sizes", self.sizes, "needs at least one size")
        check(len(set(self.sizes)) == len(self.sizes), "--sizes", self.sizes, "repeats a size")
        bad = [i for i in self.inputs if i not in INPUTS]
        check(not bad, "--inputs", ",".join(self.inputs), f"unknown {bad}; choose from {list(INPUTS)}")
        bad = [c for c in self.contents if c not in D.CONTENTS]
        check(not bad, "--content", ",".join(self.contents),
              f"unknown {bad}; choose from {list(D.CONTENTS)}")
        bad = [t for t in self.tasks if t not in D.PROBE_TASKS]
        check(not bad, "--tasks", ",".join(self.tasks), f"unknown {bad}; choose from {list(D.PROBE_TASKS)}")
        check(self.max_per_split is None or self.max_per_split >= 2, "--max-per-split",
              self.max_per_split, "must be >= 2")

    def all_overrides(self) -> list[str]:
        base = STUDY_DEFAULTS.get(self.method, GENERIC_DEFAULTS)
        return [*base, f"steps={self.steps}", f"checkpoint_every={self.steps}",
                f"log_every={max(1, self.steps // 5)}", "val_batches=1", *self.overrides]


def _validate(spec: GridSpec, root: Path, varies_input: bool) -> None:
    """Every trial's config builds and every subset fits its pool, before Ray starts."""
    from tympan.distributed.train import resolve_configs

    for inp in (spec.inputs if varies_input else (None,)):
        over = spec.all_overrides() + ([f"audio_input={inp}"] if inp else [])
        train_cfg, _ = resolve_configs(spec.method, None, over)
        if train_cfg.batch_size < 2:
            raise ConfigError("batch_size", train_cfg.batch_size, "must be >= 2")
    D.check_sizes(root, spec.method, spec.contents, spec.sizes)


def run_grid(kind: str, spec: GridSpec, opts: StudyOptions, log: Callable = print) -> dict:
    """Run (or continue) the grid; write results, plot and comparison; returns paths + rows."""
    from ray import tune

    from tympan.tuning import study as S

    root = D.ensure_corpus(opts.corpus, log=log)
    opts.corpus = str(root)
    varies_input = kind == "l3-design"
    if varies_input and spec.method != "l3":
        raise ConfigError("--method", spec.method, "the l3-design study pretrains l3")
    _validate(spec, root, varies_input)
    S.init_ray(opts.address)
    run = S.open_study_run(opts)
    ctx = S.study_context(opts, run, tasks=spec.tasks, max_per_split=spec.max_per_split)
    choices = {"content": tune.grid_search(list(spec.contents)),
               "size": tune.grid_search(list(spec.sizes)),
               "seed": tune.grid_search(list(range(spec.seeds)))}
    over = spec.all_overrides()
    if varies_input:
        choices["input"] = tune.grid_search(list(spec.inputs))
    param_space = {"study": ctx, "method": spec.method, "choices": choices, "overrides": over}
    trainable = _l3_trial if varies_input else S.pretrain_trial
    S.run_tuner(opts, trainable, param_space, metric=None, mode=None, log=log)
    return finish(opts, run, kind, log=log)


def _l3_trial(config: dict) -> None:
    """The L3 trial: the input representation is a method override."""
    from tympan.tuning.study import pretrain_trial

    config = dict(config)
    config["overrides"] = list(config["overrides"]) + [f"audio_input={config['choices']['input']}"]
    pretrain_trial(config)


def finish(opts: StudyOptions, run: dict, kind: str, log: Callable = print) -> dict:
    """Results table, saturation plot, comparison text; all logged to the study run."""
    from tympan.tuning import report, study as S

    out = Path(opts.out)
    rows = S.read_trial_records(out)
    paths = report.write_table(rows, out)
    title = (f"L3 design study ({opts.name})" if kind == "l3-design"
             else f"{rows[0]['method'] if rows else ''} dataset-size scaling ({opts.name})")
    plotted = report.saturation_plot(rows, out / "saturation.png", title)
    text = report.comparison(rows)
    (out / "comparison.md").write_text(text + "\n")
    tracker = run["tracker"]
    for p in (paths["csv"], paths["md"], out / "saturation.png", out / "saturation.json",
              out / "comparison.md"):
        tracker.log_file(str(p))
    for line, c in plotted["lines"].items():
        for x, y in zip(c["clips"], c["mean"]):
            tracker.log_metrics(int(x), {f"average_{line}": y})
    tracker.end("FINISHED")
    log(paths["md"].read_text())
    log(text)
    log(f"tune: {len(rows)} trial(s) -> {out}/results.csv, results.md, saturation.png; "
        f"MLflow study run {run['mlflow_run_id']}")
    return {"rows": rows, "out": out, "plot": plotted, "mlflow_run_id": run["mlflow_run_id"],
            "tracking_uri": run["tracking_uri"]}
