"""Shard records: WebDataset tar files of decoded clips (DESIGN.md "Shard record").

A shard is a plain POSIX tar whose members are grouped by record key, in order::

    {key}.flac      16 kHz mono audio, FLAC, PCM_16 (soundfile)
    {key}.json      the manifest row (meta as an object) + decode facts:
                    sample_rate, orig_sample_rate, duration_s, num_samples,
                    frame_times [K] (seconds from the clip start), frames [K member names]
    {key}.NN.jpg    optional RGB video frames, NN = 00, 01, ... in frame_times order

Sensor spectra (a record is one sensor's continuous runs of one UTC day, not audio)::

    {key}.levels.npy  float16 [T, 29] third-octave levels in dB (0.03-0.06 dB resolution at
                      32-128 dB: finer than the 0.1 dB sensors report), in time order
    {key}.times.npy   float64 [T] epoch seconds of each frame (gaps between runs included)
    {key}.json        kind "spectra", sensor, t0, period_s, n_frames, duration_s, bands_hz,
                      runs [{t0, frames, lines}], the group row's split and source

This is the layout practitioners use for AudioSet (16 kHz FLAC + JSON in WebDataset tars,
ANCHORS.md section 4), so the shards also read with the ``webdataset`` package. The key is the
clip id when it is made of ``[A-Za-z0-9_-]`` only; otherwise a sanitised id plus a short hash
(WebDataset cuts keys at the first dot of a name); the JSON always holds the true ``clip_id``.

Stable API, used by the sharding job, the offline corpora and the training pipeline:
:func:`encode_record`, :func:`write_shard`, :func:`iter_shard`, :func:`shard_name`,
:func:`list_shards`; the training pipeline decodes record by record with :func:`decode_record`.
Pure Python (tarfile), no Ray.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping, Sequence
from zlib import error as zlib_error

import numpy as np
import soundfile as sf
from PIL import Image

from tympan.datasets import storage
from tympan.datasets.clip import Clip

SAMPLE_RATE = 16000
JPEG_QUALITY = 90
SHARD_RE = re.compile(r"^shard-(\d{6})\.tar$")
_KEY_OK = re.compile(r"^[A-Za-z0-9_-]+$")
Record = list[tuple[str, bytes]]


class ShardError(ValueError):
    """A shard (or a record in it) breaks the format; the message names the shard and member."""


def shard_name(index: int) -> str:
    """``shard_name(123) -> "shard-000123.tar"``."""
    if not 0 <= index < 1_000_000:
        raise ValueError(f"shard index {index} out of range [0, 999999]")
    return f"shard-{index:06d}.tar"


def record_key(clip_id: str) -> str:
    """The tar key of a clip: the id itself when safe, else a sanitised id + 8 hex of its hash."""
    if _KEY_OK.match(clip_id):
        return clip_id
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", clip_id).strip("_")[:80]
    return f"{safe}-{hashlib.sha1(clip_id.encode()).hexdigest()[:8]}"


def encode_flac(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    buf = io.BytesIO()
    x = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)   # PCM_16 would wrap otherwise
    sf.write(buf, x, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def encode_record(row: Mapping[str, Any], audio: np.ndarray, frames: np.ndarray | None = None,
                  frame_times: Sequence[float] | None = None,
                  facts: Mapping[str, Any] | None = None) -> Record:
    """One clip -> its tar members ``[(name, bytes), ...]``.

    ``row``: a manifest row (``meta`` as a JSON string or a dict); ``audio``: float32 [n] at
    16 kHz mono; ``frames``: uint8 [K, H, W, 3] with ``frame_times`` [K] (seconds from the
    clip start); ``facts``: decode facts to keep (e.g. ``orig_sample_rate``).
    """
    audio = np.asarray(audio)
    if audio.ndim != 1 or len(audio) == 0:
        raise ShardError(f"clip {row.get('clip_id')!r}: audio must be a non-empty 1-D array, "
                         f"got shape {audio.shape}")
    key = record_key(str(row["clip_id"]))
    meta = row.get("meta") or {}
    doc: dict[str, Any] = {k: row.get(k) for k in ("clip_id", "source", "start_s", "end_s",
                                                   "split", "video_source")}
    doc["labels"] = list(row.get("labels") or [])
    doc["meta"] = json.loads(meta) if isinstance(meta, str) else dict(meta)
    doc.update(dict(facts or {}))
    doc.update(sample_rate=SAMPLE_RATE, num_samples=int(len(audio)),
               duration_s=len(audio) / SAMPLE_RATE)
    members: Record = [(f"{key}.flac", encode_flac(audio))]
    names: list[str] = []
    if frames is not None and len(frames):
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ShardError(f"clip {row['clip_id']!r}: frames must be uint8 [K,H,W,3], "
                             f"got {frames.dtype} {frames.shape}")
        if frame_times is None or len(frame_times) != len(frames):
            raise ShardError(f"clip {row['clip_id']!r}: {len(frames)} frames need as many times")
        width = max(2, len(str(len(frames) - 1)))
        for i, frame in enumerate(frames):
            buf = io.BytesIO()
            Image.fromarray(frame, "RGB").save(buf, "JPEG", quality=JPEG_QUALITY)
            names.append(f"{key}.{i:0{width}d}.jpg")
            members.append((names[-1], buf.getvalue()))
    doc["frame_times"] = [float(t) for t in frame_times] if names else []
    doc["frames"] = names
    members.insert(1, (f"{key}.json", json.dumps(doc, sort_keys=True).encode()))
    return members


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def encode_spectra_record(row: Mapping[str, Any], times: np.ndarray, levels: np.ndarray,
                          facts: Mapping[str, Any] | None = None) -> Record:
    """One sensor record -> tar members: ``times`` float64 [T] epoch s, ``levels`` [T, F] dB
    (stored float16). ``row`` is the group's manifest-like row (meta: sensor, period_s, ...)."""
    times = np.asarray(times, dtype=np.float64)
    levels = np.asarray(levels)
    if levels.ndim != 2 or len(levels) == 0 or len(times) != len(levels):
        raise ShardError(f"record {row.get('clip_id')!r}: levels must be [T, F] with T = "
                         f"len(times) > 0, got {levels.shape} and {times.shape}")
    key = record_key(str(row["clip_id"]))
    meta = row.get("meta") or {}
    meta = json.loads(meta) if isinstance(meta, str) else dict(meta)
    doc: dict[str, Any] = {k: row.get(k) for k in ("clip_id", "source", "split")}
    doc["labels"] = list(row.get("labels") or [])
    doc["meta"] = meta
    doc.update(dict(facts or {}))
    period = float(meta["period_s"])
    doc.update(kind="spectra", n_frames=int(len(times)), t0=float(times[0]), period_s=period,
               n_bands=int(levels.shape[1]), duration_s=len(times) * period)
    return [(f"{key}.json", json.dumps(doc, sort_keys=True).encode()),
            (f"{key}.levels.npy", _npy(levels.astype(np.float16))),
            (f"{key}.times.npy", _npy(times))]


