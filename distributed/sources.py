"""Where the training stream's clips come from: data URIs, and how each source splits into
*units* of work (one shard, or one group of generated / decoded clips) that the pipeline
(:mod:`tympan.distributed.pipeline`) runs as one Ray Data read task each.

Data URIs (every command that reads data accepts them)::

    DIR | s3://bucket/prefix            a shard set (shard-NNNNNN.tar files directly under it)
    DIR_A=0.7,s3://b/x=0.3              several shard sets mixed with weights
    offline:DIR                         the offline corpus's live mixer (endless, no disk)
    offline-av:DIR                      the offline corpus's audio-visual mp4 clips (l3, soundnet)
    spectra:DIR[,DIR2=w...]             shards of sensor records (``tympan data shard`` of a
                                        spectra manifest), cut into slices of ``width`` frames
                                        that never straddle a discontinuity (gap policy of the
                                        PipelineConfig: reject / split / fill)

A unit id ``k`` is a pure function of (plan, seed): unit ``k`` of epoch ``e`` is the same
shard or the same clips on every run, which makes the stream deterministic and resumable from
a unit offset. No Ray here: units are planned on the driver and produced inside Ray tasks.
"""

from __future__ import annotations

import json
import math
import os
import urllib.parse
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Union

import numpy as np

from tympan.config import ConfigError
from tympan.datasets import storage
from tympan.datasets.clip import Clip
from tympan.datasets.shards import RecordError, ShardTruncated, decode_record, iter_records, list_shards


# ---- what a URI names ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardSet:
    uri: str                      # directory or s3:// prefix holding shard-NNNNNN.tar
    weight: float = 1.0


@dataclass(frozen=True)
class ShardSource:
    sets: tuple[ShardSet, ...]


@dataclass(frozen=True)
class MixerSource:
    root: str                     # a built offline corpus (pretrain/sources.json)


@dataclass(frozen=True)
class AVSource:
    root: str                     # a built offline corpus (manifests/av.parquet)


@dataclass(frozen=True)
class SpectraSource:
    shards: ShardSource           # shard sets of sensor records


DataSource = Union[ShardSource, MixerSource, AVSource, SpectraSource]


def parse_data_uri(uri: str) -> DataSource:
    """A data URI -> its source (no Ray, no listing). A malformed URI, a missing local
    directory or a missing offline build raises ConfigError naming it."""
    text = str(uri).strip()
    if not text:
        raise ConfigError("data", uri, "empty data URI")
    if text.startswith("spectra:"):
        rest = text[len("spectra:"):]
        if not rest or rest.startswith(("offline", "spectra:")):
            raise ConfigError("data", uri, "expected spectra:DIR (shards of sensor records)")
        return SpectraSource(parse_data_uri(rest))
    for prefix, cls, need in (("offline-av:", AVSource, ("manifests", "av.parquet")),
                              ("offline:", MixerSource, ("pretrain", "sources.json"))):
        if text.startswith(prefix):
            root = text[len(prefix):]
            if not root or "," in root:
                raise ConfigError("data", uri, f"expected {prefix}DIR with one built offline corpus")
            if not os.path.exists(os.path.join(root, *need)):
                raise ConfigError("data", uri, f"{os.path.join(root, *need)} not found; build the "
                                  f"corpus with `tympan data offline --out {root}`")
            return cls(os.path.abspath(root))
    sets = []
    for part in text.split(","):
        part = part.strip()
        where, weight = part, 1.0
        if "=" in part:
            where, w = part.rsplit("=", 1)
            try:
                weight = float(w)
            except ValueError:
                raise ConfigError("data", uri, f"weight {w!r} of {where!r} is not a number") from None
        scheme = urllib.parse.urlsplit(where).scheme.lower()
        if not where or (len(scheme) > 1 and scheme not in ("s3", "file")):
            raise ConfigError("data", uri, f"{part!r}: expected a shard directory or s3:// prefix "
                              "(http(s) cannot be listed; offline: and offline-av: cannot be mixed)")
        if not (math.isfinite(weight) and weight > 0):
            raise ConfigError("data", uri, f"weight of {where!r} must be a positive number, got {weight}")
        if storage.is_local(where) and not os.path.isdir(storage.local_path(where)):
            raise ConfigError("data", uri, f"{where!r} is not a directory")
        sets.append(ShardSet(where if not storage.is_local(where) else storage.local_path(where), weight))
    return ShardSource(tuple(sets))


