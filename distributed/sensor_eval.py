"""Linear probes on a spectral task (``manifests/sensor_sources.parquet`` of the offline build, or
any spectra manifest whose rows are labelled windows of frames): encoders pretrained on sensor
records or on audio through the third-octave front end, the same architecture at random
initialisation, and the third-octave statistics baseline (mean and standard deviation of each
band over the window), one table.

Rows follow the evaluation contract (DESIGN.md): ``{task, model, metric, mean, std, n_test}``;
``model`` is ``pretrained:NAME`` per checkpoint, ``random-init`` (the first checkpoint's
architecture, one init per seed) and ``third-octave-stats``. A window's embedding is the mean
of the encoder's sliding windows over its frames (``Method.embed_frames`` with the frames in
place of the front end's output), so an encoder sees exactly what the sensors store.

    rows = evaluate_sensor_task("data/offline/manifests/sensor_sources.parquet",
                                {"sensor-cbow": "runs/s/checkpoint.pt"})
    print(format_table(rows))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from tympan.methods.base import window_embed
from tympan.methods.probe import linear_probe


def task_levels(manifest: str | Path) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(task name, levels float32 [N, T, 29], labels [N], splits [N]) of a spectral task."""
    from tympan.datasets.manifest import read_manifest
    from tympan.datasets.offline.sensors import window_levels

    rows = read_manifest(str(manifest))
    if not rows or json.loads(rows[0]["meta"] or "{}").get("kind") != "spectra":
        raise ValueError(f"{manifest}: not a spectral task (rows of meta kind 'spectra')")
    lv = window_levels(rows)
    y = np.asarray([r["labels"][0] for r in rows])
    split = np.asarray([r["split"] for r in rows])
    return Path(manifest).stem, lv, y, split


def _window_frames(cfg: Any) -> int:
    return int(getattr(cfg, "slice_frames", None) or getattr(cfg, "crop_frames"))


@torch.no_grad()
def embed_levels(model, levels: np.ndarray, batch: int = 256) -> np.ndarray:
    """Frames [N, T, 29] -> window embeddings [N, D] (mean over the encoder's sliding windows)."""
    cfg = model.cfg
    if cfg.frontend.kind != "third-octave":
        raise ValueError(f"{model.name}: front end {cfg.frontend.kind!r}; a spectral task needs a "
                         "third-octave encoder (pretrain with --preset sensor)")
    model.eval()
    out = []
    for a in range(0, len(levels), batch):
        x = torch.as_tensor(levels[a:a + batch], dtype=torch.float32)
        emb, _ = window_embed(x, model.encoder, _window_frames(cfg), cfg.embed_hop_frames,
                              cfg.frontend.frames_per_second, cfg.frontend)
        out.append(emb.mean(1).numpy())
    return np.concatenate(out)


def third_octave_stats(levels: np.ndarray) -> np.ndarray:
    """[N, T, 29] -> [N, 58]: each band's mean and standard deviation over the window."""
    return np.concatenate([levels.mean(1), levels.std(1)], axis=1)


def _probe(x: np.ndarray, y: np.ndarray, split: np.ndarray) -> float:
    tr, va, te = (split == "train"), (split == "valid"), (split == "test")
    return linear_probe(x[tr], list(y[tr]), x[te], list(y[te]), x[va], list(y[va])).accuracy


def evaluate_sensor_task(task: str | Path, checkpoints: Mapping[str, str], *,
                         seeds: Sequence[int] = (0, 1, 2), log=print) -> list[dict[str, Any]]:
    """Probe rows for every checkpoint, random init (per seed) and third-octave statistics."""
    from tympan.methods.registry import build_method, load_method

    name, lv, y, split = task_levels(task)
    n_test = int((split == "test").sum())

    def row(model: str, scores: list[float]) -> dict[str, Any]:
        log(f"{name} {model}: {np.mean(scores):.3f}")
        return {"task": name, "model": model, "metric": "accuracy", "mean": float(np.mean(scores)),
                "std": float(np.std(scores)), "n_test": n_test}

    rows, first = [], None
    for label, path in checkpoints.items():
        model = load_method(path)
        first = first or model
        rows.append(row(f"pretrained:{label}", [_probe(embed_levels(model, lv), y, split)]))
    if first is not None:
        scores = []
        for s in seeds:
            torch.manual_seed(s)
            scores.append(_probe(embed_levels(build_method(first.name, first.cfg), lv), y, split))
        rows.append(row("random-init", scores))
    rows.append(row("third-octave-stats", [_probe(third_octave_stats(lv), y, split)]))
    values, counts = np.unique(y[split == "test"], return_counts=True)
    rows.append(row("chance", [float(counts.max() / counts.sum())]))
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| task | model | accuracy (mean ± std) | n_test |", "|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['model']} | {r['mean']:.3f} ± {r['std']:.3f} | {r['n_test']} |"
              for r in rows]
    return "\n".join(lines)


# ---- inside `tympan evaluate` ------------------------------------------------------------------

def is_spectral(rows: Sequence[Mapping[str, Any]]) -> bool:
    m = rows[0].get("meta") if rows else None
    m = json.loads(m) if isinstance(m, str) else (m or {})
    return m.get("kind") == "spectra"
