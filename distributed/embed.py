"""``tympan embed``: batch inference of clip (and frame) embeddings with Ray Data.

Plan (one Ray Data dataset, streaming)::

    work units (a shard, or a chunk of manifest rows)            ray.data.from_items
      -> decode: every clip of the unit, each one guarded         map_batches, CPU tasks
         (a bad clip becomes a row with ``error`` set, counted)
      -> embed: an actor pool holding the model(s)                map_batches, ActorPoolStrategy
         (one GPU per actor when the cluster has GPUs)
      -> driver: rows gathered per unit; a finished unit is written as
         OUT/part-NNNNNN.parquet (+ part-NNNNNN.bad.json), atomically

A rerun with the same ``--out`` skips units whose part exists (resumable); ``spec.json`` records
what was embedded, and a different checkpoint or source in the same folder is refused.

Sources (:func:`read_source`): a shard directory / ``s3://`` prefix (WebDataset tars from
``tympan data shard``), a manifest (``.parquet`` from ``tympan data ingest``), a HEAR task folder
or a folder of them (``OUT/tasks`` of ``tympan data offline``).

Output columns: ``clip_id``, ``split``, ``labels`` (list<str>), ``source``, ``duration_s``,
``embedding`` (fixed-size list<float32>, D); with ``timestamps``: ``frame_embeddings``
(list<fixed-size list<float32>>, [T', D]) and ``timestamps_ms`` (list<float32>, [T']).
``bad_clips.json``: ``{"counts": {reason: n}, "clips": [{clip_id, reason, where}]}``.

The per-clip work (decode, :func:`tympan.methods.probe.embed_waves`) is shared with
``tympan evaluate`` and runs the same in-process (``backend="local"``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SAMPLE_RATE = 16000


class EmbedError(ValueError):
    """A source or output folder that cannot be embedded; the message names it."""


# ---- sources -> work units ---------------------------------------------------------------------

@dataclass
class Source:
    uri: str
    kind: str                                   # "shards" | "rows"
    shards: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)   # manifest rows (+ "task" key)


def hear_rows(task_dir: Path, prefix: str = "") -> list[dict[str, Any]]:
    from tympan.datasets.formats.hear import ingest_hear

    rows, _ = ingest_hear(str(task_dir.resolve()))
    for r in rows:
        r["clip_id"] = f"{prefix}{r['clip_id']}"
    return rows


def is_hear_task(path: Path) -> bool:
    return (path / "task_metadata.json").is_file()


def hear_task_dirs(path: Path) -> list[Path]:
    """A HEAR task folder -> [it]; a folder of them -> the sorted list; else []."""
    if is_hear_task(path):
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and is_hear_task(p)) if path.is_dir() else []


def read_source(uri: str) -> Source:
    """A data URI for ``tympan embed`` -> its clips (rows) or shards."""
    from tympan.datasets import storage
    from tympan.datasets.manifest import read_manifest

    uri = str(uri)
    if uri.endswith(".parquet"):
        return Source(uri, "rows", rows=read_manifest(uri))
    if storage.is_local(uri):
        path = Path(storage.local_path(uri))
        tasks = hear_task_dirs(path)
        if tasks:
            many = not is_hear_task(path)
            rows = [r for t in tasks for r in hear_rows(t, f"{t.name}/" if many else "")]
            return Source(uri, "rows", rows=rows)
        if not path.exists():
            raise EmbedError(f"{uri}: no such file or folder")
    from tympan.datasets.shards import list_shards

    try:
        shards = list_shards(uri)
    except Exception as e:   # noqa: BLE001 - storage errors of every kind name the URI
        raise EmbedError(f"{uri}: not a manifest, HEAR task folder or shard set ({e})") from None
    if not shards:
        raise EmbedError(f"{uri}: not a manifest (.parquet), a HEAR task folder, a folder of them, "
                         "or a shard set (shard-NNNNNN.tar)")
    return Source(uri, "shards", shards=[str(s) for s in shards])


def work_units(source: Source, part_size: int = 256) -> list[dict[str, Any]]:
    """Units of work, each written as one part: a shard, or ``part_size`` manifest rows in
    clip-id order (so a rerun cuts the same units)."""
    if source.kind == "shards":
        return [{"unit": i, "kind": "shard", "payload": s} for i, s in enumerate(source.shards)]
    rows = sorted(source.rows, key=lambda r: r["clip_id"])
    return [{"unit": i // part_size, "kind": "rows", "payload": json.dumps(rows[i:i + part_size])}
            for i in range(0, len(rows), part_size)]


# ---- decode (CPU) ------------------------------------------------------------------------------

def _record(unit: int, total: int, clip_id: str, split: str, labels: list[str], source: str,
            audio: np.ndarray | None, error: str = "", where: str = "") -> dict[str, Any]:
    return {"unit": unit, "unit_total": total, "clip_id": clip_id, "split": split or "",
            "labels": json.dumps(list(labels or [])), "source": source or "",
            "audio": b"" if audio is None else np.asarray(audio, dtype=np.float32).tobytes(),
            "error": error, "where": where}


def decode_unit(unit: Mapping[str, Any], sample_rate: int = SAMPLE_RATE) -> list[dict[str, Any]]:
    """Every clip of a unit as a record; a clip that fails becomes a record with ``error`` =
    its reason (missing, empty, truncated, undecodable, too_short, ...) and no audio."""
    from tympan.datasets.audio import DecodeError, decode_audio

    u = int(unit["unit"])
    if unit["kind"] == "rows":
        rows = json.loads(unit["payload"])
        out = []
        for r in rows:
            try:
                audio = decode_audio(r["source"], sample_rate=sample_rate, start_s=r.get("start_s"),
                                     end_s=r.get("end_s"))
                err, where = "", ""
                if audio.size == 0:
                    audio, err, where = None, "empty", r["source"]
            except DecodeError as e:
                audio, err, where = None, e.reason, r["source"]
            except Exception as e:  # noqa: BLE001 - one bad clip must not lose the unit
                audio, err, where = None, f"error: {type(e).__name__}: {e}"[:200], r["source"]
            out.append(_record(u, len(rows), r["clip_id"], r.get("split"), r.get("labels"),
                               r["source"], audio, err, where))
        return out
    return _decode_shard(u, unit["payload"], sample_rate)


def _decode_shard(u: int, uri: str, sample_rate: int) -> list[dict[str, Any]]:
    from tympan.datasets import storage
    from tympan.datasets.audio import resample
    from tympan.datasets.shards import _decode, iter_records   # per-record decode, guarded

    out = []
    try:
        with storage.open_input(uri) as f:
            for key, members in iter_records(f, uri):
                try:
                    clip = _decode(key, members, uri)
                    audio = clip.audio
                    if clip.sample_rate != sample_rate:
                        audio = resample(audio, clip.sample_rate, sample_rate)
                    rec = clip.meta.get("record", {})
                    out.append(_record(u, 0, clip.clip_id, rec.get("split", ""), clip.labels,
                                       rec.get("source", uri), audio))
                except Exception as e:  # noqa: BLE001 - a bad record is skipped and listed
                    out.append(_record(u, 0, key, "", [], uri, None,
                                       f"bad_record: {e}"[:200], f"{uri}#{key}"))
    except Exception as e:  # noqa: BLE001 - a truncated/unreadable tar ends the shard, listed
        out.append(_record(u, 0, f"{Path(uri).name}#rest", "", [], uri, None,
                           f"bad_shard: {type(e).__name__}: {e}"[:200], uri))
    for r in out:
        r["unit_total"] = len(out)
    return out


def _decode_batch(batch: dict[str, np.ndarray], sample_rate: int = SAMPLE_RATE) -> dict[str, list]:
    recs = [r for i in range(len(batch["unit"]))
            for r in decode_unit({k: batch[k][i] for k in ("unit", "kind", "payload")}, sample_rate)]
    return {k: [r[k] for r in recs] for k in recs[0]} if recs else {}


# ---- embed (actor) -----------------------------------------------------------------------------

class Embedder:
    """Holds the models; ``__call__`` maps a batch of decoded records to embeddings.

    ``models``: name -> a method payload (``Method.payload()``) or the string ``"log-mel"``.
    Output adds ``emb::<name>`` (bytes of float32 [D]) per model and, with ``timestamps``,
    ``frames::<name>`` (float32 [T', D] bytes), ``frames_n::<name>`` and ``times::<name>``."""

    def __init__(self, models: Mapping[str, Any], timestamps: bool = False, threads: int = 1,
                 device: str | None = None):
        import torch

        from tympan.methods.registry import load_method

        torch.set_num_threads(max(1, threads))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.models = {name: (m if isinstance(m, str) else load_method(m).to(self.device))
                       for name, m in models.items()}
        self.timestamps = timestamps

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from tympan.methods.baselines import logmel_stats
        from tympan.methods.probe import embed_waves, embed_waves_frames

        n = len(batch["clip_id"])
        good = [i for i in range(n) if not batch["error"][i]]
        waves = [np.frombuffer(batch["audio"][i], dtype=np.float32) for i in good]
        out = {k: batch[k] for k in batch if k != "audio"}
        out["duration_s"] = [len(batch["audio"][i]) / 4 / SAMPLE_RATE for i in range(n)]
        for name, model in self.models.items():
            emb = logmel_stats(waves) if isinstance(model, str) else embed_waves(
                model, waves, device=self.device)
            col = [b""] * n
            for k, i in enumerate(good):
                col[i] = emb[k].astype(np.float32).tobytes()
            out[f"emb::{name}"] = col
            if self.timestamps and not isinstance(model, str):
                frames = embed_waves_frames(model, waves, device=self.device)
                fcol, ncol, tcol = [b""] * n, [0] * n, [b""] * n
                for k, i in enumerate(good):
                    e, t = frames[k]
                    fcol[i], ncol[i], tcol[i] = e.tobytes(), e.shape[0], t.astype(np.float32).tobytes()
                out[f"frames::{name}"], out[f"frames_n::{name}"], out[f"times::{name}"] = fcol, ncol, tcol
        return out


# ---- the two backends --------------------------------------------------------------------------

def _iter_local(units: list[dict[str, Any]], models: Mapping[str, Any], timestamps: bool,
                batch_rows: int) -> Iterator[dict[str, Any]]:
    """In-process: the same decode and Embedder, one unit at a time (demo, small tasks)."""
    embedder = Embedder(models, timestamps, threads=_torch_threads())
    for unit in units:
        recs = decode_unit(unit)
        for j in range(0, len(recs), batch_rows):
            chunk = recs[j:j + batch_rows]
            yield embedder({k: [r[k] for r in chunk] for k in chunk[0]})


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _iter_ray(units: list[dict[str, Any]], models: Mapping[str, Any], timestamps: bool,
              batch_rows: int, num_actors: int | None) -> Iterator[dict[str, Any]]:
    import ray

    from tympan.distributed.cluster import ensure_ray

    ensure_ray(include_dashboard=False, log_to_driver=False)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    if num_actors is None:      # one per GPU; on CPU leave a core to the decode tasks
        num_actors = gpus if gpus else max(1, min(4, cpus - 1))
    ds = ray.data.from_items(units, override_num_blocks=max(1, min(len(units), 4 * cpus)))
    ds = ds.map_batches(_decode_batch, batch_size=1, num_cpus=1)
    ds = ds.map_batches(Embedder, fn_constructor_kwargs={
        "models": dict(models), "timestamps": timestamps,
        "threads": 1 if gpus else max(1, (cpus - 1) // num_actors)},
        batch_size=batch_rows, compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)
    for batch in ds.iter_batches(batch_size=batch_rows, batch_format="numpy"):
        yield {k: list(v) for k, v in batch.items()}


def iter_embedded(units: list[dict[str, Any]], models: Mapping[str, Any], *, timestamps: bool = False,
                  backend: str = "ray", batch_rows: int = 32, num_actors: int | None = None
                  ) -> Iterator[dict[str, Any]]:
    """Embedded records (one dict per clip; bad clips have ``error`` set), in no fixed order."""
    if not units:
        return
    if backend not in ("ray", "local"):
        raise EmbedError(f"backend {backend!r}: must be 'ray' or 'local'")
    batches = (_iter_local(units, models, timestamps, batch_rows) if backend == "local"
               else _iter_ray(units, models, timestamps, batch_rows, num_actors))
    for batch in batches:
        keys = list(batch)
        for i in range(len(batch["clip_id"])):
            yield {k: batch[k][i] for k in keys}


# ---- records -> Arrow ------------------------------------------------------------------------

def _vec(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=np.float32)


def records_to_table(recs: list[dict[str, Any]], model_names: Iterable[str], timestamps: bool,
                     column: str | None = None) -> pa.Table:
    """Good records -> Arrow; one ``embedding`` column per model (``column`` renames a single
    model's column to ``embedding``, as ``tympan embed`` writes it)."""
    cols: dict[str, Any] = {
        "clip_id": pa.array([r["clip_id"] for r in recs], pa.string()),
        "split": pa.array([r["split"] for r in recs], pa.string()),
        "labels": pa.array([json.loads(r["labels"]) for r in recs], pa.list_(pa.string())),
        "source": pa.array([r["source"] for r in recs], pa.string()),
        "duration_s": pa.array([r.get("duration_s", np.nan) for r in recs], pa.float64()),
    }
    for name in model_names:
        key = column if column else f"embedding.{name}"
        vecs = [_vec(r[f"emb::{name}"]) for r in recs]
        d = len(vecs[0]) if vecs else 0
        flat = pa.array(np.concatenate(vecs) if vecs else np.zeros(0, np.float32), pa.float32())
        cols[key] = pa.FixedSizeListArray.from_arrays(flat, d) if d else pa.array(
            [[] for _ in recs], pa.list_(pa.float32()))
        if timestamps and f"frames::{name}" in (recs[0] if recs else {}):
            fkey = "frame_embeddings" if column else f"frame_embeddings.{name}"
            tkey = "timestamps_ms" if column else f"timestamps_ms.{name}"
            cols[fkey] = pa.array([_vec(r[f"frames::{name}"]).reshape(int(r[f"frames_n::{name}"]), -1).tolist()
                                   for r in recs], pa.list_(pa.list_(pa.float32())))
            cols[tkey] = pa.array([_vec(r[f"times::{name}"]).tolist() for r in recs], pa.list_(pa.float32()))
    return pa.table(cols)


# ---- tympan embed --------------------------------------------------------------------------------

def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _spec(source_uri: str, payload: Mapping[str, Any], timestamps: bool, part_size: int) -> dict:
    h = hashlib.sha1()
    for k, v in sorted(payload["state_dict"].items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return {"source": str(source_uri), "method": payload["method"], "weights_sha1": h.hexdigest(),
            "timestamps": bool(timestamps), "part_size": int(part_size)}


def embed(checkpoint: str, data: str, out: str, *, timestamps: bool = False, backend: str = "ray",
          part_size: int = 256, batch_rows: int = 32, num_actors: int | None = None,
          log=print) -> dict[str, Any]:
    """``tympan embed``: embeddings of every clip of ``data`` written under ``out``.

    Resumable: units already written are skipped. Returns the summary (also ``summary.json``)."""
    from tympan.distributed.checkpoint_ref import load_checkpoint

    t0 = time.perf_counter()
    payload = load_checkpoint(checkpoint).payload
    source = read_source(data)
    units = work_units(source, part_size)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = _spec(data, payload, timestamps, part_size)
    spec_path = out_dir / "spec.json"
    if spec_path.exists():
        old = json.loads(spec_path.read_text())
        if old != spec:
            diff = sorted(k for k in spec if old.get(k) != spec[k])
            raise EmbedError(f"{out_dir}: holds embeddings made with different {diff}; "
                             "use a new --out folder (or delete this one)")
    else:
        _atomic_write(spec_path, lambda p: p.write_text(json.dumps(spec, indent=1)))
    todo = [u for u in units if not (out_dir / f"part-{u['unit']:06d}.parquet").exists()]
    log(f"embed: {len(units)} units ({len(units) - len(todo)} already written), source {source.kind}")
    pending: dict[int, list[dict[str, Any]]] = {}
    for rec in iter_embedded(todo, {"model": payload}, timestamps=timestamps, backend=backend,
                             batch_rows=batch_rows, num_actors=num_actors):
        u = int(rec["unit"])
        pending.setdefault(u, []).append(rec)
        if len(pending[u]) == int(rec["unit_total"]):
            _write_unit(out_dir, u, pending.pop(u), timestamps)
    if pending:
        raise EmbedError(f"{out_dir}: units {sorted(pending)} came back incomplete")
    summary = _summarise(out_dir, len(units), time.perf_counter() - t0)
    log(f"embed: {summary['clips']} clips, {summary['bad_clips']} bad "
        f"({summary['bad_by_reason']}) -> {out_dir}")
    return summary


def _write_unit(out_dir: Path, unit: int, recs: list[dict[str, Any]], timestamps: bool) -> None:
    good = sorted((r for r in recs if not r["error"]), key=lambda r: r["clip_id"])
    bad = [{"clip_id": r["clip_id"], "reason": r["error"], "where": r["where"]}
           for r in recs if r["error"]]
    _atomic_write(out_dir / f"part-{unit:06d}.bad.json", lambda p: p.write_text(json.dumps(bad)))
    table = records_to_table(good, ["model"], timestamps, column="embedding")
    _atomic_write(out_dir / f"part-{unit:06d}.parquet", lambda p: pq.write_table(table, p))


def _summarise(out_dir: Path, n_units: int, seconds: float) -> dict[str, Any]:
    bad = [b for f in sorted(out_dir.glob("part-*.bad.json")) for b in json.loads(f.read_text())]
    counts = Counter(b["reason"].split(":")[0] for b in bad)
    clips = sum(pq.ParquetFile(f).metadata.num_rows for f in out_dir.glob("part-*.parquet"))
    _atomic_write(out_dir / "bad_clips.json",
                  lambda p: p.write_text(json.dumps({"counts": dict(counts), "clips": bad}, indent=1)))
    summary = {"clips": clips, "bad_clips": len(bad), "bad_by_reason": dict(counts),
               "units": n_units, "seconds": round(seconds, 1)}
    _atomic_write(out_dir / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=1)))
    return summary


def read_embeddings(out: str | os.PathLike) -> pa.Table:
    """Every part of a ``tympan embed`` folder as one Arrow table."""
    parts = sorted(Path(out).glob("part-*.parquet"))
    if not parts:
        raise EmbedError(f"{out}: no part-*.parquet (not a tympan embed folder?)")
    return pa.concat_tables([pq.read_table(p) for p in parts])
