"""A plain folder of media whose sub-folder names are the labels."""

from __future__ import annotations

from typing import Any

from tympan.datasets import storage
from tympan.datasets.formats.common import IngestReport, MetadataError, is_media, list_relative, split_ext
from tympan.datasets.manifest import make_row

Rows = list[dict[str, Any]]


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
