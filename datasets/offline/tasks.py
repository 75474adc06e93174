"""The shared writer of offline downstream tasks: HEAR task folder + tympan manifest + baseline.

Every offline task (recorded or synthesized) is a list of :class:`TaskExample` handed to
:func:`write_task`, which writes

    out_dir/tasks/<name>/task_metadata.json     HEAR 2021 metadata + a "tympan" block
    out_dir/tasks/<name>/labelvocabulary.csv    idx,label
    out_dir/tasks/<name>/{train,valid,test}.json  file name -> list of labels
    out_dir/tasks/<name>/<extra>.json           optional extra test splits (e.g. test_human)
    out_dir/tasks/<name>/16000/<split>/<clip_id>.wav   16 kHz mono PCM-16
    out_dir/manifests/<name>.parquet            tympan manifest (group + provenance in meta)

and refuses a task whose splits share a value of the leakage factor (``group``): the
evaluation protocol of Tagliasacchi et al. 2020 (arXiv 1905.11796) and of HEAR 2021 assumes
test speakers / sources are unseen in training. An extra test split (a harder, differently
recorded test set of the same classes) is outside HEAR's train/valid/test: HEAR readers see
the task unchanged, while tympan records its size, chance and baseline in ``extra_splits``.

The chance level (majority-class rate on test) and a baseline accuracy (log-mel mean and
standard deviation over time -> standardisation -> logistic regression, fit on train+valid,
scored on test) are measured here at build time and stored with the task, so a learned
embedding can be judged against both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import soundfile as sf

from tympan.datasets.frontend import FrontendConfig, frontend_numpy
from tympan.datasets.manifest import make_row, write_manifest

SAMPLE_RATE = 16000
SPLITS = ("train", "valid", "test")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class TaskError(ValueError):
    """A task breaks its contract (leaky splits, empty split, unseen test class); names the task."""


@dataclass
class TaskExample:
    clip_id: str
    audio: np.ndarray              # float32 [n] at 16 kHz, mono, in [-1, 1]
    label: str | list[str]         # one label (multiclass) or a list (multilabel)
    split: str                     # "train" | "valid" | "test"
    group: str                     # value of the leakage factor (voice, phrase, bed, package...)
    meta: dict[str, Any] = field(default_factory=dict)   # provenance; JSON-serialisable


@dataclass
class TaskInfo:
    name: str
    n_classes: int
    sizes: dict[str, int]          # split -> number of examples
    chance: float                  # majority-class accuracy on test
    baseline_accuracy: float       # log-mel mean/std + logistic regression, accuracy on test
    split_factor: str              # what the splits are disjoint by
    path: str                      # the HEAR task folder
    classes: list[str] = field(default_factory=list)
    description: str = ""
    seconds: float = 0.0           # wall time to write the task (incl. baseline)
    # extra test split -> {"size", "chance", "baseline_accuracy"} (same fitted baseline as test);
    # empty for tasks without one and for metadata written before extra splits existed
    extra_splits: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _labels(ex: TaskExample) -> list[str]:
    return [ex.label] if isinstance(ex.label, str) else [str(x) for x in ex.label]


def _check_examples(name: str, examples: Sequence[TaskExample], prediction_type: str,
                    extra: Mapping[str, Sequence[TaskExample]] | None = None) -> None:
    if prediction_type not in ("multiclass", "multilabel"):
        raise TaskError(f"task {name!r}: prediction_type={prediction_type!r} is not multiclass/multilabel")
    by_split: dict[str, list[TaskExample]] = {s: [] for s in SPLITS}
    ids: set[str] = set()
    for ex in examples:
        if ex.split not in by_split:
            raise TaskError(f"task {name!r}: clip {ex.clip_id!r} has split={ex.split!r}, not one of {SPLITS}")
        if ex.clip_id in ids:
            raise TaskError(f"task {name!r}: clip_id {ex.clip_id!r} appears twice")
        ids.add(ex.clip_id)
        _check_audio_label(name, ex, prediction_type)
        by_split[ex.split].append(ex)
    for s in ("train", "test"):
        if not by_split[s]:
            raise TaskError(f"task {name!r}: the {s} split is empty")
    groups = {s: {ex.group for ex in v} for s, v in by_split.items()}
    for a, b in (("train", "test"), ("train", "valid"), ("valid", "test")):
        shared = groups[a] & groups[b]
        if shared:
            raise TaskError(f"task {name!r}: {a} and {b} share groups {sorted(shared)[:5]} "
                            "(the splits must be disjoint by the leakage factor)")
    seen = {lab for ex in by_split["train"] + by_split["valid"] for lab in _labels(ex)}
    unseen = {lab for ex in by_split["test"] for lab in _labels(ex)} - seen
    if unseen:
        raise TaskError(f"task {name!r}: test labels {sorted(unseen)} never occur in train/valid")
    _check_extra(name, extra or {}, prediction_type, ids, groups["train"] | groups["valid"], seen)


def _check_extra(name: str, extra: Mapping[str, Sequence[TaskExample]], prediction_type: str,
                 ids: set[str], fit_groups: set[str], seen: set[str]) -> None:
    """Extra test splits obey the rules of ``test``: unseen groups, seen labels, valid audio."""
    for split, exs in extra.items():
        if split in SPLITS or not re.fullmatch(r"[A-Za-z0-9_]+", split):
            raise TaskError(f"task {name!r}: extra split name {split!r} must be a new name of "
                            f"letters, digits and '_' (not one of {SPLITS})")
        if not exs:
            raise TaskError(f"task {name!r}: the extra split {split!r} is empty")
        for ex in exs:
            if ex.split != split:
                raise TaskError(f"task {name!r}: clip {ex.clip_id!r} has split={ex.split!r} but is "
                                f"in the extra split {split!r}")
            if ex.clip_id in ids:
                raise TaskError(f"task {name!r}: clip_id {ex.clip_id!r} appears twice")
            ids.add(ex.clip_id)
            _check_audio_label(name, ex, prediction_type)
        shared = {ex.group for ex in exs} & fit_groups
        if shared:
            raise TaskError(f"task {name!r}: train/valid and {split} share groups {sorted(shared)[:5]} "
                            "(the splits must be disjoint by the leakage factor)")
        unseen = {lab for ex in exs for lab in _labels(ex)} - seen
        if unseen:
            raise TaskError(f"task {name!r}: {split} labels {sorted(unseen)} never occur in train/valid")


def _check_audio_label(name: str, ex: TaskExample, prediction_type: str) -> None:
    a = ex.audio
    if not isinstance(a, np.ndarray) or a.ndim != 1 or a.size == 0:
        raise TaskError(f"task {name!r}: clip {ex.clip_id!r} audio must be a non-empty 1-D array")
    if not np.all(np.isfinite(a)):
        raise TaskError(f"task {name!r}: clip {ex.clip_id!r} audio has NaN/inf samples")
    if prediction_type == "multiclass" and not isinstance(ex.label, str):
        raise TaskError(f"task {name!r}: clip {ex.clip_id!r} label {ex.label!r} must be one string")


# ---- baseline ---------------------------------------------------------------------------

_BASE_FE = FrontendConfig()   # the 64-bin log-mel of ANCHORS section 1


def baseline_features(audio: np.ndarray) -> np.ndarray:
    """float32 [n] -> [2 * 64]: mean and standard deviation over time of the log-mel [T, 64]."""
    x = frontend_numpy(_BASE_FE, audio.astype(np.float32))      # [T, 64]
    return np.concatenate([x.mean(axis=0), x.std(axis=0)]).astype(np.float32)


def _baseline(examples: Sequence[TaskExample], classes: list[str], prediction_type: str,
              extra: Mapping[str, Sequence[TaskExample]] | None = None) -> dict[str, tuple[float, float]]:
    """Returns split -> (chance, baseline accuracy) for ``test`` and every extra test split,
    all scored by the one classifier fit on train+valid."""
    from threadpoolctl import threadpool_limits

    # Small problems: BLAS/OpenMP thread pools only add contention (10-100x slower on a busy
    # 2-core machine), so the baseline runs single-threaded.
    evals = {"test": [ex for ex in examples if ex.split == "test"], **(extra or {})}
    with threadpool_limits(limits=1):
        return _baseline_1thread([ex for ex in examples if ex.split != "test"], evals, classes,
                                 prediction_type)


def _features(exs: Sequence[TaskExample]) -> np.ndarray:
    import torch

    # Per-clip STFTs are tiny: torch's intra-op thread pool costs far more than it saves (100x
    # slower on a loaded 2-core machine), so run them on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return np.stack([baseline_features(ex.audio) for ex in exs])
    finally:
        torch.set_num_threads(threads)


def _baseline_1thread(fit: Sequence[TaskExample], evals: Mapping[str, Sequence[TaskExample]],
                      classes: list[str], prediction_type: str) -> dict[str, tuple[float, float]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xf = _features(fit)
    xs = {k: _features(v) for k, v in evals.items()}
    res: dict[str, tuple[float, float]] = {}
    if prediction_type == "multiclass":
        yf = np.array([ex.label for ex in fit])
        clf = None
        if len(set(yf.tolist())) >= 2:
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
            clf.fit(xf, yf)
        for k, exs in evals.items():
            yt = np.array([ex.label for ex in exs])
            chance = Counter(yt.tolist()).most_common(1)[0][1] / len(yt)
            acc = chance if clf is None else float((clf.predict(xs[k]) == yt).mean())
            res[k] = (float(chance), acc)
        return res
    # multilabel: per-label accuracy averaged over labels (Hamming accuracy)
    idx = {c: i for i, c in enumerate(classes)}

    def onehot(exs: Sequence[TaskExample]) -> np.ndarray:
        y = np.zeros((len(exs), len(classes)), dtype=np.int64)
        for i, ex in enumerate(exs):
            for lab in _labels(ex):
                y[i, idx[lab]] = 1
        return y
    yf = onehot(fit)
    keep = [j for j in range(len(classes)) if 0 < yf[:, j].sum() < len(yf)]
    clf = None
    if keep:
        clf = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=2000)))
        clf.fit(xf, yf[:, keep])
    for k, exs in evals.items():
        yt = onehot(exs)
        chance = float(np.mean(np.maximum(yt.mean(axis=0), 1 - yt.mean(axis=0))))
        pred = np.tile((yf.mean(axis=0) > 0.5).astype(np.int64), (len(exs), 1))
        if clf is not None:
            pred[:, keep] = clf.predict(xs[k])
        res[k] = (chance, float((pred == yt).mean()))
    return res


# ---- writer -----------------------------------------------------------------------------

def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def safe_name(s: str) -> str:
    """A file-name-safe version of an id (HEAR file names and shard keys)."""
    return _SAFE.sub("_", s).strip("_") or "x"


def write_task(out_dir: str | os.PathLike, name: str, examples: Iterable[TaskExample], *,
               split_factor: str, embedding_type: str = "scene", prediction_type: str = "multiclass",
               description: str = "",
               extra_test_splits: Mapping[str, Sequence[TaskExample]] | None = None) -> TaskInfo:
    """Write one task (HEAR folder + manifest) and measure its chance level and baseline.

    ``extra_test_splits``: split name -> examples (each with ``split`` = that name), e.g.
    ``{"test_human": [...]}``: written as ``<split>.json`` + ``16000/<split>/`` and manifest rows
    of that split, held to the rules of ``test``, and scored by the same baseline classifier.

    Raises :class:`TaskError` naming the task when the splits share a group, a split is empty,
    or a test label never occurs in training.
    """
    t0 = time.perf_counter()
    examples = list(examples)
    extra = {k: list(v) for k, v in (extra_test_splits or {}).items()}
    _check_examples(name, examples, prediction_type, extra)
    if embedding_type not in ("scene", "event"):
        raise TaskError(f"task {name!r}: embedding_type={embedding_type!r} is not scene/event")
    out_dir = Path(out_dir)
    task_dir = out_dir / "tasks" / name
    shutil.rmtree(task_dir, ignore_errors=True)     # no stale clips from an interrupted build
    classes = sorted({lab for ex in examples for lab in _labels(ex)})
    split_maps: dict[str, dict[str, list[str]]] = {s: {} for s in (*SPLITS, *extra)}
    rows = []
    for ex in examples + [ex for exs in extra.values() for ex in exs]:
        fname = f"{safe_name(ex.clip_id)}.wav"
        if fname in split_maps[ex.split]:
            raise TaskError(f"task {name!r}: clip ids collide as file name {fname!r}")
        wav = task_dir / str(SAMPLE_RATE) / ex.split / fname
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, np.clip(ex.audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
        split_maps[ex.split][fname] = _labels(ex)
        meta = dict(ex.meta, group=ex.group, task=name, split_factor=split_factor)
        rows.append(make_row(f"{name}/{ex.clip_id}", str(wav.resolve()), labels=_labels(ex),
                             split=ex.split, meta=meta))
    scores = _baseline(examples, classes, prediction_type, extra)
    chance, baseline = scores["test"]
    sizes = {s: len(split_maps[s]) for s in SPLITS}
    extra_info = {k: {"size": len(split_maps[k]), "chance": round(scores[k][0], 4),
                      "baseline_accuracy": round(scores[k][1], 4)} for k in extra}
    info = TaskInfo(name=name, n_classes=len(classes), sizes=sizes, chance=round(chance, 4),
                    baseline_accuracy=round(baseline, 4), split_factor=split_factor,
                    path=str(task_dir), classes=classes, description=description,
                    extra_splits=extra_info)
    for s in split_maps:
        _atomic_json(task_dir / f"{s}.json", split_maps[s])
    vocab = "idx,label\n" + "".join(f"{i},{c}\n" for i, c in enumerate(classes))
    (task_dir / "labelvocabulary.csv").write_text(vocab)
    sample_duration = max(len(ex.audio) for ex in examples) / SAMPLE_RATE   # HEAR splits only
    info.seconds = round(time.perf_counter() - t0, 2)
    _atomic_json(task_dir / "task_metadata.json", {
        "task_name": name, "version": "tympan-offline-1", "embedding_type": embedding_type,
        "prediction_type": prediction_type, "split_mode": "trainvaltest",
        "sample_duration": sample_duration, "evaluation": ["top1_acc"],
        "tympan": {k: v for k, v in info.to_dict().items() if k not in ("path", "name")}})
    write_manifest(rows, out_dir / "manifests" / f"{name}.parquet")
    return info


def read_task_info(task_dir: str | os.PathLike) -> TaskInfo:
    """Rebuild the :class:`TaskInfo` of a written task from its task_metadata.json."""
    task_dir = Path(task_dir)
    meta = json.loads((task_dir / "task_metadata.json").read_text())
    return TaskInfo(name=meta["task_name"], path=str(task_dir), **meta["tympan"])


def write_tasks_table(infos: Sequence[TaskInfo], path: str | os.PathLike, *, scale: str = "small",
                      title: str = "Offline downstream tasks") -> Path:
    """Write (or update) the markdown table of tasks for one scale.

    The file keeps one section per scale (``## scale: small`` / ``## scale: full``); writing one
    scale replaces only that section, so the table generated at each scale sits side by side.
    """
    path = Path(path)
    lines = [f"## scale: {scale}", "",
             "| task | classes | train | valid | test | split disjoint by | chance | baseline |",
             "|---|---:|---:|---:|---:|---|---:|---:|"]
    for i in infos:
        lines.append(f"| {i.name} | {i.n_classes} | {i.sizes.get('train', 0)} | {i.sizes.get('valid', 0)} "
                     f"| {i.sizes.get('test', 0)} | {i.split_factor} | {i.chance:.3f} "
                     f"| {i.baseline_accuracy:.3f} |")
        for split, e in sorted(i.extra_splits.items()):   # extra test splits: their own row
            lines.append(f"| {i.name} / {split} | {i.n_classes} | - | - | {e['size']} | {i.split_factor} "
                         f"| {e['chance']:.3f} | {e['baseline_accuracy']:.3f} |")
    section = "\n".join(lines) + "\n"
    sections: dict[str, str] = {}
    if path.exists():
        for chunk in re.split(r"(?m)^(?=## scale: )", path.read_text()):
            m = re.match(r"## scale: (\S+)", chunk)
            if m:
                sections[m.group(1)] = chunk.rstrip("\n") + "\n"
    sections[scale] = section
    head = (f"# {title}\n\nGenerated by `tympan data offline` (datasets/offline/tasks.py); do not edit.\n"
            "chance = majority-class accuracy on test; baseline = log-mel mean/std + logistic "
            "regression, accuracy on test. A row `task / split` is an extra, harder test split of "
            "that task, scored by the same classifier (fit on train+valid).\n\n")
    body = "\n".join(sections[k] for k in sorted(sections, key=lambda s: (s != "small", s)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(head + body)
    os.replace(tmp, path)
    return path