def _decode_spectra(key: str, members: dict[str, bytes], doc: dict, where: str) -> Clip:
    clip_id = str(doc["clip_id"])
    if f"{key}.times.npy" not in members:
        raise RecordError(where, clip_id, "incomplete_record", f"no member {key}.times.npy")
    try:
        levels = np.load(io.BytesIO(members[f"{key}.levels.npy"]), allow_pickle=False)
        times = np.load(io.BytesIO(members[f"{key}.times.npy"]), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise RecordError(where, clip_id, "bad_array", str(e)) from None
    want = int(doc.get("n_frames", -1))
    if levels.ndim != 2 or len(levels) != want or times.shape != (want,):
        raise RecordError(where, clip_id, "truncated", f"levels {levels.shape}, times "
                          f"{times.shape}, the JSON promises {want} frames")
    meta = dict(doc.get("meta") or {})
    meta["record"] = {k: v for k, v in doc.items() if k not in ("meta", "labels", "clip_id")}
    return Clip(clip_id=clip_id, audio=np.zeros(0, np.float32), labels=list(doc.get("labels") or []),
                meta=meta, features=levels.astype(np.float32), feature_times=times)


def _write_tar(f: BinaryIO, records: Iterable[Record]) -> int:
    n = 0
    with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for record in records:
            for name, data in record:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0   # reproducible bytes
                tar.addfile(info, io.BytesIO(data))
            n += 1
    return n


def write_shard(uri: str, records: Iterable[Record]) -> int:
    """Write records (from :func:`encode_record`) as one tar at ``uri``; returns their count.

    Atomic: locally a temporary sibling renamed into place when complete (removed if writing
    fails); on S3 one PUT of the final key. Readers never see a partial shard.
    """
    if not storage.is_local(uri):
        buf = io.BytesIO()
        n = _write_tar(buf, records)
        storage.write_bytes_atomic(uri, buf.getvalue())
        return n
    path = Path(storage.local_path(uri))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            n = _write_tar(f, records)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def _decode(key: str, members: dict[str, bytes], where: str) -> Clip:
    if f"{key}.levels.npy" in members and f"{key}.json" in members:
        return _decode_spectra(key, members, json.loads(members[f"{key}.json"]), where)
    if f"{key}.json" not in members or f"{key}.flac" not in members:
        raise ShardError(f"{where}: record {key!r} lacks its .json or .flac member")
    doc = json.loads(members[f"{key}.json"])
    audio, sr = sf.read(io.BytesIO(members[f"{key}.flac"]), dtype="float32", always_2d=False)
    frames = times = None
    if doc.get("frames"):
        frames = np.stack([np.asarray(Image.open(io.BytesIO(members[n])).convert("RGB"))
                           for n in doc["frames"]])
        times = np.asarray(doc["frame_times"], dtype=np.float64)
    meta = dict(doc.get("meta") or {})
    meta["record"] = {k: v for k, v in doc.items() if k not in ("meta", "labels", "clip_id")}
    return Clip(clip_id=doc["clip_id"], audio=audio, sample_rate=int(sr),
                labels=list(doc.get("labels") or []), frames=frames, frame_times=times, meta=meta)


class ShardTruncated(ShardError):
    """The tar stream of a shard broke off (cut file, unreadable member). ``key`` is the record
    being read when it broke (None if it broke between records) and ``members`` what of it was
    read; every record before it was already yielded complete."""

    def __init__(self, where: str, key: str | None, members: dict[str, bytes], detail: str):
        self.where, self.key, self.members, self.detail = where, key, members, detail
        super().__init__(f"{where}: tar stream broken at record {key!r}: {detail}")

    def __reduce__(self):
        return type(self), (self.where, self.key, self.members, self.detail)


class RecordError(ShardError):
    """One record cannot become a clip; ``reason`` is a short tag (a DecodeError reason, or
    incomplete_record / bad_json / missing_frames / bad_frame) and ``clip_id`` names it."""

    def __init__(self, where: str, clip_id: str, reason: str, detail: str = ""):
        self.where, self.clip_id, self.reason, self.detail = where, clip_id, reason, detail
        super().__init__(f"{where}: record {clip_id!r}: {reason}" + (f" ({detail})" if detail else ""))

    def __reduce__(self):
        return type(self), (self.where, self.clip_id, self.reason, self.detail)


def iter_records(f: BinaryIO, where: str = "shard") -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {member name: bytes})`` per record, streaming (no seeking).

    A tar stream that breaks off raises :class:`ShardTruncated` naming the record it broke in."""
    key: str | None = None
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=f, mode="r|*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                base = info.name.rsplit("/", 1)[-1]
                k = base.split(".", 1)[0]
                if k != key and key is not None:
                    yield key, members
                    members = {}
                key = k
                data = tar.extractfile(info)
                members[base] = data.read() if data else b""
    except (tarfile.TarError, EOFError, OSError, zlib_error) as e:
        raise ShardTruncated(where, key, members, f"{type(e).__name__}: {e}") from None
    if key is not None:
        yield key, members


def decode_record(key: str, members: dict[str, bytes], where: str = "shard", *,
                  frames: bool = True) -> Clip:
    """One record -> :class:`Clip`, or :class:`RecordError` naming it and why.

    Checks what :func:`iter_shard` takes on trust: both members present, valid JSON, FLAC that
    decodes to exactly the ``num_samples`` the JSON promises (a cut member is "truncated"), a
    non-empty clip, and (``frames=True``) every listed frame present and decodable. A sensor
    spectra record becomes a Clip with empty ``audio`` and ``features`` / ``feature_times``.
    ``frames=False`` skips the JPEGs (audio-only consumers)."""
    from tympan.datasets.audio import DecodeError, decode_audio

    clip_id = key
    if f"{key}.levels.npy" in members and f"{key}.json" in members:    # sensor spectra
        try:
            doc = json.loads(members[f"{key}.json"])
            str(doc["clip_id"])
        except (ValueError, KeyError, TypeError) as e:
            raise RecordError(where, clip_id, "bad_json", str(e)) from None
        return _decode_spectra(key, members, doc, where)
    if f"{key}.json" not in members or f"{key}.flac" not in members:
        raise RecordError(where, clip_id, "incomplete_record",
                          f"members {sorted(members)}; a record needs {key}.json and {key}.flac")
    try:
        doc = json.loads(members[f"{key}.json"])
        clip_id = str(doc["clip_id"])
    except (ValueError, KeyError, TypeError) as e:
        raise RecordError(where, clip_id, "bad_json", str(e)) from None
    try:
        audio = decode_audio(members[f"{key}.flac"], ext=".flac")
    except DecodeError as e:
        raise RecordError(where, clip_id, e.reason, e.detail) from None
    want = doc.get("num_samples")
    if want is not None and len(audio) != int(want):
        raise RecordError(where, clip_id, "truncated", f"{len(audio)} of {want} samples")
    clip_frames = times = None
    if frames and doc.get("frames"):
        missing = [n for n in doc["frames"] if n not in members]
        if missing:
            raise RecordError(where, clip_id, "missing_frames", f"no member {missing[0]}")
        try:
            clip_frames = np.stack([np.asarray(Image.open(io.BytesIO(members[n])).convert("RGB"))
                                    for n in doc["frames"]])
        except (OSError, ValueError) as e:
            raise RecordError(where, clip_id, "bad_frame", str(e)) from None
        times = np.asarray(doc["frame_times"], dtype=np.float64)
    meta = dict(doc.get("meta") or {})
    meta["record"] = {k: v for k, v in doc.items() if k not in ("meta", "labels", "clip_id")}
    return Clip(clip_id=clip_id, audio=audio, sample_rate=SAMPLE_RATE,
                labels=list(doc.get("labels") or []), frames=clip_frames, frame_times=times,
                meta=meta)


def iter_shard(source: str | os.PathLike | BinaryIO) -> Iterator[Clip]:
    """Decode a shard (path, URI or binary file object) back to :class:`Clip` objects.

    ``clip.audio`` float32 [n] at 16 kHz; ``clip.frames`` uint8 [K, H, W, 3] and
    ``clip.frame_times`` [K] or None; ``clip.meta`` = the row's meta plus ``meta["record"]``
    (source, split, start_s, end_s, orig_sample_rate, duration_s, ...).
    """
    if isinstance(source, (str, os.PathLike)):
        where = os.fspath(source)
        with storage.open_input(where) as f:
            for key, members in iter_records(f, where):
                yield _decode(key, members, where)
    else:
        where = str(getattr(source, "name", "<shard>"))
        for key, members in iter_records(source, where):
            yield _decode(key, members, where)


def read_docs(source: str) -> Iterator[dict[str, Any]]:
    """Only the JSON documents of a shard (no audio decoding): for counting and inspection."""
    with storage.open_input(source) as f:
        for _, members in iter_records(f, source):
            for name, data in members.items():
                if name.endswith(".json"):
                    yield json.loads(data)


def list_shards(uri: str, *, missing_ok: bool = False) -> list[str]:
    """Full URIs of the completed shards ``shard-NNNNNN.tar`` directly under ``uri``, sorted."""
    try:
        files = storage.list_files(uri, suffix=".tar")
    except storage.ObjectNotFound:
        if missing_ok:
            return []
        raise
    base = storage.local_path(uri) if storage.is_local(uri) else str(uri).rstrip("/")
    out = []
    for f in files:
        rel = f[len(base):].lstrip("/") if f.startswith(base) else f.rsplit("/", 1)[-1]
        if "/" not in rel and SHARD_RE.match(rel):
            out.append(f)
    return sorted(out)
