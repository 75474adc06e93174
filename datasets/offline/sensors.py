"""An offline acoustic sensor network: third-octave CSVs as urban sensors write them, made from
the offline real recordings, with the faults real networks have, and a downstream task.

No public SpecCense files are reachable here, so each simulated sensor hears a site (an
ambience bed of the scene corpus: traffic, market, harbour, residential, water...) with sound
sources passing by, and stores what a CENSE-like sensor stores: 29 fast third-octave levels
every 125 ms (:mod:`tympan.datasets.thirdoctave`), as CSV rows ``time,20,25,...,12500`` with ISO
8601 UTC times. Audio is never written.

A sensor's day is a timeline of recorded 10-s windows separated by downtime; the audio of a
window is its site's bed (looped) with, per window, one source class mixed in at 0-15 dB SNR:
``speech`` (hedgewars voices), ``music`` (game music), ``birds`` (tuxpaint bird takes) or
``none`` (the bed alone). Faults, each recorded in ``sensors/truth.json`` for the tests:
downtime gaps from seconds to hours, clock jumps backwards, repeated rows, and a few malformed
lines (a truncated row, a non-numeric level, a NaN).

The task ``sensor_sources`` (``manifests/sensor_sources.parquet`` beside the other tasks'
manifests, so the pretraining corpus keeps its test-side recordings out): one row per labelled
10-s window whose 80 frames lie in one continuous run (a window that a fault cut is not a
task example: the 'reject' policy), label = the source class, split = the sensor's split.
Sensors, beds and source recordings are split together (train / valid / test sensors hear
only their split's beds and sources), so no test recording or site reaches training. Its
baseline (third-octave mean/std + logistic regression) and chance are measured at build time.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tympan.datasets.formats.spectra import ingest_spectra
from tympan.datasets.manifest import make_row, write_manifest
from tympan.datasets.offline.debian import Recording, recordings
from tympan.datasets.offline.mix import add_event, loop_to, normalise
from tympan.datasets.offline.recorded_tasks import BIRD_GLOB, HW, scene_beds
from tympan.datasets.offline.scales import SensorScale
from tympan.datasets.thirdoctave import NOMINAL_HZ, third_octave_levels

SR = 16000
PERIOD_S = 0.125
WINDOW_S = 10.0
FRAMES = int(WINDOW_S / PERIOD_S)          # 80 frames per labelled window
CLASSES = ("none", "speech", "music", "birds")
SITES = ("traffic", "market", "harbour", "residential", "water", "industry", "crowd", "farm")
DAY0 = np.datetime64("2024-03-04T00:00:00.000", "ms")
log = logging.getLogger(__name__)


def _sources(cache: Path | None) -> dict[str, list[Recording]]:
    return {"speech": recordings(cache, "hedgewars-data", [f"{HW}/Sounds/voices/*"]),
            "music": [r for r in recordings(cache, "hedgewars-data", [f"{HW}/Music/*"])
                      if r.duration_s >= 5.0],
            "birds": recordings(cache, "tuxpaint-stamps-default", [BIRD_GLOB], exclude=["*_desc*"])}


def _split_of(i: int, n: int) -> str:
    """Sensors 0.. -> test, valid, then train (at least one each when n >= 3)."""
    return "test" if i < max(1, n // 6) else "valid" if i < 2 * max(1, n // 6) else "train"


def _partition(items: list[Recording], rng: np.random.Generator) -> dict[str, list[Recording]]:
    """Recordings -> disjoint train (60 %) / valid (20 %) / test (20 %) pools, none empty."""
    order = [items[i] for i in rng.permutation(len(items))]
    k = max(1, len(order) // 5)
    return {"test": order[:k], "valid": order[k:2 * k], "train": order[2 * k:] or order[:k]}


def _window(rng, bed: Recording, source: str, pool: list[Recording]) -> tuple[np.ndarray, list[str]]:
    n = int(WINDOW_S * SR)
    x, used = loop_to(rng, bed.load(), n), [bed.source_id]
    if source != "none":
        parts = []
        while sum(len(p) for p in parts) < 0.6 * n:        # the source is audible most of the window
            r = pool[int(rng.integers(len(pool)))]
            parts.append(r.load())
            used.append(r.source_id)
        event = np.concatenate(parts)[:int(0.9 * n)]
        x = add_event(rng, x, event, float(rng.uniform(0, 15)))
    return normalise(rng, x, db=(-32.0, -12.0)), used


def _faults(rng: np.random.Generator, n_frames: int) -> dict:
    """Where the timeline breaks: frame indices of downtime gaps (with their lengths), clock
    jumps back, repeated rows and malformed lines."""
    def picks(k):
        return sorted(int(i) for i in rng.choice(np.arange(5, n_frames - 5), size=k, replace=False))
    gaps = picks(4)
    return {"gaps": {i: float(np.exp(rng.uniform(np.log(2.0), np.log(3 * 3600.0)))) for i in gaps},
            "jumps_back": {i: float(rng.uniform(30, 300)) for i in picks(1)},
            "repeats": picks(3), "malformed": picks(3)}


def _write_csv(path: Path, levels: np.ndarray, times: np.ndarray, faults: dict) -> dict:
    """Rows as a sensor writes them, faults included; returns each fault's line number."""
    header = "time," + ",".join(f"{f:g}" for f in NOMINAL_HZ)
    lines, where = [header], {"repeated": [], "malformed": []}
    kinds = ["truncated", "non-numeric", "nan"]
    for i, (t, lv) in enumerate(zip(times, levels)):
        row = f"{np.datetime_as_string(t, unit='ms')}Z," + ",".join(f"{v:.1f}" for v in lv)
        if i in faults["malformed"]:
            kind = kinds[faults["malformed"].index(i) % 3]
            cells = row.split(",")
            bad = {"truncated": ",".join(cells[:-7]),
                   "non-numeric": ",".join(cells[:5] + ["err"] + cells[6:]),
                   "nan": ",".join(cells[:3] + ["NaN"] + cells[4:])}[kind]
            lines.append(bad)
            where["malformed"].append(len(lines))
        lines.append(row)
        if i in faults["repeats"]:
            lines.append(row)
            where["repeated"].append(len(lines))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return where