# ---- units of work ------------------------------------------------------------------------------
class Bad(NamedTuple):
    clip_id: str
    reason: str
    where: str


class ShardPlan:
    """Units are shards. An epoch has ``units_per_epoch`` slots shared among the sets in
    proportion to their weights (at least one each); each set walks its own shards in a seeded
    order reshuffled whenever it has used them all, and the slot order is reshuffled per epoch.
    One set with weight 1 = every shard exactly once per epoch, in a per-epoch shuffled order."""

    clips_per_unit = None     # offsets count shards

    def __init__(self, source: ShardSource, seed: int):
        self.seed = seed
        self.shards: list[list[str]] = []
        for s in source.sets:
            found = list_shards(s.uri)
            if not found:
                raise ConfigError("data", s.uri, "no shard-NNNNNN.tar files there")
            self.shards.append(found)
        total_w = sum(s.weight for s in source.sets)
        n = sum(len(x) for x in self.shards)
        self.slots = [len(x) for x in self.shards] if len(self.shards) == 1 else \
            [max(1, round(s.weight / total_w * n)) for s in source.sets]
        self.units_per_epoch = sum(self.slots)
        self._cache: dict[tuple, np.ndarray] = {}

    def _perm(self, *key: int, n: int) -> np.ndarray:
        p = self._cache.get(key)
        if p is None:
            if len(self._cache) > 64:
                self._cache.clear()
            p = self._cache[key] = np.random.default_rng([self.seed, *key]).permutation(n)
        return p

    def describe(self, unit: int) -> tuple[int, int, str]:
        """Unit -> (epoch, set index, shard URI)."""
        epoch, slot = divmod(unit, self.units_per_epoch)
        owners = np.repeat(np.arange(len(self.slots)), self.slots)
        order = self._perm(1, epoch, n=self.units_per_epoch)
        s = int(owners[order[slot]])
        nth = int(np.sum(owners[order[:slot]] == s))          # this set's slots before it
        count = epoch * self.slots[s] + nth                  # the set's own running count
        cycle, idx = divmod(count, len(self.shards[s]))
        return epoch, s, self.shards[s][int(self._perm(2, s, cycle, n=len(self.shards[s]))[idx])]

    def where(self, unit: int) -> str:
        return self.describe(unit)[2]

    def clips(self, unit: int, frames: bool) -> Iterator[Clip | Bad]:
        _, _, uri = self.describe(unit)
        try:
            f = storage.open_input(uri)
        except storage.StorageError as e:
            yield Bad(uri, "unreadable_shard", f"{uri}: {e.reason}")
            return
        with f:
            try:
                for key, members in iter_records(f, uri):
                    try:
                        yield decode_record(key, members, uri, frames=frames)
                    except RecordError as e:
                        yield Bad(e.clip_id, e.reason, uri)
            except ShardTruncated as e:
                if e.key is not None:
                    yield Bad(_id_from_members(e.key, e.members), "truncated", uri)


def _id_from_members(key: str, members: dict[str, bytes]) -> str:
    try:
        return str(json.loads(members[f"{key}.json"])["clip_id"])
    except Exception:   # the JSON member is the part that broke off: the key is all we have
        return key


