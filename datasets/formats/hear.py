"""HEAR 2021 task folders (Turian et al., PMLR 176): ``task_metadata.json``,
``labelvocabulary.csv``, ``{train,valid,test,foldNN}.json`` (file -> labels, or events for event
tasks), audio under ``<sample_rate>/<split>/``. Facts: ANCHORS.md section 4.
"""

from __future__ import annotations

from typing import Any

from tympan.datasets import storage
from tympan.datasets.formats.common import IngestReport, MetadataError, csv_rows, list_relative, read_json, split_ext
from tympan.datasets.manifest import make_row

Rows = list[dict[str, Any]]


def _hear_labels(uri: str, key: str, value: Any, event: bool) -> tuple[list[str], Any]:
    if not isinstance(value, list):
        raise MetadataError(uri, 0, f"{key}: labels must be a list")
    if not event:
        return [str(v) for v in value], None
    events = []
    for ev in value:
        if not isinstance(ev, dict) or not {"label", "start", "end"} <= set(ev):
            raise MetadataError(uri, 0, f"{key}: event {ev!r} needs label/start/end")
        events.append({"label": str(ev["label"]), "start": float(ev["start"]),
                       "end": float(ev["end"])})
    return sorted({e["label"] for e in events}), events


def ingest_hear(src: str, media: str | None = None) -> tuple[Rows, IngestReport]:
    report = IngestReport("hear", src)
    meta_uri = storage.join(src, "task_metadata.json")
    task = read_json(meta_uri)
    for k in ("embedding_type", "prediction_type"):
        if not isinstance(task, dict) or k not in task:
            raise MetadataError(meta_uri, 0, f"missing {k!r}")
    if task["embedding_type"] not in ("scene", "event"):
        raise MetadataError(meta_uri, 0, f"embedding_type {task['embedding_type']!r} not scene/event")
    event = task["embedding_type"] == "event"
    vocab_uri = storage.join(src, "labelvocabulary.csv")
    vocab = set()
    for lineno, f in csv_rows(vocab_uri):
        if lineno == 1:
            if f[:2] != ["idx", "label"]:
                raise MetadataError(vocab_uri, 1, f"header must be idx,label, got {f}")
            continue
        if len(f) != 2:
            raise MetadataError(vocab_uri, lineno, f"expected 2 fields, got {len(f)}")
        vocab.add(f[1])
    listing = list_relative(media or src)
    rates = sorted({int(r.split("/", 1)[0]) for r in listing
                    if "/" in r and r.split("/", 1)[0].isdigit()})
    if not rates:
        raise MetadataError(src, 0, "no <sample_rate>/<split>/ audio folder")
    rate = 16000 if 16000 in rates else rates[0]
    present = set(listing)
    top = listing if media is None else list_relative(src)
    splits = [r.removesuffix(".json") for r in top
              if "/" not in r and r.endswith(".json") and r != "task_metadata.json"]
    rows: Rows = []
    for split in sorted(splits):
        uri = storage.join(src, f"{split}.json")
        data = read_json(uri)
        if not isinstance(data, dict):
            raise MetadataError(uri, 0, "expected a JSON object: file -> labels")
        for fname, value in sorted(data.items()):
            labels, events = _hear_labels(uri, fname, value, event)
            if vocab and not set(labels) <= vocab:
                raise MetadataError(uri, 0, f"{fname}: labels {sorted(set(labels) - vocab)} not "
                                    "in labelvocabulary.csv")
            rel = f"{rate}/{split}/{fname}"
            if rel not in present:
                report.missing_media.append(f"{split}/{fname}")
                continue
            meta = {"task": task.get("task_name", src.rstrip("/").rsplit("/", 1)[-1]),
                    "sample_rate_dir": rate, "prediction_type": task["prediction_type"]}
            if events is not None:
                meta["events"] = events
            rows.append(make_row(f"{split}/{split_ext(fname)[0]}",
                                 storage.join(media or src, rel), labels=labels,
                                 split=split, meta=meta))
    report.count_rows(rows)
    return rows, report
