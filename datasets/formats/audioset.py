"""AudioSet (Gemmeke et al., "Audio Set: An ontology and human-labeled dataset for audio events",
ICASSP 2017) and VGGSound (Chen et al., ICASSP 2020): YouTube segments whose media the user
downloaded themselves, found by file-name template.

Segment CSVs as released: three ``#`` comment lines (the third is
``# YTID, start_seconds, end_seconds, positive_labels``), then ``YTID, start, end, "labels"``
with comma+space separators and the label MIDs comma-joined in one quoted field.
``class_labels_indices.csv`` is ``index,mid,display_name``; ``ontology.json`` is a list of
{id, name, description, citation_uri, positive_examples, child_ids, restrictions} where
restrictions may hold "abstract" and "blacklist". Blacklisted classes are dropped from labels
(and counted). About 15-20% of YouTube ids are gone, so missing media is counted, never fatal.

VGGSound ``vggsound.csv`` has no header: ``youtube_id,start_seconds,label,split``; 10 s clips.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from tympan.datasets import storage
from tympan.datasets.formats.common import (IngestReport, MediaIndex, MetadataError, csv_rows,
                                           list_relative, parse_float, parse_int, read_json)
from tympan.datasets.manifest import make_row

# Common download layouts: youtube-dl default, PANNs ("Y" + id), id_start_end, id_start.
DEFAULT_TEMPLATES = ("{ytid}", "Y{ytid}", "{ytid}_{start}_{end}", "{ytid}_{start_int}_{end_int}",
                     "{ytid}_{start_int}", "{ytid}_{start_ms}_{end_ms}", "Y{ytid}_{start}_{end}")
# VGGSound's own release names clips "{ytid}_{start:06d}.mp4".
VGGSOUND_TEMPLATES = ("{ytid}_{start_06}", "{ytid}_{start_int}", "{ytid}", "Y{ytid}")
_YTID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_MID = re.compile(r"^/[a-z]/[0-9a-z_]+$")
_CSV_HEADER = ["# YTID", "start_seconds", "end_seconds", "positive_labels"]


@dataclass
class OntologyClass:
    mid: str
    name: str
    children: list[str]
    parents: list[str]
    abstract: bool
    blacklist: bool


def parse_ontology(uri: str) -> dict[str, OntologyClass]:
    """MID -> class, with parents filled in from every class's ``child_ids``."""
    data = read_json(uri)
    if not isinstance(data, list):
        raise MetadataError(uri, 0, "expected a JSON list of classes")
    out: dict[str, OntologyClass] = {}
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not {"id", "name", "child_ids"} <= set(item):
            raise MetadataError(uri, 0, f"class #{i} lacks id/name/child_ids")
        restr = item.get("restrictions") or []
        out[item["id"]] = OntologyClass(item["id"], item["name"], list(item["child_ids"]), [],
                                        "abstract" in restr, "blacklist" in restr)
    for c in out.values():
        for child in c.children:
            if child not in out:
                raise MetadataError(uri, 0, f"class {c.mid} lists unknown child {child}")
            out[child].parents.append(c.mid)
    return out


def ancestors(onto: dict[str, OntologyClass], mid: str) -> list[str]:
    """All ancestors of ``mid`` (the ontology is a DAG: a class may have several parents)."""
    seen: list[str] = []
    stack = list(onto[mid].parents) if mid in onto else []
    while stack:
        p = stack.pop()
        if p not in seen:
            seen.append(p)
            stack.extend(onto[p].parents)
    return sorted(seen)


def parse_class_index(uri: str) -> dict[str, str]:
    """``class_labels_indices.csv`` -> MID -> display name (indices must run 0, 1, 2...)."""
    names: dict[str, str] = {}
    for lineno, f in csv_rows(uri):
        if lineno == 1:
            if f != ["index", "mid", "display_name"]:
                raise MetadataError(uri, 1, f"header must be index,mid,display_name, got {f}")
            continue
        if len(f) != 3:
            raise MetadataError(uri, lineno, f"expected 3 fields, got {len(f)}")
        if parse_int(uri, lineno, "index", f[0]) != len(names):
            raise MetadataError(uri, lineno, f"index {f[0]} out of order (expected {len(names)})")
        names[f[1]] = f[2]
    return names


