"""A spectra manifest (one row per continuous run, ``tympan data ingest spectra``) -> sensor
records for shards: one record per sensor and UTC day, holding that day's runs in time order
with every frame's time, so the training stream can slice across short gaps (``fill``) or not.

Records are read back from the CSVs with the ingest's own reader
(:func:`tympan.datasets.formats.spectra.read_frames`: the same malformed lines refused, the same
repeated rows dropped), one streaming pass per file for all the records a shard needs from it,
and each run's frame count is checked against the manifest (a CSV edited since the ingest is an
error naming the file and lines, never a silently different record). No Ray.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Mapping

import numpy as np

from tympan.datasets.shards import Record, encode_spectra_record


def _meta(row: Mapping[str, Any]) -> dict:
    m = row.get("meta") or {}
    return json.loads(m) if isinstance(m, str) else dict(m)


def is_spectra_manifest(rows: list[Mapping[str, Any]]) -> bool:
    """True when every row is a run of sensor frames (meta kind "spectra" with its lines)."""
    if not rows:
        return False
    kinds = [(_meta(r).get("kind") == "spectra" and "lines" in _meta(r)) for r in rows]
    if any(kinds) and not all(kinds):
        bad = rows[kinds.index(False)]["clip_id"]
        raise ValueError(f"manifest mixes sensor-spectra runs and audio clips (e.g. {bad!r}); "
                         "shard them separately")
    return all(kinds)


def group_runs(rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Runs -> one manifest-like row per (sensor, UTC day, source file): ``clip_id``
    ``{sensor}@{YYYY-MM-DD}`` (``~N`` appended when several files cover that day), meta kind
    "spectra-group" with the runs sorted by start time."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        m = _meta(r)
        day = datetime.fromtimestamp(float(m["t0"]), tz=timezone.utc).strftime("%Y-%m-%d")
        groups[(str(m["sensor"]), day, r["source"])].append({**m, "split": r.get("split")})
    out, seen = [], defaultdict(int)
    for (sensor, day, source), runs in sorted(groups.items()):
        runs.sort(key=lambda m: (m["t0"], m["lines"][0]))
        base = f"{sensor}@{day}"
        seen[base] += 1
        splits = sorted({m["split"] for m in runs}, key=str)
        first = runs[0]
        out.append({"clip_id": base if seen[base] == 1 else f"{base}~{seen[base]}", "source": source,
                    "start_s": None, "end_s": None, "labels": [], "video_source": None,
                    "split": splits[0] if len(splits) == 1 else "mixed",
                    "meta": json.dumps({"kind": "spectra-group", "sensor": sensor, "day": day,
                                        "period_s": first["period_s"], "columns": first["columns"],
                                        "bands_hz": first.get("bands_hz"),
                                        "time_column": first.get("time_column"),
                                        "sensor_column": first.get("sensor_column"),
                                        "runs": [{"t0": m["t0"], "frames": m["frames"],
                                                  "lines": m["lines"]} for m in runs]})})
    return out


def read_groups(source: str, groups: list[Mapping[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Frames of every group row (all from ``source``) in one pass over the file:
    ``{clip_id: (times float64 [T], levels float32 [T, F])}``. Raises ValueError naming the file
    and lines when a run's frame count differs from the manifest's."""
    from tympan.datasets.formats.spectra import SpectraReport, read_frames

    metas = [_meta(g) for g in groups]
    m0 = metas[0]
    # per sensor: [(first line, last line, group index, run index)]
    wanted: dict[str, list[tuple[int, int, int, int]]] = defaultdict(list)
    for gi, m in enumerate(metas):
        for ri, run in enumerate(m["runs"]):
            wanted[m["sensor"]].append((int(run["lines"][0]), int(run["lines"][1]), gi, ri))
    last_needed = max(w[1] for ws in wanted.values() for w in ws)
    parts: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    prev: dict[str, tuple[float, np.ndarray]] = {}
    blocks = read_frames(source, SpectraReport("spectra", source), time_column=m0.get("time_column"),
                         bands=",".join(m0["columns"]), sensor_column=m0.get("sensor_column"))
    for b in blocks:
        for sensor, runs in wanted.items():
            sel = b.sensor == sensor
            if not sel.any():
                continue
            t, lv, ln = b.time[sel], b.levels[sel], b.line[sel]
            p_t, p_lv = prev.get(sensor, (np.nan, np.full(lv.shape[1], np.nan, np.float32)))
            prev[sensor] = (float(t[-1]), lv[-1])
            # a row equal to the one before it (same time, same levels) was dropped at ingest
            dup = (np.diff(np.r_[p_t, t]) == 0) & (lv == np.vstack([p_lv[None], lv[:-1]])).all(1)
            for first, last, gi, ri in runs:
                k = (ln >= first) & (ln <= last) & ~dup
                if k.any():
                    parts[(gi, ri)].append((t[k], lv[k]))
        if len(b.line) and b.line[-1] > last_needed:
            break
    blocks.close()
    out = {}
    for gi, (g, m) in enumerate(zip(groups, metas)):
        ts, ls = [], []
        for ri, run in enumerate(m["runs"]):
            got = parts.get((gi, ri), [])
            n = sum(len(x[0]) for x in got)
            if n != int(run["frames"]):
                raise ValueError(f"{source}:{run['lines'][0]}-{run['lines'][1]}: {n} frames of sensor "
                                 f"{m['sensor']!r}, the manifest says {run['frames']} (file changed "
                                 "since the ingest?)")
            ts += [x[0] for x in got]
            ls += [x[1] for x in got]
        out[g["clip_id"]] = (np.concatenate(ts), np.concatenate(ls))
    return out


def encode_groups(groups: list[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], Record | Exception, float]]:
    """Group rows -> ``[(row, record or the error that stopped it, seconds of frames)]``; one
    pass per source file. A file that cannot be read fails its own groups only."""
    by_source: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for g in groups:
        by_source[g["source"]].append(g)
    results: dict[str, tuple[Record | Exception, float]] = {}
    for source, gs in by_source.items():
        try:
            frames = read_groups(source, gs)
        except Exception as e:  # noqa: BLE001 - reported per group by the caller
            for g in gs:
                results[g["clip_id"]] = (e, 0.0)
            continue
        for g in gs:
            times, levels = frames[g["clip_id"]]
            period = float(_meta(g)["period_s"])
            results[g["clip_id"]] = (encode_spectra_record(g, times, levels), len(times) * period)
    return [(g, *results[g["clip_id"]]) for g in groups]
