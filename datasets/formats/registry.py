"""Corpus formats -> clip manifest: the registry of ingesters and :func:`ingest`.

Each ingester is a prepare function ``(src, media=None, **options) -> (rows, IngestReport)``
(lhotse style: one function per corpus, returning manifest rows built with
:func:`tympan.datasets.manifest.make_row`). ``ingest`` runs one and writes the manifest and,
for every format, two lists next to it so that no clip leaves without being named:
``M.missing_media.txt`` (one missing clip per line: ``clip_id``, then a tab and the file looked
for where the format names one) and ``M.skipped.txt`` (``file<TAB>reason``). Both are written on
every run, empty when nothing is missing, so a rerun never leaves a stale list behind. What each
format treats as fatal is in docs/data.md ("What stops an ingest").

    from tympan.datasets.formats.registry import ingest
    report = ingest("esc50", "/data/ESC-50-master", "esc50.parquet")
    print(report.summary())
"""

from __future__ import annotations

import io
from typing import Any, Callable

import pyarrow.parquet as pq

from tympan.datasets import storage
from tympan.datasets.formats.audioset import ingest_audioset, ingest_vggsound
from tympan.datasets.formats.common import IngestReport, MetadataError, norm_root
from tympan.datasets.formats.esc50 import ingest_esc50
from tympan.datasets.formats.folder import ingest_folder
from tympan.datasets.formats.hear import ingest_hear
from tympan.datasets.formats.nsynth import ingest_nsynth
from tympan.datasets.formats.spectra import ingest_spectra
from tympan.datasets.formats.speechcommands import ingest_speechcommands
from tympan.datasets.manifest import to_table, write_manifest

__all__ = ["INGESTERS", "IngestReport", "MetadataError", "ingest", "missing_list_uri",
           "skipped_list_uri"]

Ingester = Callable[..., "tuple[list[dict[str, Any]], IngestReport]"]
INGESTERS: dict[str, Ingester] = {
    "audioset": ingest_audioset,
    "esc50": ingest_esc50,
    "speechcommands": ingest_speechcommands,
    "nsynth": ingest_nsynth,
    "vggsound": ingest_vggsound,
    "hear": ingest_hear,
    "folder": ingest_folder,
    "spectra": ingest_spectra,
}


def missing_list_uri(out: str) -> str:
    """``M.parquet -> M.missing_media.txt`` (same folder or prefix)."""
    return f"{out.removesuffix('.parquet')}.missing_media.txt"


def skipped_list_uri(out: str) -> str:
    """``M.parquet -> M.skipped.txt`` (same folder or prefix)."""
    return f"{out.removesuffix('.parquet')}.skipped.txt"


def _write_lines(uri: str, lines: list[str]) -> None:
    storage.write_bytes_atomic(uri, "".join(f"{line}\n" for line in lines).encode())


def _write_rows(rows: list[dict[str, Any]], out: str) -> None:
    if storage.is_local(out):
        write_manifest(rows, storage.local_path(out))
        return
    buf = io.BytesIO()
    pq.write_table(to_table(rows), buf)         # validates like write_manifest
    storage.write_bytes_atomic(out, buf.getvalue())


def ingest(fmt: str, src: str, out: str, media: str | None = None, **options: Any) -> IngestReport:
    """Run the ``fmt`` ingester on ``src`` and write the manifest to ``out`` (path or URI).

    Raises KeyError for an unknown format and :class:`MetadataError` (naming file and line) for
    malformed metadata; nothing is written then.
    """
    if fmt not in INGESTERS:
        raise KeyError(f"unknown corpus format {fmt!r}; known: {sorted(INGESTERS)}")
    src, out = norm_root(str(src)), str(out)
    media = norm_root(str(media)) if media else None
    rows, report = INGESTERS[fmt](src, media, **options)
    if not rows:
        lost = (report.missing_lines()[:3] + report.skipped_lines()[:3]
                + list(getattr(report, "rejected", None) or [])[:3])
        raise MetadataError(src, 0, f"no clips found ({len(report.missing_media)} without media, "
                            f"{len(report.skipped)} skipped" + (f"; e.g. {lost}" if lost else "")
                            + ")")
    _write_rows(rows, out)
    report.manifest = out
    report.missing_list, report.skipped_list = missing_list_uri(out), skipped_list_uri(out)
    _write_lines(report.missing_list, report.missing_lines())
    _write_lines(report.skipped_list, report.skipped_lines())
    rejected = getattr(report, "rejected", None)
    if rejected:            # malformed rows refused one by one (spectra): every one listed
        report.rejected_list = f"{out.removesuffix('.parquet')}.rejected_rows.txt"
        storage.write_bytes_atomic(report.rejected_list, "".join(f"{r}\n" for r in rejected).encode())
    return report
