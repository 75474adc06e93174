"""Corpora shipped with their audio: ESC-50, Speech Commands, NSynth, HEAR task folders, and a
plain folder of media whose sub-folder names are the labels. Facts: ANCHORS.md section 4.

- ESC-50 (Piczak, ACM MM 2015): ``meta/esc50.csv`` =
  ``filename,fold,target,category,esc10,src_file,take``; audio in ``audio/``; 2000 clips of 5 s,
  50 classes, 5 folds (evaluated by 5-fold cross-validation, so the fold is the split).
- Speech Commands (Warden, arXiv 1804.03209): ``<word>/<speaker>_nohash_<n>.wav``;
  ``validation_list.txt`` / ``testing_list.txt`` list relative paths, the rest is train;
  ``_background_noise_/`` holds long noise files (kept apart as split "background").
- NSynth (Engel et al., ICML 2017): ``examples.json`` keyed by note name; audio ``audio/<note>.wav``,
  4 s at 16 kHz.
- HEAR 2021 (Turian et al., PMLR 176): ``task_metadata.json``, ``labelvocabulary.csv``,
  ``{train,valid,test,foldNN}.json`` (file -> labels, or events for event tasks), audio under
  ``<sample_rate>/<split>/``.
"""

from __future__ import annotations

import re
from typing import Any

from tympan.datasets import storage
from tympan.datasets.format_common import (IngestReport, MetadataError, csv_rows, is_media,
                                           list_relative, parse_int, read_json, read_text,
                                           split_ext)
from tympan.datasets.manifest import make_row

Rows = list[dict[str, Any]]
_ESC50_HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
_SC_NAME = re.compile(r"^([^/]+)/([0-9a-zA-Z]+)_nohash_(\d+)\.wav$")
_NSYNTH_KEYS = ("note_str", "instrument", "pitch", "velocity", "sample_rate",
                "instrument_family_str", "instrument_source_str", "qualities")


def ingest_esc50(src: str, media: str | None = None) -> tuple[Rows, IngestReport]:
    report = IngestReport("esc50", src)
    meta_uri = storage.join(src, "meta", "esc50.csv")
    entries = []                       # metadata is checked before any media listing
    for lineno, f in csv_rows(meta_uri):
        if lineno == 1:
            if f != _ESC50_HEADER:
                raise MetadataError(meta_uri, 1, f"header must be {','.join(_ESC50_HEADER)}, got {f}")
            continue
        if len(f) != len(_ESC50_HEADER):
            raise MetadataError(meta_uri, lineno, f"expected 7 fields, got {len(f)}")
        filename, fold, target, category, esc10, src_file, take = f
        fold_i = parse_int(meta_uri, lineno, "fold", fold)
        target_i = parse_int(meta_uri, lineno, "target", target)
        if not 1 <= fold_i <= 5 or not 0 <= target_i <= 49:
            raise MetadataError(meta_uri, lineno, f"fold {fold} / target {target} out of range")
        if esc10 not in ("True", "False") or not filename.endswith(".wav") or not category:
            raise MetadataError(meta_uri, lineno, f"bad filename/category/esc10 {f}")
        entries.append((filename, fold_i, category, {"target": target_i, "esc10": esc10 == "True",
                                                     "src_file": src_file, "take": take}))
    audio_root = media or storage.join(src, "audio")
    present = set(list_relative(audio_root))
    rows: Rows = []
    for filename, fold_i, category, meta in entries:
        clip_id = filename.removesuffix(".wav")
        if filename not in present:
            report.missing_media.append(clip_id)
            continue
        rows.append(make_row(clip_id, storage.join(audio_root, filename), labels=[category],
                             split=f"fold{fold_i}", meta=meta))
    report.count_rows(rows)
    return rows, report


