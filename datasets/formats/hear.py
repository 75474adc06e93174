"""HEAR 2021 task folders (Turian et al., PMLR 176): ``task_metadata.json``,
``labelvocabulary.csv``, ``{train,valid,test,foldNN}.json`` (file -> labels, or events for event
tasks), audio under ``<sample_rate>/<split>/``. Facts: ANCHORS.md section 4.

The splits are the ones ``task_metadata.json`` declares: its ``splits`` list (what heareval's
``get_splits_from_metadata`` reads for k-fold tasks), else ``train``/``valid``/``test`` for
``split_mode: trainvaltest`` or ``fold00``.. for ``nfolds``. A declared split whose JSON is absent
is fatal: k-fold cross-validation over the folds present would silently change the protocol.
A split JSON that is not declared is skipped and listed. Without any declaration, the JSON files
present are the splits, and a gap in the fold numbers (fold00, fold01, fold03) is fatal.

Fatal also: a label outside ``labelvocabulary.csv``, an event without label/start/end or with a
time that is not a number >= 0 (``train.json: x.wav: event #0: start '9OO' is not a number``).
Not fatal: a clip whose audio is absent (listed with the path looked for).
"""

from __future__ import annotations

import re
from typing import Any

from tympan.datasets import storage
from tympan.datasets.formats.common import (IngestReport, MetadataError, csv_rows, json_number,
                                           list_relative, read_json, split_ext)
from tympan.datasets.manifest import make_row

Rows = list[dict[str, Any]]


def _hear_labels(uri: str, key: str, value: Any, event: bool) -> tuple[list[str], Any]:
    if not isinstance(value, list):
        raise MetadataError(uri, 0, f"{key}: labels must be a list")
    if not event:
        return [str(v) for v in value], None
    events = []
    for i, ev in enumerate(value):
        if not isinstance(ev, dict) or not {"label", "start", "end"} <= set(ev):
            raise MetadataError(uri, 0, f"{key}: event #{i} {ev!r} needs label/start/end")
        where = f"{key}: event #{i}"
        start = json_number(uri, where, "start", ev["start"])       # milliseconds
        end = json_number(uri, where, "end", ev["end"])
        if end < start:
            raise MetadataError(uri, 0, f"{where}: end {ev['end']!r} < start {ev['start']!r}")
        events.append({"label": str(ev["label"]), "start": float(start), "end": float(end)})
    return sorted({e["label"] for e in events}), events


_FOLD = re.compile(r"^fold(\d+)$")


def _declared_splits(meta_uri: str, task: dict[str, Any]) -> list[str] | None:
    """The splits ``task_metadata.json`` declares, or None when it declares none."""
    if "splits" in task:
        splits = task["splits"]
        if not isinstance(splits, list) or not splits or not all(
                isinstance(x, str) and x and "/" not in x for x in splits):
            raise MetadataError(meta_uri, 0, f"splits {splits!r} must be a list of split names")
        return list(splits)
    if task.get("split_mode") == "trainvaltest":
        return ["train", "valid", "test"]
    if "nfolds" in task:
        n = json_number(meta_uri, "nfolds", "value", task["nfolds"], integer=True, lo=1)
        return [f"fold{i:02d}" for i in range(int(n))]
    return None


def _fold_gaps(splits: list[str]) -> list[str]:
    """Fold names absent between fold00 and the highest fold present (same zero padding)."""
    folds = [(int(m.group(1)), len(m.group(1))) for s in splits if (m := _FOLD.match(s))]
    if not folds:
        return []
    width, have = max(w for _, w in folds), {n for n, _ in folds}
    return [f"fold{i:0{width}d}" for i in range(max(have) + 1) if i not in have]


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
    found = sorted(r.removesuffix(".json") for r in top
                   if "/" not in r and r.endswith(".json") and r != "task_metadata.json")
    declared = _declared_splits(meta_uri, task)
    if declared is None:
        gaps = _fold_gaps(found)
        if gaps:
            raise MetadataError(src, 0, f"{', '.join(g + '.json' for g in gaps)} absent between "
                                f"the folds present {found}: cross-validation would run on "
                                f"{len(found)} folds")
        splits = found
    else:
        absent = [s for s in declared if s not in found]
        if absent:
            raise MetadataError(meta_uri, 0, f"splits lists {absent}, but "
                                f"{', '.join(s + '.json' for s in absent)} not found in {src}: "
                                f"refusing to ingest {len(declared) - len(absent)} of "
                                f"{len(declared)} splits")
        for extra in (s for s in found if s not in declared):
            report.skip(storage.join(src, f"{extra}.json"),
                        f"not a split declared in task_metadata.json {declared}")
        splits = declared
    rows: Rows = []
    for split in splits:
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
            clip_id = f"{split}/{split_ext(fname)[0]}"
            if rel not in present:
                report.add_missing(clip_id, storage.join(media or src, rel))
                continue
            meta = {"task": task.get("task_name", src.rstrip("/").rsplit("/", 1)[-1]),
                    "sample_rate_dir": rate, "prediction_type": task["prediction_type"]}
            if events is not None:
                meta["events"] = events
            rows.append(make_row(clip_id, storage.join(media or src, rel), labels=labels,
                                 split=split, meta=meta))
    report.count_rows(rows)
    return rows, report