def build_sensor_network(out_dir: str | os.PathLike, scale: SensorScale, seed: int = 0,
                         cache_dir: str | os.PathLike | None = None) -> dict:
    """Write ``OUT/sensors/csv/<sensor>.csv``, ``sensors/runs.parquet`` (their ingest),
    ``manifests/sensor_sources.parquet`` (the task), ``sensors/task_metadata.json`` and
    ``sensors/truth.json``; returns a summary."""
    import time

    t_start = time.perf_counter()
    out = Path(out_dir) / "sensors"
    (out / "csv").mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir else None
    rng = np.random.default_rng([seed, 31])
    beds_by_site = {s: b for s, b in scene_beds(cache).items() if s in SITES}
    bed_pools = {s: _partition(b, rng) if len(b) >= 3 else {"train": b, "valid": b[-1:], "test": b[:1]}
                 for s, b in beds_by_site.items()}
    src_pools = {c: _partition(rs, rng) for c, rs in _sources(cache).items()}
    windows_per_sensor = int(round(scale.minutes * 60 / WINDOW_S))
    truth, task_rows, summary_sensors = {}, [], []
    for k in range(scale.sensors):
        name = f"sensor-{k:02d}"
        split = _split_of(k, scale.sensors)
        site = SITES[k % len(SITES)] if SITES[k % len(SITES)] in beds_by_site else sorted(beds_by_site)[0]
        beds = bed_pools[site][split]
        labels = rng.choice(len(CLASSES), size=windows_per_sensor)
        audio, window_meta = [], []
        for w, c in enumerate(labels):
            cls = CLASSES[int(c)]
            bed = beds[int(rng.integers(len(beds)))]
            x, used = _window(rng, bed, cls, src_pools[cls][split] if cls != "none" else [])
            audio.append(x)
            window_meta.append({"label": cls, "sources": used})
        levels = third_octave_levels(np.concatenate(audio), SR)                 # [W * 80, 29]
        n = len(levels)
        faults = _faults(rng, n)
        # timestamps: 125 ms steps from the sensor's start, shifted at each gap / jump
        step = np.full(n, PERIOD_S)
        step[0] = 0.0
        for i, g in faults["gaps"].items():
            step[i] += g
        for i, back in faults["jumps_back"].items():
            step[i] -= back
        times = DAY0 + np.timedelta64(k * 90, "s") + (np.cumsum(step) * 1000).round().astype("timedelta64[ms]")
        lines = _write_csv(out / "csv" / f"{name}.csv", levels, times, faults)
        breaks = sorted(set(faults["gaps"]) | set(faults["jumps_back"]))
        truth[name] = {"split": split, "site": site, "frames": n, "breaks": breaks,
                       "gaps_s": {str(i): g for i, g in faults["gaps"].items()},
                       "jumps_back_s": {str(i): b for i, b in faults["jumps_back"].items()},
                       "repeated_lines": lines["repeated"], "malformed_lines": lines["malformed"]}
        # file line of frame i: header + frame index + the extra lines written before it
        extra = np.zeros(n + 1, np.int64)
        for i in faults["malformed"]:
            extra[i:] += 1            # a malformed line is written just before frame i
        for i in faults["repeats"]:
            extra[i + 1:] += 1        # a repeated row right after frame i
        frame_line = np.arange(n) + 2 + extra[:n]
        for w, meta in enumerate(window_meta):
            a, z = w * FRAMES, (w + 1) * FRAMES
            cut = any(a < b < z for b in breaks) or any(a <= i < z for i in faults["malformed"])
            if cut:
                continue            # not one continuous, well-formed stretch: rejected
            t0 = (times[a] - np.datetime64(0, "ms")).astype(np.int64) / 1000.0
            task_rows.append(make_row(
                f"{name}@{np.datetime_as_string(times[a], unit='ms')}Z", str(out / "csv" / f"{name}.csv"),
                labels=[meta["label"]], split=split,
                meta={"kind": "spectra", "sensor": name, "t0": t0, "period_s": PERIOD_S,
                      "frames": FRAMES, "lines": [int(frame_line[a]), int(frame_line[z - 1])],
                      "columns": [f"{f:g}" for f in NOMINAL_HZ], "site": site,
                      "sources": meta["sources"]}))
        summary_sensors.append({"sensor": name, "split": split, "site": site, "windows": len(labels)})
    (out.parent / "manifests").mkdir(exist_ok=True)
    write_manifest(task_rows, out.parent / "manifests" / "sensor_sources.parquet")
    runs, report = ingest_spectra(str(out / "csv"))
    write_manifest(runs, out / "runs.parquet")
    (out / "ingest_report.txt").write_text(report.summary() + "\n")
    info = _task_info(task_rows)
    (out / "task_metadata.json").write_text(json.dumps(info, indent=1))
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return {"dir": str(out), "sensors": summary_sensors, "task": info,
            "ingest": {k: v for k, v in asdict(report).items() if k not in ("rejected", "warnings")},
            "seconds": round(time.perf_counter() - t_start, 1)}