def _read_list(uri: str, present: set[str]) -> set[str]:
    out: set[str] = set()
    if not storage.exists(uri):
        return out
    for lineno, line in enumerate(read_text(uri).splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if not _SC_NAME.match(line):
            raise MetadataError(uri, lineno, f"{line!r} is not <word>/<speaker>_nohash_<n>.wav")
        if line not in present:
            raise MetadataError(uri, lineno, f"{line} is listed but not present under the corpus")
        out.add(line)
    return out


def ingest_speechcommands(src: str, media: str | None = None, *,
                          include_background: bool = True) -> tuple[Rows, IngestReport]:
    report = IngestReport("speechcommands", src)
    root = media or src
    present = set(list_relative(root))
    valid = _read_list(storage.join(src, "validation_list.txt"), present)
    test = _read_list(storage.join(src, "testing_list.txt"), present)
    if valid & test:
        raise MetadataError(storage.join(src, "testing_list.txt"), 0,
                            f"{len(valid & test)} files also in validation_list.txt")
    rows: Rows = []
    for rel in sorted(present):
        if not rel.endswith(".wav"):
            continue
        if rel.startswith("_background_noise_/"):
            if include_background:
                rows.append(make_row(split_ext(rel)[0], storage.join(root, rel),
                                     labels=["_background_noise_"], split="background",
                                     meta={"background": True}))
            continue
        m = _SC_NAME.match(rel)
        if not m:
            report.warnings.append(f"skipped {rel}: not <word>/<speaker>_nohash_<n>.wav")
            continue
        word, speaker, n = m.groups()
        split = "valid" if rel in valid else "test" if rel in test else "train"
        rows.append(make_row(split_ext(rel)[0], storage.join(root, rel), labels=[word],
                             split=split, meta={"speaker": speaker, "utterance": int(n)}))
    report.count_rows(rows)
    return rows, report


def ingest_nsynth(src: str, media: str | None = None) -> tuple[Rows, IngestReport]:
    report = IngestReport("nsynth", src)
    json_uri = storage.join(src, "examples.json")
    data = read_json(json_uri)
    if not isinstance(data, dict):
        raise MetadataError(json_uri, 0, "expected a JSON object keyed by note name")
    audio_root = media or storage.join(src, "audio")
    present = set(list_relative(audio_root))
    name = src.rstrip("/").rsplit("/", 1)[-1]
    split = next((s for s in ("train", "valid", "test") if s in name), "train")
    rows: Rows = []
    for note, ex in sorted(data.items()):
        missing = [k for k in _NSYNTH_KEYS if not isinstance(ex, dict) or k not in ex]
        if missing:
            raise MetadataError(json_uri, 0, f"note {note!r} lacks {missing}")
        if ex["note_str"] != note or not 0 <= int(ex["pitch"]) <= 127:
            raise MetadataError(json_uri, 0, f"note {note!r}: note_str/pitch inconsistent")
        if f"{note}.wav" not in present:
            report.missing_media.append(note)
            continue
        rows.append(make_row(note, storage.join(audio_root, f"{note}.wav"),
                             labels=[ex["instrument_family_str"]], split=split,
                             meta={k: ex[k] for k in ex if k not in ("note_str",)}))
    report.count_rows(rows)
    return rows, report


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


def ingest_folder(src: str, media: str | None = None) -> tuple[Rows, IngestReport]:
    """Every media file under ``src``; its first sub-folder name is its label (none at the root)."""
    report = IngestReport("folder", src)
    root = media or src
    rows: Rows = []
    seen: set[str] = set()
    for rel in list_relative(root):
        if not is_media(rel):
            continue
        labels = [rel.split("/", 1)[0]] if "/" in rel else []
        clip_id = split_ext(rel)[0]
        clip_id = rel if clip_id in seen else clip_id     # x.wav and x.mp4 side by side
        seen.add(clip_id)
        rows.append(make_row(clip_id, storage.join(root, rel), labels=labels,
                             split="train", meta={"path": rel}))
    if not rows:
        raise MetadataError(root, 0, "no audio or video files found")
    report.count_rows(rows)
    return rows, report