def _window_values(ytid: str, start: str, end: str, s: float, e: float) -> dict[str, str]:
    return {"ytid": ytid, "start": start, "end": end, "start_int": str(int(s)),
            "end_int": str(int(e)), "start_ms": str(round(s * 1000)),
            "end_ms": str(round(e * 1000)), "start_06": f"{int(s):06d}"}


def _stems(templates: Sequence[str], values: dict[str, str]) -> list[str]:
    # Templates may be given with a trailing ".{ext}"; matching is by stem, any media extension.
    return [t.removesuffix(".{ext}").format(**values) for t in templates]


def _segment_csvs(src: str, listing: list[str]) -> list[str]:
    names = [r for r in listing if "/" not in r and r.endswith(".csv")
             and r != "class_labels_indices.csv"]
    if not names:
        raise MetadataError(src, 0, "no segment CSV (e.g. balanced_train_segments.csv) found")
    return [storage.join(src, n) for n in names]


@dataclass(frozen=True)
class Segment:
    ytid: str
    start: str          # as written in the CSV ("30.000"): some layouts use it verbatim
    end: str
    start_s: float
    end_s: float
    mids: tuple[str, ...]
    where: str          # "file:line", for messages


def parse_segments(uri: str) -> Iterator[Segment]:
    """Validate and yield the segments of one AudioSet segment CSV (comment lines skipped)."""
    for lineno, f in csv_rows(uri, skipinitialspace=True):
        if f and f[0].startswith("#"):
            if f[0] == "# YTID" and f != _CSV_HEADER:
                raise MetadataError(uri, lineno, f"unexpected header {f}")
            continue
        if len(f) != 4:
            raise MetadataError(uri, lineno, f"expected 4 fields (YTID, start, end, \"labels\"),"
                                f" got {len(f)}")
        ytid, start, end, labels_field = f
        if not _YTID.match(ytid):
            raise MetadataError(uri, lineno, f"bad YouTube id {ytid!r}")
        s, e = parse_float(uri, lineno, "start", start), parse_float(uri, lineno, "end", end)
        if e <= s:
            raise MetadataError(uri, lineno, f"end {end} <= start {start}")
        mids = tuple(m.strip() for m in labels_field.split(",") if m.strip())
        if not mids or not all(_MID.match(m) for m in mids):
            raise MetadataError(uri, lineno, f"bad label MIDs {labels_field!r}")
        yield Segment(ytid, start, end, s, e, mids, f"{uri}:{lineno}")


