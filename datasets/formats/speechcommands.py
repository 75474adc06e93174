"""Speech Commands (Warden, arXiv 1804.03209): ``<word>/<speaker>_nohash_<n>.wav``;
``validation_list.txt`` / ``testing_list.txt`` list relative paths, the rest is train;
``_background_noise_/`` holds long noise files (kept apart as split "background").
Facts: ANCHORS.md section 4.

Both lists are required: without ``testing_list.txt`` every test clip would silently become a
training clip. ``allow_missing_lists=True`` accepts a copy without them; the report then warns,
naming the file and how many clips went to "train" in its place.

Fatal: a list line that is not ``<word>/<speaker>_nohash_<n>.wav`` or names a file not present
(the lists and the audio come from different releases, v0.01 and v0.02 differ, so the split of
the other clips cannot be trusted either), a file in both lists (``file:line`` of both).
Not fatal: a ``.wav`` outside the naming scheme (skipped and listed). Missing media cannot occur
otherwise: the clips are the files found.
"""

from __future__ import annotations

import re
from typing import Any

from tympan.datasets import storage
from tympan.datasets.formats.common import IngestReport, MetadataError, list_relative, read_text, split_ext
from tympan.datasets.manifest import make_row

Rows = list[dict[str, Any]]
_SC_NAME = re.compile(r"^([^/]+)/([0-9a-zA-Z]+)_nohash_(\d+)\.wav$")


def _read_list(uri: str, present: set[str]) -> dict[str, int]:
    """Listed file -> its (first) line number."""
    out: dict[str, int] = {}
    for lineno, line in enumerate(read_text(uri).splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if not _SC_NAME.match(line):
            raise MetadataError(uri, lineno, f"{line!r} is not <word>/<speaker>_nohash_<n>.wav")
        if line not in present:
            raise MetadataError(uri, lineno, f"{line} is listed but not present under the corpus "
                                "(are the lists from another release? v0.01 and v0.02 differ)")
        out.setdefault(line, lineno)
    return out


def ingest_speechcommands(src: str, media: str | None = None, *, include_background: bool = True,
                          allow_missing_lists: bool = False) -> tuple[Rows, IngestReport]:
    report = IngestReport("speechcommands", src)
    root = media or src
    present = set(list_relative(root))
    lists: dict[str, dict[str, int]] = {}
    absent_lists = []
    for name in ("validation_list.txt", "testing_list.txt"):
        uri = storage.join(src, name)
        if storage.exists(uri):
            lists[name] = _read_list(uri, present)
            continue
        if not allow_missing_lists:
            raise MetadataError(uri, 0, "file not found: without it the clips it lists would all "
                                "be ingested as 'train'; restore it, or pass "
                                "--allow-missing-lists to accept that")
        lists[name] = {}
        absent_lists.append(name)
    valid, test = lists["validation_list.txt"], lists["testing_list.txt"]
    both = sorted(set(valid) & set(test), key=test.get)
    if both:
        first = both[0]
        raise MetadataError(storage.join(src, "testing_list.txt"), test[first],
                            f"{first} is also in validation_list.txt (line {valid[first]})"
                            + (f"; {len(both) - 1} more files are in both lists"
                               if len(both) > 1 else ""))
    rows: Rows = []
    for rel in sorted(present):
        if not rel.endswith(".wav"):
            continue
        if rel.startswith("_background_noise_/"):
            if include_background:
                rows.append(make_row(split_ext(rel)[0], storage.join(root, rel),
                                     labels=["_background_noise_"], split="background",
                                     meta={"background": True}))
            else:
                report.skip(storage.join(root, rel), "background noise (include_background=False)")
            continue
        m = _SC_NAME.match(rel)
        if not m:
            report.skip(storage.join(root, rel), "not <word>/<speaker>_nohash_<n>.wav")
            continue
        word, speaker, n = m.groups()
        split = "valid" if rel in valid else "test" if rel in test else "train"
        rows.append(make_row(split_ext(rel)[0], storage.join(root, rel), labels=[word],
                             split=split, meta={"speaker": speaker, "utterance": int(n)}))
    report.count_rows(rows)
    for name in absent_lists:
        split = "valid" if name.startswith("validation") else "test"
        report.warnings.append(f"{storage.join(src, name)} not found (--allow-missing-lists): no "
                               f"clip is in split {split!r}; the clips it would list are among "
                               f"the {report.splits.get('train', 0)} in 'train'")
    return rows, report
