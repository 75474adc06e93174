"""Speech Commands (Warden, arXiv 1804.03209): ``<word>/<speaker>_nohash_<n>.wav``;
``validation_list.txt`` / ``testing_list.txt`` list relative paths, the rest is train;
``_background_noise_/`` holds long noise files (kept apart as split "background").
Facts: ANCHORS.md section 4.
"""

from __future__ import annotations

import re
from typing import Any

from tympan.datasets import storage
from tympan.datasets.formats.common import IngestReport, MetadataError, list_relative, read_text, split_ext
from tympan.datasets.manifest import make_row

Rows = list[dict[str, Any]]
_SC_NAME = re.compile(r"^([^/]+)/([0-9a-zA-Z]+)_nohash_(\d+)\.wav$")


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