def ingest_audioset(src: str, media: str | None = None, *, templates: Sequence[str] | None = None,
                    full_videos: bool = False) -> tuple[list[dict[str, Any]], IngestReport]:
    """Segment CSVs under ``src`` (+ ontology.json / class_labels_indices.csv when present).

    Media are matched under ``media`` (default ``src``) by ``templates``; ``full_videos=True``
    means the files are whole YouTube videos, so the segment window is kept as start_s/end_s
    (otherwise the file is taken to be the cut 10 s segment). All metadata is validated before
    the media root is listed (once).
    """
    report = IngestReport("audioset", src)
    templates = tuple(templates or DEFAULT_TEMPLATES)
    onto = parse_ontology(storage.join(src, "ontology.json")) \
        if storage.exists(storage.join(src, "ontology.json")) else {}
    index_uri = storage.join(src, "class_labels_indices.csv")
    names = parse_class_index(index_uri) if storage.exists(index_uri) else {}
    names.update({m: c.name for m, c in onto.items() if m not in names})
    anc = {m: ancestors(onto, m) for m in onto}
    segments: list[tuple[str, str, Segment]] = []      # (clip_id, subset, segment)
    seen: dict[str, str] = {}
    listing = list_relative(src)
    for uri in _segment_csvs(src, listing):
        subset = uri.rsplit("/", 1)[-1].removesuffix(".csv").removesuffix("_segments")
        for seg in parse_segments(uri):
            clip_id = f"{seg.ytid}_{round(seg.start_s * 1000)}"
            if clip_id in seen:
                file, line = seg.where.rsplit(":", 1)
                raise MetadataError(file, int(line), f"segment {clip_id} repeated "
                                    f"(first: {seen[clip_id]})")
            seen[clip_id] = seg.where
            segments.append((clip_id, subset, seg))
    # The media root is listed once (AudioSet: ~2M names), and not again when it is ``src``.
    media_index = MediaIndex(media, list_relative(media)) if media else MediaIndex(src, listing)
    rows: list[dict[str, Any]] = []
    unknown: set[str] = set()
    for clip_id, subset, seg in segments:
        kept = []
        for m in seg.mids:
            if m in onto and onto[m].blacklist:
                report.dropped_labels[m] = report.dropped_labels.get(m, 0) + 1
                continue
            if names and m not in names:
                unknown.add(m)
            kept.append(m)
        values = _window_values(seg.ytid, seg.start, seg.end, seg.start_s, seg.end_s)
        audio, video = media_index.find(_stems(templates, values))
        if audio is None:
            report.missing_media.append(clip_id)
            continue
        meta = {"ytid": seg.ytid, "subset": subset, "segment_start_s": seg.start_s,
                "segment_end_s": seg.end_s, "label_names": [names.get(m, m) for m in kept],
                "ancestors": sorted({a for m in kept for a in anc.get(m, ())}),
                "abstract": [m for m in kept if m in onto and onto[m].abstract]}
        rows.append(make_row(clip_id, audio, start_s=seg.start_s if full_videos else None,
                             end_s=seg.end_s if full_videos else None, labels=kept,
                             split="test" if "eval" in subset else "train",
                             video_source=video if video != audio else None, meta=meta))
    if unknown:
        report.warnings.append(f"{len(unknown)} label MIDs not in the class index: "
                               f"{sorted(unknown)[:5]}")
    if media_index.duplicates:
        report.warnings.append(f"{media_index.duplicates} media names appear in several folders; "
                               "the first (sorted) was used")
    report.count_rows(rows)
    return rows, report


def ingest_vggsound(src: str, media: str | None = None, *,
                    templates: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], IngestReport]:
    """``vggsound.csv`` under ``src`` (or ``src`` itself a .csv); media by template, cut clips."""
    report = IngestReport("vggsound", src)
    csv_uri = src if src.endswith(".csv") else storage.join(src, "vggsound.csv")
    root = media or (src.rsplit("/", 1)[0] if src.endswith(".csv") else src)
    templates = tuple(templates or VGGSOUND_TEMPLATES)
    entries: list[tuple[str, str, float, str, str]] = []
    seen: set[str] = set()
    for lineno, f in csv_rows(csv_uri):
        if len(f) != 4:
            raise MetadataError(csv_uri, lineno, f"expected 4 fields (youtube_id,start_seconds,"
                                f"label,split), got {len(f)}")
        ytid, start, label, split = (x.strip() for x in f)
        if lineno == 1 and not start.replace(".", "", 1).isdigit():
            raise MetadataError(csv_uri, 1, "vggsound.csv has no header line; got "
                                f"{f} (remove it)")
        s = parse_float(csv_uri, lineno, "start_seconds", start)
        if not _YTID.match(ytid):
            raise MetadataError(csv_uri, lineno, f"bad YouTube id {ytid!r}")
        if split not in ("train", "test"):
            raise MetadataError(csv_uri, lineno, f"split {split!r} is not train/test")
        if not label:
            raise MetadataError(csv_uri, lineno, "empty label")
        clip_id = f"{ytid}_{int(s):06d}"
        if clip_id in seen:
            raise MetadataError(csv_uri, lineno, f"clip {clip_id} repeated")
        seen.add(clip_id)
        entries.append((clip_id, ytid, s, label, split))
    media_index = MediaIndex.build(root)      # listed once, after the CSV is validated
    rows: list[dict[str, Any]] = []
    for clip_id, ytid, s, label, split in entries:
        values = _window_values(ytid, f"{s:.3f}", f"{s + 10:.3f}", s, s + 10.0)
        audio, video = media_index.find(_stems(templates, values))
        if audio is None:
            report.missing_media.append(clip_id)
            continue
        rows.append(make_row(clip_id, audio, labels=[label], split=split,
                             video_source=video if video != audio else None,
                             meta={"ytid": ytid, "segment_start_s": s}))
    report.count_rows(rows)
    return rows, report
