"""NSynth (Engel et al., ICML 2017): ``examples.json`` keyed by note name; audio
``audio/<note>.wav``, 4 s at 16 kHz. Facts: ANCHORS.md section 4.
"""

from __future__ import annotations

from typing import Any

from tympan.datasets import storage
from tympan.datasets.formats.common import IngestReport, MetadataError, list_relative, read_json
from tympan.datasets.manifest import make_row

Rows = list[dict[str, Any]]
_NSYNTH_KEYS = ("note_str", "instrument", "pitch", "velocity", "sample_rate",
                "instrument_family_str", "instrument_source_str", "qualities")


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
