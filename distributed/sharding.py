"""Manifest -> WebDataset shards on Ray Data, resumable; and inspection of a shard set.

Plan: rows sorted by clip_id, cut into chunks of ``shard_size``; chunk i is ``shard-{i:06d}.tar``
(stored in ``{out}/_plan.json`` so a rerun can check it is continuing the same job). One Ray
task writes one shard: it decodes every clip with :func:`tympan.datasets.audio.decode_audio`,
catching errors PER CLIP (a failing UDF would lose its whole block, ANCHORS section 6), writes
the good clips with :func:`tympan.datasets.shards.write_shard` (temporary name, then rename) and
returns its rejects. Before the rename it stores ``{out}/_meta/{shard}.json`` (counts, seconds,
rejects), so "the final shard name exists" means "this shard and its rejects are complete" and a
rerun skips it. At the end every ``_meta`` file is merged into ``{out}/rejects.parquet``
(clip_id, source, reason, message, shard) and ``{out}/_summary.json``.

    summary = shard_manifest("esc50.parquet", "s3://bucket/esc50-shards", shard_size=256)
    print(format_summary(summary))
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tympan.config import check
from tympan.datasets import storage
from tympan.datasets.audio import VIDEO_EXTENSIONS, DecodeError, decode_audio, \
    decode_video_frames, probe
from tympan.datasets.manifest import SCHEMA as MANIFEST_SCHEMA, read_manifest
from tympan.datasets.shards import encode_record, list_shards, shard_name, write_shard

REJECT_SCHEMA = pa.schema([("clip_id", pa.string()), ("source", pa.string()),
                           ("reason", pa.string()), ("message", pa.string()),
                           ("shard", pa.string())])


@dataclass(frozen=True)
class ShardConfig:
    shard_size: int = 256              # clips per shard (~50 MB of 10 s FLAC)
    frames_per_second: float = 1.0     # JPEG frames kept per second of video (0: none)
    min_duration_s: float = 0.1        # shorter clips are rejected as too_short

    def __post_init__(self) -> None:
        check(self.shard_size >= 1, "shard_size", self.shard_size, "must be >= 1")
        check(self.frames_per_second >= 0, "frames_per_second", self.frames_per_second,
              "must be >= 0")
        check(self.min_duration_s >= 0, "min_duration_s", self.min_duration_s, "must be >= 0")


@dataclass
class ShardSummary:
    out: str
    shards: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    clips: int = 0                     # good clips in all shards (this run and earlier ones)
    hours: float = 0.0
    rejects: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    clips_this_run: int = 0
    seconds: float = 0.0               # wall time of this run
    clips_per_s: float = 0.0           # clips decoded + rejected per second, this run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- plan ----------------------------------------------------------------------------------

def plan_shards(rows: list[Mapping[str, Any]], shard_size: int) -> list[list[Mapping[str, Any]]]:
    """Deterministic assignment: sort by clip_id, chunk by ``shard_size``."""
    ordered = sorted(rows, key=lambda r: r["clip_id"])
    return [ordered[i:i + shard_size] for i in range(0, len(ordered), shard_size)]


def _plan_doc(chunks: list[list[Mapping[str, Any]]], manifest: str, shard_size: int) -> dict:
    ids = [[r["clip_id"] for r in c] for c in chunks]
    digest = hashlib.sha256(json.dumps(ids).encode()).hexdigest()
    return {"manifest": manifest, "shard_size": shard_size, "digest": digest,
            "shards": [{"name": shard_name(i), "clips": len(c)} for i, c in enumerate(ids)]}


def _check_or_store_plan(out: str, doc: dict) -> None:
    uri = storage.join(out, "_plan.json")
    if storage.exists(uri):
        old = json.loads(storage.read_bytes(uri))
        if old.get("digest") != doc["digest"]:
            raise ValueError(f"{out} already holds shards of another plan (manifest "
                             f"{old.get('manifest')}, shard_size {old.get('shard_size')}); "
                             "a rerun must use the same manifest and --shard-size, or a new --out")
        return
    storage.write_bytes_atomic(uri, json.dumps(doc, indent=1).encode())


# ---- one clip, one shard (run inside Ray tasks) ----------------------------------------------

def _ext(uri: str) -> str:
    return os.path.splitext(uri.split("?", 1)[0])[1].lower()


def _frames(row: Mapping[str, Any], media: Any, has_video: bool, n_seconds: float, fps: float):
    """Frames at (k + 0.5) / fps s into the clip, k = 0..K-1, from the video of ``row``:
    its ``video_source``, else the source itself when that is a container with a video track
    (an .m4a is audio only). ``media`` is the already opened source (path or bytes)."""
    video = row.get("video_source")
    if fps <= 0 or (video is None and not has_video):
        return None, None
    k = max(1, int(math.floor(n_seconds * fps)))
    rel = (np.arange(k) + 0.5) / fps
    start = row.get("start_s") or 0.0
    times = [float(start + t) for t in rel]
    if video is None:
        return decode_video_frames(media, times, ext=_ext(row["source"])), rel
    return decode_video_frames(video, times), rel


def encode_clip(row: Mapping[str, Any], cfg: ShardConfig) -> tuple[list[tuple[str, bytes]], float]:
    """Decode one manifest row to ``(shard record, seconds of audio)``; raises DecodeError /
    StorageError."""
    source = row["source"]
    if storage.is_local(source):
        media: Any = source                  # decoders open local files by name (fast path)
    else:
        try:
            media = storage.read_bytes(source)   # one GET serves probe and decode
        except storage.ObjectNotFound as e:
            raise DecodeError(source, "missing", str(e)) from None
    ext = _ext(source)
    info = probe(media, ext=ext)
    audio = decode_audio(media, sample_rate=16000, start_s=row.get("start_s"),
                         end_s=row.get("end_s"), min_duration_s=cfg.min_duration_s, ext=ext)
    has_video = info.has_video and ext in VIDEO_EXTENSIONS
    frames, times = _frames(row, media, has_video, len(audio) / 16000, cfg.frames_per_second)
    facts = {"orig_sample_rate": info.sample_rate, "orig_channels": info.channels,
             "orig_duration_s": info.duration_s}
    record = encode_record(row, audio, frames=frames, frame_times=times, facts=facts)
    return record, len(audio) / 16000


def write_one_shard(item: dict[str, Any], out: str, cfg: ShardConfig, table_ref: list,
                    fail_shards: Iterable[str] = ()) -> dict[str, Any]:
    """Ray Data map UDF: ``item = {"name", "lo", "hi"}``, rows ``[lo, hi)`` of the sorted
    manifest table held once in the object store (``table_ref = [ObjectRef]``: a list, so Ray
    hands the task the reference and the task reads only its slice, zero-copy on the node).
    Returns counts; rejects go to ``{out}/_meta/{name}.json``.

    ``fail_shards`` (testing only) names shards that raise after decoding, before anything is
    written, to simulate a job killed half-way.
    """
    import ray

    t0 = time.perf_counter()
    table = ray.get(table_ref[0])
    rows = table.slice(item["lo"], item["hi"] - item["lo"]).to_pylist()
    records, rejects, seconds = [], [], 0.0
    for row in rows:
        try:
            rec, secs = encode_clip(row, cfg)
        except DecodeError as e:
            rejects.append({"reason": e.reason, "message": str(e)})
        except Exception as e:  # noqa: BLE001 - a bad clip must never sink its shard
            rejects.append({"reason": "error", "message": f"{type(e).__name__}: {e}"})
        else:
            records.append(rec)
            seconds += secs
            continue
        rejects[-1].update(clip_id=row["clip_id"], source=row["source"], shard=item["name"])
    if item["name"] in set(fail_shards):
        raise RuntimeError(f"injected failure in {item['name']} (testing)")
    side = {"shard": item["name"], "clips": len(records), "seconds": seconds, "rejects": rejects}
    storage.write_bytes_atomic(storage.join(out, "_meta", f"{item['name']}.json"),
                               json.dumps(side).encode())
    write_shard(storage.join(out, item["name"]), records)
    return {"name": item["name"], "clips": len(records), "rejected": len(rejects),
            "seconds": seconds, "elapsed_s": time.perf_counter() - t0}


# ---- the job -------------------------------------------------------------------------------

def _read_rows(manifest: str) -> list[dict[str, Any]]:
    fs, path = storage.filesystem_for(manifest)
    return read_manifest(path, filesystem=fs)


def _remove_stale_temps(out: str) -> None:
    if storage.is_local(out) and os.path.isdir(storage.local_path(out)):
        for p in Path(storage.local_path(out)).glob(".shard-*.tar.tmp-*"):
            p.unlink(missing_ok=True)      # left by a killed writer; never a complete shard


def _merge_sidecars(out: str, summary: ShardSummary) -> list[dict[str, Any]]:
    rejects: dict[str, dict[str, Any]] = {}
    seconds = 0.0
    for shard in list_shards(out, missing_ok=True):
        name = shard.rsplit("/", 1)[-1]
        uri = storage.join(out, "_meta", f"{name}.json")
        if not storage.exists(uri):
            continue                         # a shard written by another tool
        side = json.loads(storage.read_bytes(uri))
        summary.clips += side["clips"]
        seconds += side["seconds"]
        for r in side["rejects"]:
            rejects[r["clip_id"]] = r       # keyed by clip: no duplicates across reruns
    summary.hours = seconds / 3600
    out_rows = [rejects[k] for k in sorted(rejects)]
    summary.rejects = len(out_rows)
    summary.rejects_by_reason = dict(sorted(Counter(r["reason"] for r in out_rows).items()))
    return out_rows


def _write_parquet(uri: str, rows: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist([{k: r.get(k) for k in REJECT_SCHEMA.names} for r in rows],
                                 schema=REJECT_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes_atomic(uri, sink.getvalue().to_pybytes())


def shard_manifest(manifest_uri: str, out_uri: str, *, shard_size: int = 256,
                   frames_per_second: float = 1.0, min_duration_s: float = 0.1,
                   address: str | None = None, progress: bool = True,
                   _fail_shards: Iterable[str] = ()) -> ShardSummary:
    """Transcode the clips of a manifest into shards under ``out_uri`` (directory or s3://).

    Resumable: shards whose final name exists are skipped. Returns the summary also written
    to ``{out}/_summary.json``; rejects are in ``{out}/rejects.parquet``.
    """
    import ray

    cfg = ShardConfig(shard_size, frames_per_second, min_duration_s)
    out = storage.local_path(out_uri) if storage.is_local(out_uri) else out_uri.rstrip("/")
    manifest = storage.local_path(manifest_uri) if storage.is_local(manifest_uri) else manifest_uri
    rows = _read_rows(manifest)                        # validated before any Ray resource
    chunks = plan_shards(rows, cfg.shard_size)
    storage.makedirs(out)
    _check_or_store_plan(out, _plan_doc(chunks, manifest, cfg.shard_size))
    _remove_stale_temps(out)
    done = {u.rsplit("/", 1)[-1] for u in list_shards(out, missing_ok=True)}
    bounds = np.cumsum([0] + [len(c) for c in chunks])
    todo = [{"name": shard_name(i), "lo": int(bounds[i]), "hi": int(bounds[i + 1])}
            for i in range(len(chunks)) if shard_name(i) not in done]
    summary = ShardSummary(out=out, shards=len(chunks), shards_skipped=len(chunks) - len(todo))
    if todo and not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), configure_logging=False)
    t0 = time.perf_counter()             # after start-up: clips/s measures the job itself
    if todo:
        table_ref = ray.put(pa.Table.from_pylist([r for c in chunks for r in c],
                                                 schema=MANIFEST_SCHEMA))
        # One block per shard, so each shard is one task and shards run in parallel.
        ds = ray.data.from_items(todo, override_num_blocks=len(todo)).map(
            write_one_shard, fn_kwargs={"out": out, "cfg": cfg, "table_ref": [table_ref],
                                        "fail_shards": tuple(_fail_shards)}, num_cpus=1)
        for res in ds.iter_rows():
            summary.shards_written += 1
            summary.clips_this_run += res["clips"] + res["rejected"]
            if progress:
                print(f"[{summary.shards_written}/{len(todo)}] {res['name']}: {res['clips']} "
                      f"clips, {res['rejected']} rejected", flush=True)
    summary.seconds = time.perf_counter() - t0
    summary.clips_per_s = summary.clips_this_run / summary.seconds if todo else 0.0
    _write_parquet(storage.join(out, "rejects.parquet"), _merge_sidecars(out, summary))
    storage.write_bytes_atomic(storage.join(out, "_summary.json"),
                               json.dumps(summary.to_dict(), indent=1).encode())
    return summary


def format_summary(s: ShardSummary) -> str:
    reasons = ", ".join(f"{k}={v}" for k, v in s.rejects_by_reason.items()) or "none"
    return (f"shards: {s.shards} in {s.out} ({s.shards_written} written, {s.shards_skipped} "
            f"already complete)\nclips: {s.clips} ({s.hours:.3f} h)\nrejects: {s.rejects} "
            f"({reasons}) -> {storage.join(s.out, 'rejects.parquet')}\nspeed: "
            f"{s.clips_per_s:.1f} clips/s over {s.seconds:.1f} s")


# ---- inspection ----------------------------------------------------------------------------

def inspect_shards(uri: str, *, top: int = 20) -> dict[str, Any]:
    """Counts, hours, label and split histograms, frames, and the reject summary of a shard set.

    Reads only the JSON members of each shard (no audio decoding).
    """
    from tympan.datasets.shards import read_docs

    base = storage.local_path(uri) if storage.is_local(uri) else uri.rstrip("/")
    shards = list_shards(base)
    if not shards:
        raise FileNotFoundError(f"{uri}: no shard-NNNNNN.tar files")
    labels: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    clips, seconds, with_frames = 0, 0.0, 0
    for shard in shards:
        for doc in read_docs(shard):
            clips += 1
            seconds += float(doc.get("duration_s", 0.0))
            labels.update(doc.get("labels") or [])
            splits[str(doc.get("split"))] += 1
            with_frames += bool(doc.get("frames"))
    out: dict[str, Any] = {"uri": base, "shards": len(shards), "clips": clips,
                           "hours": seconds / 3600, "clips_with_frames": with_frames,
                           "splits": dict(sorted(splits.items())),
                           "labels": dict(labels.most_common(top)), "num_labels": len(labels),
                           "rejects": 0, "rejects_by_reason": {}}
    rej = storage.join(base, "rejects.parquet")
    if storage.exists(rej):
        table = pq.read_table(pa.BufferReader(storage.read_bytes(rej)))
        out["rejects"] = table.num_rows
        out["rejects_by_reason"] = dict(sorted(Counter(table.column("reason").to_pylist()).items()))
    return out


def format_inspection(d: Mapping[str, Any]) -> str:
    lines = [f"{d['uri']}: {d['shards']} shards, {d['clips']} clips, {d['hours']:.3f} h, "
             f"{d['clips_with_frames']} with video frames",
             "splits: " + (", ".join(f"{k}={v}" for k, v in d["splits"].items()) or "none"),
             f"labels ({d['num_labels']} distinct, most common first):"]
    lines += [f"  {n:>8}  {k}" for k, n in d["labels"].items()]
    reasons = ", ".join(f"{k}={v}" for k, v in d["rejects_by_reason"].items())
    lines.append(f"rejects: {d['rejects']}" + (f" ({reasons})" if reasons else ""))
    return "\n".join(lines)
