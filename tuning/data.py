"""What a study trial trains on and is scored on: the offline corpus, its fixed nested subsets,
the probe tasks, and the trial's data feed.

* **Pretraining pools.** L3 (and SoundNet) pretrain on the offline corpus's audio-visual clips
  (``manifests/av.parquet``, train split only); every other method on the unlabelled
  pretraining shards (``pretrain/shards``). A *content* filter picks part of the AV pool, as
  Cramer et al. (ICASSP 2019) compared music-video with environmental-video pretraining:

  =======  ===================================================================
  all      every train AV clip
  music    instrument melodies (``kind == emoji_instrument``)
  env      real recordings of animals and objects (tuxpaint stamps whose sound
           is the thing itself, ``meta.audio.what == "sound"``), no speech
  =======  ===================================================================

* **Nested subsets.** One seeded permutation of the pool; the subset of size N is its first N
  clips, so a larger subset contains every smaller one and size is the only thing that changes
  between the points of a saturation curve (:func:`nested_subset`).
* **Probe tasks** (environment-type, as the paper's downstream sets): ``scenes``,
  ``bird_detection``, ``speech_music_noise`` (HEAR folders under ``tasks/``) and ``av_objects``:
  the AV corpus's own object classes, on the valid/test objects that pretraining never sees;
  for each object its even-numbered clips train the probe and the odd-numbered ones test it.
* **Feed.** :class:`SubsetFeed` hands the trainer a Ray Dataset of the method's batches over a
  subset (decoded once per trial, views re-sampled every epoch) and a fixed validation set.
  It stands in until the Ray Data pipeline (``tympan.distributed.pipeline``) can restrict a
  source to a list of clips; the trainer sees the same ``DataFeed`` interface either way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tympan.config import ConfigError
from tympan.distributed.train import DataFeed

AV_METHODS = ("l3", "soundnet")
CONTENTS = ("all", "env", "music")
PROBE_TASKS = ("scenes", "bird_detection", "speech_music_noise", "av_objects")
SAMPLE_RATE = 16000
DATA_CPUS = 0.5          # per view-sampling task: fits beside a trial's worker on 2 cores


# ---- the corpus ---------------------------------------------------------------------------------

def ensure_corpus(corpus: str | os.PathLike, scale: str = "small", log=print) -> Path:
    """A built offline corpus at ``corpus``; built at ``scale`` when it is missing (as the demo
    does; a rerun of the build skips finished parts)."""
    root = Path(corpus)
    if not (root / "manifests" / "av.parquet").is_file() or not (root / "tasks").is_dir():
        from tympan.datasets.offline.build import build_offline

        log(f"tune: no built offline corpus in {root}; building it (--scale {scale})")
        build_offline(root, scale=scale, seed=0)
    return root.resolve()


def _content(row: dict[str, Any]) -> str:
    meta = json.loads(row["meta"]) if isinstance(row["meta"], str) else row["meta"]
    if meta.get("kind") == "emoji_instrument":
        return "music"
    if meta.get("kind") == "tuxpaint" and meta.get("audio", {}).get("what") == "sound":
        return "env"
    return "speech"


def av_rows(root: Path, split: str = "train", content: str = "all") -> list[dict[str, Any]]:
    """AV manifest rows of one split (``"heldout"``: valid + test), filtered by content, in
    clip-id order."""
    from tympan.datasets.manifest import read_manifest

    if content not in CONTENTS:
        raise ConfigError("content", content, f"must be one of {list(CONTENTS)}")
    rows = read_manifest(root / "manifests" / "av.parquet")
    splits = ("valid", "test") if split == "heldout" else (split,)
    rows = [r for r in rows if r["split"] in splits and (content == "all" or _content(r) == content)]
    return sorted(rows, key=lambda r: r["clip_id"])


def shard_clip_ids(root: Path) -> list[str]:
    """Clip ids of the pretraining shards, sorted."""
    from tympan.datasets.shards import list_shards, read_docs

    ids = []
    for uri in list_shards(str(root / "pretrain" / "shards")):
        ids += [d["clip_id"] for d in read_docs(uri)]
    return sorted(ids)


def pool(root: Path, method: str, content: str = "all") -> list[str]:
    """The pretraining pool of ``method`` (clip ids). Content applies to the AV pool only."""
    if method in AV_METHODS:
        return [r["clip_id"] for r in av_rows(root, "train", content)]
    if content != "all":
        raise ConfigError("content", content, f"applies to the AV corpus (methods {AV_METHODS}); "
                          f"{method} pretrains on the mixed pretraining shards: use all")
    held = set(val_ids(root, method))
    return [i for i in shard_clip_ids(root) if i not in held]


def nested_subset(ids: Sequence[str], size: int, seed: int = 0, *, what: str = "pool") -> list[str]:
    """The first ``size`` clips of one seeded permutation of ``ids``: subsets of one pool are
    nested (the subset of N contains that of every M < N) and fixed across trials."""
    ids = sorted(ids)
    if size < 2 or size > len(ids):
        raise ConfigError("sizes", size, f"must be in [2, {len(ids)}]: the {what} has "
                          f"{len(ids)} clips")
    order = np.random.default_rng([seed, 7919]).permutation(len(ids))
    return [ids[i] for i in order[:size]]


def check_sizes(root: Path, method: str, contents: Sequence[str], sizes: Sequence[int]) -> None:
    """Every (content, size) pair fits its pool; refused before Ray starts."""
    for c in contents:
        n = len(pool(root, method, c))
        for s in sizes:
            nested_subset([str(i) for i in range(n)], s, what=f"{c!r} pool of {root}")


# ---- decoding -----------------------------------------------------------------------------------

def _decode_av(row: dict[str, Any], image_size: int, fps: float = 2.0):
    from tympan.datasets.audio import decode_audio, decode_video_frames
    from tympan.datasets.clip import Clip

    audio = decode_audio(row["video_source"] or row["source"])
    dur = len(audio) / SAMPLE_RATE
    times = np.arange(0.5 / fps, dur, 1.0 / fps)
    frames = decode_video_frames(row["video_source"], times, size=(image_size, image_size))
    return Clip(row["clip_id"], audio, labels=list(row["labels"]), frames=frames,
                frame_times=times, meta={})


def load_clips(root: Path, method: str, ids: Sequence[str], image_size: int = 224) -> list:
    """Decoded :class:`Clip` objects of ``ids`` (AV rows for AV methods, shard records else)."""
    want = set(ids)
    if method in AV_METHODS:
        rows = {r["clip_id"]: r for r in av_rows(root, "train") + av_rows(root, "heldout")}
        return [_decode_av(rows[i], image_size) for i in ids]
    from tympan.datasets.shards import iter_shard, list_shards

    got = {}
    for uri in list_shards(str(root / "pretrain" / "shards")):
        for clip in iter_shard(uri):
            if clip.clip_id in want:
                got[clip.clip_id] = clip
    missing = want - set(got)
    if missing:
        raise ConfigError("clips", sorted(missing)[:3], f"not in {root}/pretrain/shards")
    return [got[i] for i in ids]


# ---- the feed -----------------------------------------------------------------------------------

def _views_dataset(clips_ref, method: str, method_cfg: dict, n_clips: int, examples: int,
                   group: int, seed: int):
    """A Ray Dataset of ``examples`` single examples (rows = the method's batch keys): epochs
    of a seeded shuffle of the clips, views sampled ``group`` clips at a time."""
    import ray

    order = []
    epoch = 0
    while len(order) < examples:
        perm = np.random.default_rng([seed, epoch, 31]).permutation(n_clips)
        # whole groups only: each sample_views call gets `group` distinct-enough clips
        order += [{"i": int(i), "g": epoch * 1_000_003 + k // group} for k, i in enumerate(perm)]
        epoch += 1

    def sample(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tympan.methods.base import config_from_dict
        from tympan.methods.registry import get_method

        cls = get_method(method)
        cfg = config_from_dict(cls.config_cls, method_cfg)
        clips = ray.get(clips_ref)
        rng = np.random.default_rng([seed, int(batch["g"][0]), 97])
        return cls.sample_views(cfg, [clips[int(i)] for i in batch["i"]], rng)

    return (ray.data.from_items(order[:max(examples, group)])
            .map_batches(sample, batch_size=group, batch_format="numpy", num_cpus=DATA_CPUS))


@dataclass
class SubsetFeed(DataFeed):
    """Training views over a fixed list of clips, validation views over held-out clips.

    ``train_clips`` / ``val_clips``: decoded clips; ``examples``: how many training examples
    the run consumes at most (steps x global batch); the stream covers that many and the trainer
    starts it over if it ends (a new epoch)."""

    method: str
    method_cfg: Any
    train_clips: list
    val_clips: list
    examples: int
    val_examples: int
    seed: int = 0
    group: int = 8

    def setup(self, experiment_uri: str) -> dict[str, Any]:
        import ray

        from tympan.config import to_dict

        cfg = to_dict(self.method_cfg)
        group = max(2, min(self.group, len(self.train_clips)))
        out = {"train": _views_dataset(ray.put(self.train_clips), self.method, cfg,
                                       len(self.train_clips), self.examples, group, self.seed)}
        if self.val_clips and self.val_examples > 0:
            vgroup = max(2, min(self.group, len(self.val_clips)))
            out["val"] = _views_dataset(ray.put(self.val_clips), self.method, cfg,
                                        len(self.val_clips), self.val_examples, vgroup, 10_000)
        return out


def val_ids(root: Path, method: str, n: int = 16) -> list[str]:
    """Held-out clips for the validation loss: AV valid/test clips, or the shard clips that no
    subset of size <= len(pool) - n uses (the last n of the fixed permutation)."""
    if method in AV_METHODS:
        return [r["clip_id"] for r in av_rows(root, "heldout")][:max(n, 2)]
    ids = shard_clip_ids(root)
    order = np.random.default_rng([0, 7919]).permutation(len(ids))
    return [ids[i] for i in order[-max(n, 2):]]


# ---- probe tasks --------------------------------------------------------------------------------

@dataclass
class ProbeTask:
    name: str
    waves: dict[str, list[np.ndarray]]     # split -> waveforms (16 kHz float32)
    labels: dict[str, list[str]]           # split -> one label per clip


def _balanced(items: list[tuple[str, str]], n: int | None) -> list[tuple[str, str]]:
    """At most ``n`` (file, label) items taken round-robin over labels (each in file order)."""
    if n is None or len(items) <= n:
        return items
    by: dict[str, list] = {}
    for it in sorted(items):
        by.setdefault(it[1], []).append(it)
    queues = [by[k] for k in sorted(by)]
    out = []
    for i in range(max(len(q) for q in queues)):
        out += [q[i] for q in queues if i < len(q)]
    return out[:n]


def load_probe_task(root: Path, name: str, max_per_split: int | None = None) -> ProbeTask:
    import soundfile as sf

    if name == "av_objects":
        from tympan.datasets.audio import decode_audio

        waves: dict[str, list] = {"train": [], "test": []}
        labels: dict[str, list] = {"train": [], "test": []}
        rows = av_rows(root, "heldout")
        for split, parity in (("train", 0), ("test", 1)):
            items = [(r["source"], r["labels"][0]) for r in rows
                     if int(r["clip_id"].rsplit("-", 1)[1]) % 2 == parity]
            for src, lab in _balanced(items, max_per_split):
                waves[split].append(decode_audio(src))
                labels[split].append(lab)
        return ProbeTask(name, waves, labels)
    d = root / "tasks" / name
    if not (d / "train.json").is_file():
        raise ConfigError("tasks", name, f"no HEAR task folder {d}; known: {list(PROBE_TASKS)}")
    waves, labels = {}, {}
    for split in ("train", "valid", "test"):
        p = d / f"{split}.json"
        if not p.is_file():
            continue
        items = [(f, labs[0]) for f, labs in json.loads(p.read_text()).items()]
        chosen = _balanced(items, max_per_split)
        waves[split] = [sf.read(d / "16000" / split / f, dtype="float32")[0] for f, _ in chosen]
        labels[split] = [lab for _, lab in chosen]
    return ProbeTask(name, waves, labels)
