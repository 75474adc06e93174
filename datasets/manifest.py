"""The clip manifest: one Parquet row per clip, the contract between ingest and sharding.

Columns (DESIGN.md):
    clip_id       str, unique
    source        str, URI of the media (local path, s3://, http(s)://)
    start_s       float64, nullable (null: from the start)
    end_s         float64, nullable (null: to the end of the file)
    labels        list<str>, may be empty
    split         str: train / valid / test, or a fold name ("fold1")
    video_source  str, nullable (media holding the picture, when not ``source`` itself)
    meta          str, a JSON object (transcript, provenance, original ids...)
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("labels", pa.list_(pa.string())),
    pa.field("split", pa.string()),
    pa.field("video_source", pa.string()),
    pa.field("meta", pa.string()),
])
COLUMNS = tuple(SCHEMA.names)


class ManifestError(ValueError):
    """A manifest (or a row destined for one) breaks the contract; the message names it."""


def make_row(clip_id: str, source: str, *, start_s: float | None = None, end_s: float | None = None,
             labels: Iterable[str] = (), split: str = "train", video_source: str | None = None,
             meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A manifest row as a dict, with ``meta`` serialised to JSON."""
    return {"clip_id": str(clip_id), "source": str(source),
            "start_s": None if start_s is None else float(start_s),
            "end_s": None if end_s is None else float(end_s),
            "labels": [str(x) for x in labels], "split": str(split),
            "video_source": video_source, "meta": json.dumps(dict(meta or {}), sort_keys=True)}


def validate_rows(rows: list[Mapping[str, Any]], where: str = "manifest") -> None:
    seen: dict[str, int] = {}
    for i, r in enumerate(rows):
        missing = [c for c in COLUMNS if c not in r]
        if missing:
            raise ManifestError(f"{where}: row {i} lacks columns {missing}")
        cid = r["clip_id"]
        if not cid or not isinstance(cid, str):
            raise ManifestError(f"{where}: row {i} has an empty clip_id")
        if cid in seen:
            raise ManifestError(f"{where}: clip_id {cid!r} appears twice (rows {seen[cid]} and {i})")
        seen[cid] = i
        if not r["source"]:
            raise ManifestError(f"{where}: clip {cid!r} has no source")
        s, e = r["start_s"], r["end_s"]
        if s is not None and s < 0:
            raise ManifestError(f"{where}: clip {cid!r} has negative start_s={s}")
        if s is not None and e is not None and e <= s:
            raise ManifestError(f"{where}: clip {cid!r} has end_s={e} <= start_s={s}")
        try:
            json.loads(r["meta"] or "{}")
        except json.JSONDecodeError as err:
            raise ManifestError(f"{where}: clip {cid!r} meta is not JSON: {err}") from None


def to_table(rows: list[Mapping[str, Any]]) -> pa.Table:
    validate_rows(rows)
    return pa.Table.from_pylist([{c: r[c] for c in COLUMNS} for r in rows], schema=SCHEMA)


def write_manifest(rows: list[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Validate and write rows atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = to_table(rows)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_manifest(path: str | os.PathLike, filesystem: Any = None) -> list[dict[str, Any]]:
    """Read and validate a manifest written by :func:`write_manifest` (or by hand)."""
    try:
        table = pq.read_table(str(path), filesystem=filesystem)
    except (OSError, pa.ArrowInvalid) as e:
        raise ManifestError(f"{path}: cannot read manifest: {e}") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ManifestError(f"{path}: missing columns {missing}")
    rows = table.select(list(COLUMNS)).to_pylist()
    for r in rows:
        r["labels"] = list(r["labels"] or [])
        r["meta"] = r["meta"] or "{}"
    validate_rows(rows, where=str(path))
    return rows