def window_levels(rows: list[dict]) -> np.ndarray:
    """float32 ``[len(rows), frames, 29]``: each spectra row's frames, read back through the
    ingest's own reader (:func:`read_frames`: malformed lines refused, a row repeating the one
    before it dropped), each file once."""
    from tympan.datasets.formats.spectra import SpectraReport, read_frames

    metas = [json.loads(r["meta"]) if isinstance(r["meta"], str) else r["meta"] for r in rows]
    out = np.zeros((len(rows), metas[0]["frames"], len(NOMINAL_HZ)), np.float32) if rows else \
        np.zeros((0, FRAMES, len(NOMINAL_HZ)), np.float32)
    by_file: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_file.setdefault(r["source"], []).append(i)
    for uri, idx in by_file.items():
        blocks = list(read_frames(uri, SpectraReport("spectra", uri)))
        lines = np.concatenate([b.line for b in blocks])
        levels = np.concatenate([b.levels for b in blocks])
        times = np.concatenate([b.time for b in blocks])
        repeat = np.r_[False, (np.diff(times) == 0) & (levels[1:] == levels[:-1]).all(1)]
        lines, levels = lines[~repeat], levels[~repeat]
        for i in idx:
            first, last = metas[i]["lines"]
            a, z = np.searchsorted(lines, first), np.searchsorted(lines, last, side="right")
            if z - a != metas[i]["frames"]:
                raise ValueError(f"{uri}:{first}-{last}: {z - a} frames, expected {metas[i]['frames']}")
            out[i] = levels[a:z]
    return out


def _task_info(rows: list[dict]) -> dict:
    """Classes, sizes, chance and the third-octave statistics baseline (mean/std per band +
    standardised logistic regression, fit on train + valid, accuracy on test)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    lv = window_levels(rows)
    feats = np.concatenate([lv.mean(1), lv.std(1)], axis=1)
    y = np.array([r["labels"][0] for r in rows])
    split = np.array([r["split"] for r in rows])
    fit, test = split != "test", split == "test"
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(feats[fit], y[fit])
    values, counts = np.unique(y[test], return_counts=True)
    return {"name": "sensor_sources", "classes": list(CLASSES), "frames": FRAMES,
            "period_s": PERIOD_S, "prediction_type": "multiclass",
            "sizes": {s: int((split == s).sum()) for s in ("train", "valid", "test")},
            "chance": float(counts.max() / counts.sum()),
            "baseline_accuracy": float(clf.score(feats[test], y[test]))}
