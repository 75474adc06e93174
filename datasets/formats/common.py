"""Shared parts of the corpus adapters: the ingest report, metadata errors that name the file
and line, reading text from a local path or URI, and a media index built from ONE listing.

AudioSet has about 2.04M segments and 15-20% of its YouTube ids are gone (Gemmeke et al.,
"Audio Set", ICASSP 2017; ANCHORS.md section 4), so media are never looked up with one stat per
row: the media root is listed once and names are matched in memory.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

from tympan.datasets import storage
from tympan.datasets.audio import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS

MEDIA_EXTENSIONS = tuple(AUDIO_EXTENSIONS) + tuple(e for e in VIDEO_EXTENSIONS
                                                    if e not in AUDIO_EXTENSIONS)


class MetadataError(ValueError):
    """Malformed corpus metadata. ``str()`` reads ``file:line: reason`` (line 0: whole file)."""

    def __init__(self, file: str, line: int, reason: str):
        self.file, self.line, self.reason = str(file), int(line), reason
        super().__init__(f"{file}:{line}: {reason}" if line else f"{file}: {reason}")


@dataclass
class IngestReport:
    """What an ingest did: rows written, media not found, items skipped, labels dropped, warnings.

    Nothing listed in the metadata leaves the manifest unnamed: a clip whose media is absent is
    in ``missing_media`` (with the file looked for in ``missing_files`` when the format names
    one), a file that was seen but not taken is in ``skipped`` with the reason. ``ingest``
    writes both lists next to the manifest.
    """
    format: str
    src: str
    rows: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    missing_media: list[str] = field(default_factory=list)    # clip ids without media
    missing_files: dict[str, str] = field(default_factory=dict)  # clip id -> file looked for
    skipped: dict[str, str] = field(default_factory=dict)     # file or entry -> why not taken
    dropped_labels: dict[str, int] = field(default_factory=dict)  # label -> rows it was dropped from
    warnings: list[str] = field(default_factory=list)
    manifest: str | None = None
    missing_list: str | None = None                            # file listing missing_media
    skipped_list: str | None = None                            # file listing skipped

    def add_missing(self, clip_id: str, looked_for: str | None = None) -> None:
        self.missing_media.append(clip_id)
        if looked_for is not None:
            self.missing_files[clip_id] = looked_for

    def skip(self, item: str, reason: str) -> None:
        self.skipped[item] = reason

    def count_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.rows = len(rows)
        self.splits = dict(sorted(Counter(r["split"] for r in rows).items()))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def missing_lines(self) -> list[str]:
        """``clip_id`` or ``clip_id<TAB>file looked for``, one per missing clip."""
        return [f"{c}\t{self.missing_files[c]}" if c in self.missing_files else c
                for c in self.missing_media]

    def skipped_lines(self) -> list[str]:
        return [f"{item}\t{reason}" for item, reason in self.skipped.items()]

    def summary(self, examples: int = 5) -> str:
        lines = [f"{self.format}: {self.rows} clips from {self.src}"]
        if self.splits:
            lines.append("  splits: " + ", ".join(f"{k}={v}" for k, v in self.splits.items()))
        if self.missing_media:
            lines.append(f"  missing media: {len(self.missing_media)}"
                         + (f" (all listed in {self.missing_list})" if self.missing_list else ""))
            for c in self.missing_media[:examples]:
                where = self.missing_files.get(c)
                lines.append(f"    {c}: {where} not found" if where else f"    {c}")
            if len(self.missing_media) > examples:
                lines.append(f"    ... and {len(self.missing_media) - examples} more")
        if self.skipped:
            lines.append(f"  skipped: {len(self.skipped)}"
                         + (f" (all listed in {self.skipped_list})" if self.skipped_list else ""))
            for item, reason in list(self.skipped.items())[:examples]:
                lines.append(f"    {item}: {reason}")
            if len(self.skipped) > examples:
                lines.append(f"    ... and {len(self.skipped) - examples} more")
        if self.dropped_labels:
            lines.append("  dropped labels: " + ", ".join(
                f"{k} x{v}" for k, v in sorted(self.dropped_labels.items())))
        lines += first_of(self.warnings, "  warning: ", "warnings")
        if self.manifest:
            lines.append(f"  manifest: {self.manifest}")
        return "\n".join(lines)


def first_of(items: Sequence[str], prefix: str, noun: str, n: int = 10) -> list[str]:
    """Report lines for the first ``n`` items, then how many more there are."""
    out = [f"{prefix}{x}" for x in items[:n]]
    if len(items) > n:
        out.append(f"  ... and {len(items) - n} more {noun}")
    return out


def read_text(uri: str) -> str:
    """The whole text of a metadata file (local or URI); a missing one is a MetadataError."""
    if not storage.exists(uri):
        raise MetadataError(uri, 0, "file not found")
    try:
        return storage.read_bytes(uri).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise MetadataError(uri, 0, f"not UTF-8 text: {e}") from None


def read_json(uri: str) -> Any:
    try:
        return json.loads(read_text(uri))
    except json.JSONDecodeError as e:
        raise MetadataError(uri, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None


def csv_rows(uri: str, *, skip_comments: bool = False,
             skipinitialspace: bool = False) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for each non-blank line (1-based, as editors count)."""
    text = read_text(uri)
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or (skip_comments and line.lstrip().startswith("#")):
            continue
        try:
            fields = next(csv.reader(io.StringIO(line), skipinitialspace=skipinitialspace,
                                     strict=True))
        except csv.Error as e:
            raise MetadataError(uri, lineno, f"bad CSV quoting: {e}") from None
        yield lineno, fields


