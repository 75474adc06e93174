"""A study's outputs: ``results.csv`` / ``results.md`` (one row per trial), the saturation plot
``saturation.png`` (average downstream accuracy vs pretraining clips, log x, one line per input
representation or content, error bars over seeds) with the plotted points read back from the
figure into ``saturation.json``, and a short comparison with Cramer et al. (ICASSP 2019)."""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

FIRST = ["method", "input", "content", "seed", "steps", "clips"]
LAST = ["average", "loss_first", "loss_last", "val_loss", "train_seconds", "seconds", "mlflow_run_id",
        "trial_key"]


def columns(rows: Sequence[dict]) -> list[str]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    accs = sorted(k for k in keys if k.startswith("acc_"))
    first = [k for k in FIRST if k in keys]
    rest = [k for k in keys if k not in first and k not in accs and k not in LAST]
    return first + rest + accs + [k for k in LAST if k in keys]


def sort_rows(rows: Sequence[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (str(r.get("input", "")), str(r.get("content", "")),
                                       int(r.get("clips", 0)), int(r.get("seed", 0))))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return "" if v is None else str(v)


def write_table(rows: Sequence[dict], out: Path) -> dict[str, Path]:
    rows = sort_rows(rows)
    cols = columns(rows)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".results.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in cols})
    os.replace(tmp, out / "results.csv")
    shown = [c for c in cols if c not in ("mlflow_run_id", "trial_key", "loss_first")]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in shown) + " |" for r in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return {"csv": out / "results.csv", "md": out / "results.md"}


def line_key(rows: Sequence[dict]) -> str:
    """What one line of the plot is: the input representation when it varies, else content."""
    for k in ("input", "content", "method"):
        if len({r.get(k) for r in rows}) > 1:
            return k
    return "input" if any("input" in r for r in rows) else "method"


def curves(rows: Sequence[dict]) -> dict[str, dict[str, list[float]]]:
    """``{line: {"clips": [...], "mean": [...], "std": [...], "n": [...]}}`` over seeds (and any
    other choice that is not the line's key, which stays fixed within a line in these studies)."""
    key = line_key(rows)
    acc: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("average") is not None:
            acc[str(r.get(key))][int(r["clips"])].append(float(r["average"]))
    out = {}
    for line in sorted(acc):
        sizes = sorted(acc[line])
        out[line] = {"clips": [float(s) for s in sizes],
                     "mean": [float(np.mean(acc[line][s])) for s in sizes],
                     "std": [float(np.std(acc[line][s])) for s in sizes],
                     "n": [len(acc[line][s]) for s in sizes]}
    return out


def saturation_plot(rows: Sequence[dict], path: Path, title: str = "") -> dict:
    """Draw and save the plot; returns (and writes beside it as ``saturation.json``) the points
    read back from the figure's line and error-bar artists before saving."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curves(rows)
    key = line_key(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    drawn = {}
    for line, c in data.items():
        cont = ax.errorbar(c["clips"], c["mean"], yerr=c["std"], marker="o", capsize=3,
                           label=f"{key} {line}")
        xy = cont.lines[0].get_xydata()                       # the plotted points
        segs = cont.lines[2][0].get_segments() if cont.lines[2] else []
        drawn[line] = {"clips": [float(x) for x in xy[:, 0]], "mean": [float(y) for y in xy[:, 1]],
                       "std": [float((s[1][1] - s[0][1]) / 2) for s in segs] or [0.0] * len(xy)}
    ax.set_xscale("log")
    ax.set_xlabel("pretraining clips (log scale)")
    ax.set_ylabel("average linear-probe accuracy")
    ax.set_title(title or "downstream accuracy vs pretraining data")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    record = {"x": "clips", "y": "average", "line_key": key, "lines": drawn}
    path.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return record


# ---- comparison with the paper ------------------------------------------------------------------

def _resolved(a: list[float], b: list[float]) -> str:
    """Whether a difference of means exceeds the spread over seeds."""
    if len(a) < 2 or len(b) < 2:
        return "one seed per point: no spread to judge it against"
    spread = math.sqrt(np.var(a) + np.var(b))
    gap = abs(np.mean(a) - np.mean(b))
    return (f"{gap:.3f} apart, {gap / spread:.1f}x the spread over seeds" if spread > 0
            else f"{gap:.3f} apart, no spread over seeds")


def comparison(rows: Sequence[dict]) -> str:
    """Short text: what this run shows next to Cramer et al. 2019's findings."""
    if not rows:
        return "No finished trials yet."
    top = max(int(r["clips"]) for r in rows)
    at_top = [r for r in rows if int(r["clips"]) == top and r.get("average") is not None]

    def avg(field: str, value: str) -> list[float]:
        return [float(r["average"]) for r in at_top if str(r.get(field)) == value]

    lines = [f"At the largest subset ({top} clips), average probe accuracy:"]
    for field in ("input", "content"):
        vals = sorted({str(r.get(field)) for r in at_top if r.get(field) is not None})
        if len(vals) > 1:
            lines.append("- " + ", ".join(f"{field} {v}: {np.mean(avg(field, v)):.3f}" for v in vals))
    inputs = {str(r.get("input")) for r in at_top}
    paper = []
    if "linear" in inputs and ({"mel128", "mel256"} & inputs):
        mel = [x for v in ("mel128", "mel256") for x in avg("input", v)]
        lin = avg("input", "linear")
        verdict = "agrees" if np.mean(mel) > np.mean(lin) else "does not agree"
        paper.append(f"- mel vs linear: the paper found mel inputs better; here mel averages "
                     f"{np.mean(mel):.3f} vs linear {np.mean(lin):.3f} ({verdict}; {_resolved(mel, lin)}).")
    if {"mel128", "mel256"} <= inputs:
        a, b = avg("input", "mel256"), avg("input", "mel128")
        verdict = "agrees" if np.mean(a) > np.mean(b) else "does not agree"
        paper.append(f"- 256 vs 128 mel bins: the paper found 256 bins help (most on scene data); "
                     f"here {np.mean(a):.3f} vs {np.mean(b):.3f} ({verdict}; {_resolved(a, b)}).")
    contents = {str(r.get("content")) for r in at_top}
    if {"music", "env"} <= contents:
        m, e = avg("content", "music"), avg("content", "env")
        paper.append(f"- content: the paper found music-video pretraining transfers to "
                     f"environmental tasks as well as or better than environmental video; here "
                     f"music {np.mean(m):.3f} vs env {np.mean(e):.3f} ({_resolved(m, e)}).")
    for line, c in curves(rows).items():
        if len(c["clips"]) >= 2:
            gains = np.diff(c["mean"])
            paper.append(f"- saturation ({line}): {c['mean'][0]:.3f} at {int(c['clips'][0])} clips -> "
                         f"{c['mean'][-1]:.3f} at {int(c['clips'][-1])}; last step "
                         f"{gains[-1]:+.3f} (the paper's curves grow and flatten near 40M samples).")
    return "\n".join(lines + ["", "Next to Cramer et al. 2019:"] + (paper or ["- (one choice only: "
                                                                             "nothing to compare)"]))