class MixerPlan:
    """Units are ``clips_per_unit`` consecutive clips of the live mixer's stream ``seed``;
    clip indices never repeat, so an "epoch" is just ``epoch_clips`` clips of an endless
    stream (the unit a Position's offset counts in)."""

    def __init__(self, source: MixerSource, seed: int, clips_per_unit: int, epoch_clips: int):
        self.root, self.seed, self.clips_per_unit = source.root, seed, clips_per_unit
        self.units_per_epoch = max(1, epoch_clips // clips_per_unit)
        self._mixer = None

    def where(self, unit: int) -> str:
        return f"offline:{self.root} clips {unit * self.clips_per_unit}+{self.clips_per_unit}"

    def clips(self, unit: int, frames: bool) -> Iterator[Clip | Bad]:
        if self._mixer is None:
            from tympan.datasets.offline.pretrain import PretrainMixer
            self._mixer = PretrainMixer.from_build(self.root)
        for index in range(unit * self.clips_per_unit, (unit + 1) * self.clips_per_unit):
            try:
                yield self._mixer.generate_clip(self.seed, index)
            except Exception as e:   # one failed mix must not end the stream: count it
                yield Bad(f"pretrain-s{self.seed}-{index:08d}", "generator_error",
                          f"{self.root}: {type(e).__name__}: {e}")

    def __getstate__(self):
        return {**self.__dict__, "_mixer": None}


class AVPlan:
    """Units are groups of ``clips_per_unit`` train-split rows of ``manifests/av.parquet``,
    reshuffled per epoch; each clip's audio and frames (``fps`` per second, at frame-interval
    centres) are decoded live from its mp4."""

    def __init__(self, source: AVSource, seed: int, clips_per_unit: int, fps: float):
        from tympan.datasets.manifest import read_manifest
        rows = [r for r in read_manifest(os.path.join(source.root, "manifests", "av.parquet"))
                if r["split"] == "train"]
        if not rows:
            raise ConfigError("data", f"offline-av:{source.root}", "no train-split AV clips")
        self.rows = [(r["clip_id"], r["source"], r.get("video_source") or r["source"]) for r in rows]
        self.seed, self.clips_per_unit, self.fps = seed, clips_per_unit, fps
        self.units_per_epoch = math.ceil(len(self.rows) / clips_per_unit)

    def where(self, unit: int) -> str:
        return f"offline-av:{self.root} unit {unit}"

    def clips(self, unit: int, frames: bool) -> Iterator[Clip | Bad]:
        from tympan.datasets.audio import DecodeError, decode_audio, decode_video_frames
        epoch, j = divmod(unit, self.units_per_epoch)
        order = np.random.default_rng([self.seed, 3, epoch]).permutation(len(self.rows))
        for i in order[j * self.clips_per_unit:(j + 1) * self.clips_per_unit]:
            clip_id, audio_src, video_src = self.rows[int(i)]
            try:
                audio = decode_audio(audio_src)
                clip = Clip(clip_id=clip_id, audio=audio)
                if frames:
                    n = max(1, int(clip.duration_s * self.fps))
                    times = (np.arange(n) + 0.5) / self.fps
                    clip.frames = decode_video_frames(video_src, times)
                    clip.frame_times = times
            except DecodeError as e:
                yield Bad(clip_id, e.reason, audio_src)
                continue
            yield clip


class Tally(NamedTuple):
    """Counts a unit reports besides its clips (the slicing's :class:`SliceStats`)."""
    counts: dict


class SpectraPlan:
    """Units are shards of sensor records (as :class:`ShardPlan`); each record is cut into
    slices of ``width`` frames by :func:`tympan.datasets.slices.slice_record` under ``policy``.
    A slice is a Clip with ``features`` [width, F] and ``feature_times`` [width]; after a
    unit's last slice comes one :class:`Tally` of its slicing counts."""

    clips_per_unit = None

    def __init__(self, source: SpectraSource, seed: int, width: int, policy: str, fill_max: int):
        self.shards = ShardPlan(source.shards, seed)
        self.units_per_epoch = self.shards.units_per_epoch
        self.width, self.policy, self.fill_max = width, policy, fill_max

    def where(self, unit: int) -> str:
        return self.shards.where(unit)

    def clips(self, unit: int, frames: bool) -> Iterator[Clip | Bad | Tally]:
        from tympan.datasets.slices import SliceStats, iter_slices

        total = SliceStats()
        for rec in self.shards.clips(unit, frames=False):
            if isinstance(rec, Bad):
                yield rec
                continue
            if rec.features is None:
                yield Bad(rec.clip_id, "not_spectra", f"{self.where(unit)}: an audio record "
                          "in a spectra: source")
                continue
            period = float(rec.meta["record"]["period_s"])
            slices, stats = iter_slices(rec.clip_id, rec.feature_times, rec.features, period,
                                        self.width, self.policy, self.fill_max)
            for sid, t, lv in slices:
                yield Clip(clip_id=sid, audio=np.zeros(0, np.float32), labels=list(rec.labels),
                           meta={"sensor": rec.meta.get("sensor"), "period_s": period},
                           features=np.ascontiguousarray(lv, dtype=np.float32), feature_times=t)
            total.add(stats)
        yield Tally(total.to_dict())


Plan = Union[ShardPlan, MixerPlan, AVPlan, SpectraPlan]
