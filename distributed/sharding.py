"""Manifest -> WebDataset shards on Ray, resumable; and inspection of a shard set.

Plan: rows sorted by clip_id, cut into chunks of ``shard_size``; chunk i is ``shard-{i:06d}.tar``
(stored in ``{out}/_plan.json`` so a rerun can check it is continuing the same job). Ray tasks
encode pieces of up to 16 clips (:func:`encode_chunk`: decode with
:func:`tympan.datasets.audio.decode_audio`, FLAC-encode, catching errors PER CLIP so a bad clip
never loses its neighbours); the task of a shard's last piece (:func:`finish_shard`) also
concatenates all pieces with :func:`tympan.datasets.shards.write_shard` (temporary name, then
rename). Before the rename it stores ``{out}/_meta/{shard}.json`` (counts, seconds, rejects),
so "the final shard name exists" means "this shard and its rejects are complete" and a rerun
skips it. At the end every ``_meta`` file is merged into ``{out}/rejects.parquet`` (clip_id,
source, reason, message, shard) and ``{out}/_summary.json``.

Why Ray tasks on pieces smaller than a shard (issue 9 point 6): with one Ray Data map task per
shard, a 200-clip job in 4 shards on 2 cores ran at ~0.2x of two cores' plain-loop speed. Each
worker's first task imported torch (~1.5 s of CPU, for a resampler; now libsoxr), the tail
waited on whole shards, a job with fewer shards than cores used fewer cores, and Ray's workers
ran at nice 15, so on a shared machine they got a fraction of a core against a plain loop at
nice 0. Pieces give every core ~4 tasks whatever the shard count; writing in the last piece's
task keeps the job on one worker process per CPU; a cluster the command starts itself runs its
workers at nice 0.

A manifest of sensor spectra runs (``tympan data ingest spectra``) is sharded as sensor records
instead of FLAC: its runs are grouped per sensor and UTC day
(:mod:`tympan.datasets.spectra_records`), a "clip" of the plan and summary is one such record,
and ``hours`` counts frames times the period.

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
from tympan.datasets.spectra_records import encode_groups, group_runs, is_spectra_manifest

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


def encode_chunk(table_ref: list, lo: int, hi: int, cfg: ShardConfig
                 ) -> tuple[list, list[dict[str, Any]], float]:
    """Ray task: rows ``[lo, hi)`` of the sorted manifest table held once in the object store
    (``table_ref = [ObjectRef]``: a list, so Ray hands the task the reference and the task reads
    only its slice, zero-copy on the node) -> ``(records, rejects, seconds of audio)``.

    Errors are caught PER CLIP: a bad clip becomes a reject row, never a lost chunk.
    """
    import ray

    table = ray.get(table_ref[0])
    records, rejects, seconds = [], [], 0.0
    rows = table.slice(lo, hi - lo).to_pylist()
    if rows and json.loads(rows[0]["meta"] or "{}").get("kind") == "spectra-group":
        for row, rec, secs in encode_groups(rows):     # sensor records: one pass per CSV
            if isinstance(rec, Exception):
                rejects.append({"reason": "bad_spectra", "message": f"{type(rec).__name__}: {rec}",
                                "clip_id": row["clip_id"], "source": row["source"]})
            else:
                records.append(rec)
                seconds += secs
        rows = []
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
        rejects[-1].update(clip_id=row["clip_id"], source=row["source"])
    return records, rejects, seconds


def finish_shard(table_ref: list, lo: int, hi: int, cfg: ShardConfig, name: str, out: str,
                 fail: bool, *chunks) -> dict[str, Any]:
    """Ray task: encode the shard's last piece (rows ``[lo, hi)``), then write the whole shard
    from it and the other pieces' results (``chunks``, resolved by Ray before this task
    starts, so it never holds a CPU while waiting) to ``{out}/{name}``, with its sidecar
    ``{out}/_meta/{name}.json`` (counts, seconds, rejects) first, so that "the shard exists"
    means "its rejects are stored too". ``fail`` (testing only) raises before anything is
    written, to simulate a job killed half-way."""
    chunks = (*chunks, encode_chunk(table_ref, lo, hi, cfg))
    records = [r for recs, _, _ in chunks for r in recs]
    rejects = [dict(r, shard=name) for _, rej, _ in chunks for r in rej]
    seconds = sum(secs for _, _, secs in chunks)
    if fail:
        raise RuntimeError(f"injected failure in {name} (testing)")
    side = {"shard": name, "clips": len(records), "seconds": seconds, "rejects": rejects}
    storage.write_bytes_atomic(storage.join(out, "_meta", f"{name}.json"),
                               json.dumps(side).encode())
    write_shard(storage.join(out, name), records)
    return {"name": name, "clips": len(records), "rejected": len(rejects), "seconds": seconds}


def chunk_bounds(lo: int, hi: int, chunk: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` cut into pieces of at most ``chunk`` rows, as even as possible."""
    n = hi - lo
    k = max(1, -(-n // chunk))
    cuts = [lo + (n * i) // k for i in range(k + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(k) if cuts[i + 1] > cuts[i]]


def _chunk_size(clips: int, cpus: int, shard_size: int) -> int:
    """Rows per encode task: small enough that every CPU has ~4 tasks (the last wave is short
    whatever the shard count: one 256-clip shard still spreads over every core), at most 16
    (~0.15 s of 10 s clips: Ray's ~1 ms per task stays under 1 %)."""
    return max(1, min(16, shard_size, -(-clips // (4 * max(1, cpus)))))


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


def _run_shards(todo: list[dict[str, Any]], out: str, cfg: ShardConfig, table_ref: Any,
                fail: set[str]) -> Iterable[dict[str, Any]]:
    """One task per piece of a shard (1 CPU each); the task of the shard's last piece also
    writes the shard (:func:`finish_shard`), so the job runs on exactly one worker process per
    CPU: a separate writer task would need its own worker (Ray starts and imports one per
    scheduling class), which cost as much CPU as the writing itself on a small job. Two shards,
    or ~4 tasks per CPU, are in flight: the next shard's pieces keep the cores busy while a
    shard's last piece waits for the others, and encoded records wait in the object store for a
    few shards at most. Yields each shard's counts as it is written. On a failure, queued tasks
    are cancelled and running ones finish before the error propagates, so what is on disk
    afterwards does not change behind the caller's back."""
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    size = _chunk_size(sum(t["hi"] - t["lo"] for t in todo), cpus,
                       max(t["hi"] - t["lo"] for t in todo))
    encode = ray.remote(num_cpus=1)(encode_chunk)
    finish = ray.remote(num_cpus=1)(finish_shard)
    writing: dict[Any, list] = {}          # finishing task -> the shard's other pieces
    queue = list(todo)
    try:
        while queue or writing:
            while queue and (len(writing) < 2
                             or sum(1 + len(e) for e in writing.values()) < 4 * cpus):
                item = queue.pop(0)
                *head, (lo, hi) = chunk_bounds(item["lo"], item["hi"], size)
                parts = [encode.remote([table_ref], a, b, cfg) for a, b in head]
                ref = finish.remote([table_ref], lo, hi, cfg, item["name"], out,
                                    item["name"] in fail, *parts)
                writing[ref] = parts
            [ref], _ = ray.wait(list(writing), num_returns=1)
            del writing[ref]
            yield ray.get(ref)
    except BaseException:
        for ref, parts in writing.items():
            for p in (*parts, ref):
                ray.cancel(p)
        ray.wait(list(writing), num_returns=len(writing), timeout=60)
        raise


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
    if is_spectra_manifest(rows):
        # Sensor runs -> one record per sensor-day (float16 frames + times), so the training
        # stream can see (and, with gap policy "fill", bridge) the gaps between runs.
        rows = group_runs(rows)
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
        address = address or os.environ.get("RAY_ADDRESS")
        # A cluster of our own: its workers are this command's foreground work. Ray starts
        # workers at nice 15, so on a machine shared with other work they got a fraction of a
        # core each against a plain loop at nice 0 (issue 9 point 6); a cluster we join keeps
        # its own settings.
        # address None would join any cluster already running on this machine (and refuse
        # _system_config there): like tympan pretrain, start our own unless told otherwise.
        address = address or "local"
        own = address == "local"
        extra = {"_system_config": {"worker_niceness": 0}} if own else {}
        ray.init(address=address, configure_logging=False, **extra)
    t0 = time.perf_counter()             # after start-up: clips/s measures the job itself
    if todo:
        table_ref = ray.put(pa.Table.from_pylist([r for c in chunks for r in c],
                                                 schema=MANIFEST_SCHEMA))
        for res in _run_shards(todo, out, cfg, table_ref, set(_fail_shards)):
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