def parse_float(uri: str, lineno: int, name: str, value: str) -> float:
    try:
        out = float(value)
    except ValueError:
        raise MetadataError(uri, lineno, f"{name} {value!r} is not a number") from None
    if out != out or out < 0:
        raise MetadataError(uri, lineno, f"{name} {value!r} must be a number >= 0")
    return out


def parse_int(uri: str, lineno: int, name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise MetadataError(uri, lineno, f"{name} {value!r} is not an integer") from None


def json_number(uri: str, where: str, name: str, value: Any, *, integer: bool = False,
                lo: float | None = 0, hi: float | None = None) -> float | int:
    """A number from a JSON value (a JSON number, or a string holding one), checked against
    ``[lo, hi]``. ``where`` names the entry (JSON files have no useful line for one key), so a
    message reads ``examples.json: <note>: pitch 'sixty' is not a number``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MetadataError(uri, 0, f"{where}: {name} {value!r} is not a number")
    try:
        out = float(value)
    except ValueError:
        raise MetadataError(uri, 0, f"{where}: {name} {value!r} is not a number") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise MetadataError(uri, 0, f"{where}: {name} {value!r} is not a finite number")
    if integer:
        if out != int(out):
            raise MetadataError(uri, 0, f"{where}: {name} {value!r} is not an integer")
        out = int(out)
    if (lo is not None and out < lo) or (hi is not None and out > hi):
        bounds = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise MetadataError(uri, 0, f"{where}: {name} {value!r} must be {bounds}")
    return out


def split_ext(name: str) -> tuple[str, str]:
    """``"a/b/x.y.flac" -> ("a/b/x.y", "flac")`` (extension lower-cased, no dot)."""
    base = name.rsplit("/", 1)[-1]
    if "." not in base:
        return name, ""
    stem, ext = name.rsplit(".", 1)
    return stem, ext.lower()


_MEDIA_EXTS = frozenset(e.lstrip(".").lower() for e in MEDIA_EXTENSIONS)
_VIDEO_EXTS = frozenset(e.lstrip(".").lower() for e in VIDEO_EXTENSIONS)


def is_media(name: str) -> bool:
    return split_ext(name)[1] in _MEDIA_EXTS


def is_video(name: str) -> bool:
    return split_ext(name)[1] in _VIDEO_EXTS


def norm_root(uri: str) -> str:
    """A local path made absolute (Ray workers run elsewhere), a URI without trailing slash."""
    return storage.local_path(uri) if storage.is_local(uri) else str(uri).rstrip("/")


def list_relative(root: str) -> list[str]:
    """Every file under ``root`` (recursive, one listing), as sorted paths relative to it."""
    root_norm = norm_root(root)
    out = []
    for uri in storage.list_files(root_norm):
        uri = str(uri)
        rel = uri[len(root_norm):].lstrip("/") if uri.startswith(root_norm) else uri
        out.append(rel)
    return sorted(out)


class MediaIndex:
    """Media files under a root, indexed by file-name stem (one listing, in-memory matching).

    ``find(stems)`` returns ``(audio_uri, video_uri)`` for the first stem with any match; an
    audio-only extension wins for ``audio`` and a video container for ``video``.
    """

    def __init__(self, root: str, rel_paths: Iterable[str]):
        self.root = norm_root(root)
        by_stem: dict[str, dict[str, str]] = {}
        self.duplicates = 0
        for rel in rel_paths:
            stem, ext = split_ext(rel.rsplit("/", 1)[-1])
            if ext not in _MEDIA_EXTS:
                continue
            exts = by_stem.setdefault(stem, {})
            if ext in exts:
                self.duplicates += 1      # same name in two folders: keep the first (sorted)
                continue
            exts[ext] = rel
        # stem -> (audio rel path, video rel path): an audio-only file wins for the audio,
        # a video container for the picture (and for the audio when it is the only file).
        self._by_stem: dict[str, tuple[str, str | None]] = {}
        for stem, exts in by_stem.items():
            audio = next((exts[e] for e in sorted(exts) if e not in _VIDEO_EXTS), None)
            video = next((exts[e] for e in sorted(exts) if e in _VIDEO_EXTS), None)
            self._by_stem[stem] = (audio or video, video)

    @classmethod
    def build(cls, root: str) -> "MediaIndex":
        return cls(root, list_relative(root))

    def __len__(self) -> int:
        return len(self._by_stem)

    def uri(self, rel: str) -> str:
        return storage.join(self.root, rel)

    def find(self, stems: Iterable[str]) -> tuple[str | None, str | None]:
        for stem in stems:
            hit = self._by_stem.get(stem)
            if hit is not None:
                return self.uri(hit[0]), (self.uri(hit[1]) if hit[1] else None)
        return None, None
