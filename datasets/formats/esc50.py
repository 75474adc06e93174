"""ESC-50 (Piczak, ACM MM 2015): ``meta/esc50.csv`` =
``filename,fold,target,category,esc10,src_file,take``; audio in ``audio/``; 2000 clips of 5 s,
50 classes, 5 folds (evaluated by 5-fold cross-validation, so the fold is the split).
Facts: ANCHORS.md section 4.

Fatal: a malformed ``esc50.csv`` line (``file:line: reason``), or a file named twice.
Not fatal: a clip whose WAV is absent (a partial copy); every other clip keeps its fold, and the
absent one is listed with the path looked for (report and ``M.missing_media.txt``).
"""

from __future__ import annotations

from typing import Any

from tympan.datasets import storage
from tympan.datasets.formats.common import IngestReport, MetadataError, csv_rows, list_relative, parse_int
from tympan.datasets.manifest import make_row

Rows = list[dict[str, Any]]
_ESC50_HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]


def ingest_esc50(src: str, media: str | None = None) -> tuple[Rows, IngestReport]:
    report = IngestReport("esc50", src)
    meta_uri = storage.join(src, "meta", "esc50.csv")
    entries = []                       # metadata is checked before any media listing
    seen: dict[str, int] = {}
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
        if filename in seen:
            raise MetadataError(meta_uri, lineno, f"{filename} repeated (first on line "
                                f"{seen[filename]})")
        seen[filename] = lineno
        entries.append((filename, fold_i, category, {"target": target_i, "esc10": esc10 == "True",
                                                     "src_file": src_file, "take": take}))
    audio_root = media or storage.join(src, "audio")
    present = set(list_relative(audio_root))
    rows: Rows = []
    for filename, fold_i, category, meta in entries:
        clip_id = filename.removesuffix(".wav")
        if filename not in present:
            report.add_missing(clip_id, storage.join(audio_root, filename))
            continue
        rows.append(make_row(clip_id, storage.join(audio_root, filename), labels=[category],
                             split=f"fold{fold_i}", meta=meta))
    report.count_rows(rows)
    return rows, report
