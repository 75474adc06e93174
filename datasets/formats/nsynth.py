"""NSynth (Engel et al., ICML 2017): ``examples.json`` keyed by note name; audio
``audio/<note>.wav``, 4 s at 16 kHz. Released as three folders, ``nsynth-train``,
``nsynth-valid`` and ``nsynth-test``: the split is not written in ``examples.json``, only in the
folder name. Facts: ANCHORS.md section 4.

SRC is one of those folders (its split from the name, or ``split=``) or their parent (all the
``nsynth-*`` folders it holds, in one manifest). A folder whose name does not tell the split is
refused unless ``split=`` is given: guessing "train" would put test notes into training.

Fatal: an entry lacking a key or with a bad value (``examples.json: <note>: pitch 'sixty' is not
a number``), a note in two splits, a split that cannot be told. Not fatal: a note whose WAV is
absent (listed with the path looked for).
"""

from __future__ import annotations

import re
from typing import Any

from tympan.datasets import storage
from tympan.datasets.formats.common import (IngestReport, MetadataError, json_number,
                                           list_relative, read_json)
from tympan.datasets.manifest import make_row

Rows = list[dict[str, Any]]
SPLITS = ("train", "valid", "test")
_NSYNTH_KEYS = ("note_str", "instrument", "pitch", "velocity", "sample_rate",
                "instrument_family_str", "instrument_source_str", "qualities")
# "nsynth-valid", "nsynth_test_copy", "valid": the split is a whole word of the name, never a
# substring ("contest" is not "test", "training" is not "train").
_SPLIT_IN_NAME = re.compile(r"(?:^|[-_.])(train|valid|test)(?:[-_.]|$)")


def split_from_name(name: str) -> str | None:
    found = {m.group(1) for m in _SPLIT_IN_NAME.finditer(name)}
    return found.pop() if len(found) == 1 else None


def _read_examples(json_uri: str) -> list[tuple[str, dict[str, Any]]]:
    data = read_json(json_uri)
    if not isinstance(data, dict):
        raise MetadataError(json_uri, 0, "expected a JSON object keyed by note name")
    out = []
    for note, ex in sorted(data.items()):
        missing = [k for k in _NSYNTH_KEYS if not isinstance(ex, dict) or k not in ex]
        if missing:
            raise MetadataError(json_uri, 0, f"{note}: lacks {missing}")
        if ex["note_str"] != note:
            raise MetadataError(json_uri, 0, f"{note}: note_str {ex['note_str']!r} differs from "
                                "its key")
        for name, lo, hi in (("pitch", 0, 127), ("velocity", 0, 127), ("sample_rate", 1, None)):
            json_number(json_uri, note, name, ex[name], integer=True, lo=lo, hi=hi)
        if not isinstance(ex["instrument_family_str"], str) or not ex["instrument_family_str"]:
            raise MetadataError(json_uri, 0, f"{note}: instrument_family_str "
                                f"{ex['instrument_family_str']!r} is not a label")
        out.append((note, ex))
    return out


def _split_folders(src: str) -> list[tuple[str, str]]:
    """``(folder, split)`` for the NSynth split folders directly under a parent ``src``."""
    subdirs = sorted({r.split("/", 1)[0] for r in list_relative(src)
                      if r.count("/") == 1 and r.endswith("/examples.json")})
    out = [(storage.join(src, d), s) for d in subdirs if (s := split_from_name(d))]
    if len({s for _, s in out}) != len(out):
        raise MetadataError(src, 0, f"two folders give the same split: {[d for d, _ in out]}")
    return out


def ingest_nsynth(src: str, media: str | None = None, *,
                  split: str | None = None) -> tuple[Rows, IngestReport]:
    """One ``nsynth-{train,valid,test}`` folder, or the parent holding them (every split in one
    manifest). ``split`` names the split of a single folder whose name does not tell it."""
    report = IngestReport("nsynth", src)
    if split is not None and split not in SPLITS:
        raise MetadataError(src, 0, f"split {split!r} is not one of {list(SPLITS)}")
    json_uri = storage.join(src, "examples.json")
    if storage.exists(json_uri):
        name = src.rstrip("/").rsplit("/", 1)[-1]
        named = split_from_name(name)
        if split is not None and named is not None and named != split:
            report.warnings.append(f"folder {name!r} reads as split {named!r}; --split {split!r} "
                                   "was used")
        split = split or named
        if split is None:
            raise MetadataError(src, 0, f"cannot tell the split from the folder name {name!r} "
                                "(NSynth ships nsynth-train, nsynth-valid, nsynth-test); "
                                "pass --split train|valid|test")
        parts = [(src, split, media or storage.join(src, "audio"))]
    else:
        folders = _split_folders(src) if storage.exists(src) else []
        if not folders:
            raise MetadataError(json_uri, 0, "file not found; SRC must be an nsynth-train/valid/"
                                "test folder (examples.json, audio/) or the folder holding them")
        if split is not None or media is not None:
            raise MetadataError(src, 0, "--split and --media apply to one nsynth-* folder; "
                                f"SRC holds {len(folders)} (each keeps its own split and audio/)")
        parts = [(d, s, storage.join(d, "audio")) for d, s in folders]
    rows: Rows = []
    seen: dict[str, str] = {}
    for folder, part_split, audio_root in parts:
        part_json = storage.join(folder, "examples.json")
        examples = _read_examples(part_json)
        present = set(list_relative(audio_root)) if storage.exists(audio_root) else set()
        if not present and examples:
            report.warnings.append(f"{audio_root}: no audio found; its {len(examples)} notes "
                                   "are listed as missing")
        for note, ex in examples:
            if note in seen:
                raise MetadataError(part_json, 0, f"{note}: also in {seen[note]}")
            seen[note] = part_json
            if f"{note}.wav" not in present:
                report.add_missing(note, storage.join(audio_root, f"{note}.wav"))
                continue
            rows.append(make_row(note, storage.join(audio_root, f"{note}.wav"),
                                 labels=[ex["instrument_family_str"]], split=part_split,
                                 meta={k: ex[k] for k in ex if k not in ("note_str",)}))
    report.count_rows(rows)
    return rows, report
