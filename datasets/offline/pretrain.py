"""The offline pretraining corpus: unlabelled 10 s clips mixing speech, music, melodies and scenes.

AudioSet-style pretraining data (10 s clips of everything, Gemmeke et al. 2017) is mirrored by
mixing, per clip, an ambience bed, a speech stream (recorded voice actors or espeak-ng), music
(recorded tracks or a rendered General-MIDI melody), a synthetic room (exponential-decay impulse
response) and coloured noise. Tagliasacchi et al. 2020 (arXiv 1905.11796) pretrain on AudioSet
and evaluate on held-out downstream tasks; to keep that separation here, the mixer draws only
on **train-side** sources: :func:`collect_sources` reads every task manifest of a build and
excludes each recording used in a valid or test clip, every espeak-ng voice variant and every
(soundfont, program) of a valid/test split. The result is ``pretrain/sources.json``: the
contract for both forms of the corpus,

- shards (:func:`write_pretrain_shards`, WebDataset tars via :mod:`tympan.datasets.shards`), and
- on the fly (:meth:`PretrainMixer.generate_clip`): clip ``index`` of ``seed`` is a pure function
  of (sources.json, seed, index), so a pipeline can stream any number of distinct clips.

Clip meta lists what went in: ``sources`` (recording ids), ``voices``, ``programs``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import soundfile as sf

from tympan.datasets.clip import Clip
from tympan.datasets.manifest import read_manifest
from tympan.datasets.offline.mix import chain_to, crop_to, loop_to, normalise, rms

SR = 16000


@dataclass(frozen=True)
class PretrainConfig:
    """Mixing probabilities and levels of one clip (defaults: a busy AudioSet-like scene)."""
    clip_s: float = 10.0            # AudioSet clip length
    p_speech: float = 0.6
    p_music: float = 0.45
    p_bed: float = 0.85
    p_espeak: float = 0.5           # share of speech streams rendered by espeak-ng (vs recorded)
    p_melody: float = 0.5           # share of music rendered as a melody (vs a recorded track)
    p_reverb: float = 0.5
    p_noise: float = 0.7
    snr_db: tuple[float, float] = (5.0, 30.0)       # coloured noise below the mix
    fg_over_bed_db: tuple[float, float] = (0.0, 15.0)

    def __post_init__(self):
        from tympan.config import check
        check(self.clip_s > 0, "clip_s", self.clip_s, "must be positive")
        for k in ("p_speech", "p_music", "p_bed", "p_espeak", "p_melody", "p_reverb", "p_noise"):
            v = getattr(self, k)
            check(0.0 <= v <= 1.0, k, v, "is a probability in [0, 1]")


# ---- sources -------------------------------------------------------------------------------

def collect_sources(out_dir: str | os.PathLike, recorded: dict[str, list[Any]]) -> dict[str, Any]:
    """Train-side pools for the mixer, from a build's manifests and candidate recordings.

    ``recorded``: role ("speech", "music", "scene") -> :class:`debian.Recording` list.
    A recording is dropped when its ``source_id`` occurs in any valid/test clip's
    ``meta["sources"]``; espeak-ng voices and melody programs come from train rows only, minus
    any variant / program seen in a valid or test row.
    """
    held, held_variants, held_programs = set(), set(), set()
    espeak: dict[tuple[str, str], set[str]] = {}
    programs: set[int] = set()
    manifests = sorted(Path(out_dir, "manifests").glob("*.parquet"))
    for path in manifests:
        for row in read_manifest(path):
            meta = json.loads(row["meta"])
            if row["split"] != "train":     # valid, test and any extra test split
                held.update(meta.get("sources") or [])
                rec = meta.get("audio")          # the audio-visual manifest names its recording here
                if isinstance(rec, dict) and rec.get("package") and rec.get("path"):
                    held.add(f"{rec['package']}:{rec['path']}")
                if meta.get("variant"):
                    held_variants.add(meta["variant"])
                if meta.get("program") is not None:
                    held_programs.add((meta.get("soundfont"), int(meta["program"])))
            elif row["split"] == "train":
                if meta.get("source") == "espeak-ng" and meta.get("variant") and meta.get("transcript"):
                    # keyword rows name the voice "accent+variant"; espeak takes the two apart
                    voice = str(meta.get("voice", "en")).split("+")[0]
                    espeak.setdefault((voice, meta["variant"]), set()).add(meta["transcript"])
                if meta.get("soundfont") == "fluidr3" and meta.get("program") is not None:
                    programs.add(int(meta["program"]))
    pools = {role: [{"id": r.source_id, "flac": r.flac, "duration_s": r.duration_s,
                     "speaker": str(Path(r.path).parent)}
                    for r in recs if r.source_id not in held]
             for role, recs in recorded.items()}
    voices = [{"voice": v, "variant": var, "texts": sorted(t)} for (v, var), t in sorted(espeak.items())
              if var not in held_variants]
    return {"recordings": pools, "espeak": voices, "soundfont": "fluidr3",
            "programs": sorted(p for p in programs if ("fluidr3", p) not in held_programs),
            "held_out": {"sources": sorted(held), "variants": sorted(held_variants),
                         "programs": sorted([list(map(str, p)) for p in held_programs])},
            "manifests": [p.name for p in manifests]}


def write_sources(sources: dict[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(sources, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


# ---- mixer ---------------------------------------------------------------------------------

@dataclass
class PretrainMixer:
    """Deterministic clip generator over a sources.json (see module docstring)."""
    sources: dict[str, Any]
    cfg: PretrainConfig = field(default_factory=PretrainConfig)

    @classmethod
    def from_build(cls, out_dir: str | os.PathLike, cfg: PretrainConfig | None = None) -> "PretrainMixer":
        path = Path(out_dir) / "pretrain" / "sources.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no pretraining sources; run `tympan data offline --out {out_dir}`")
        return cls(json.loads(path.read_text()), cfg or PretrainConfig())

    def _read(self, rng: np.random.Generator, item: dict, n: int) -> np.ndarray:
        """A random n-sample window of a recording (reads only that window of the FLAC)."""
        total = int(item["duration_s"] * SR)
        start = int(rng.integers(0, max(1, total - n)))
        x, _ = sf.read(item["flac"], start=start, frames=min(n, total), dtype="float32", always_2d=False)
        return x

    def _speech(self, rng, n, meta) -> np.ndarray:
        pool, voices = self.sources["recordings"].get("speech", []), self.sources.get("espeak", [])
        if voices and (not pool or rng.random() < self.cfg.p_espeak):
            from tympan.datasets.offline.speech import speak
            v = voices[int(rng.integers(len(voices)))]
            texts = [v["texts"][int(rng.integers(len(v["texts"])))] for _ in range(2)]
            pieces = [speak(t, voice=v["voice"], variant=v["variant"], speed=int(rng.integers(130, 190)),
                            pitch=int(rng.integers(25, 80))) for t in texts]
            meta["voices"].append(f"{v['voice']}+{v['variant']}")
            x, _ = chain_to(rng, pieces, n, gap_s=(0.3, 1.5))
            return x
        first = pool[int(rng.integers(len(pool)))]
        same = [p for p in pool if p["speaker"] == first["speaker"]]
        picks = [same[int(rng.integers(len(same)))] for _ in range(12)]
        pieces = [sf.read(p["flac"], dtype="float32")[0] for p in picks]
        x, used = chain_to(rng, pieces, n, gap_s=(0.2, 1.2))
        meta["sources"].extend(sorted({picks[i]["id"] for i in used}))
        return x

    def _music(self, rng, n, meta) -> np.ndarray:
        pool, programs = self.sources["recordings"].get("music", []), self.sources.get("programs", [])
        if programs and (not pool or rng.random() < self.cfg.p_melody):
            from tympan.datasets.offline.music import render_melody
            p = int(programs[int(rng.integers(len(programs)))])
            meta["programs"].append(p)
            return render_melody(rng, p, self.sources["soundfont"], self.cfg.clip_s)[:n]
        item = pool[int(rng.integers(len(pool)))]
        meta["sources"].append(item["id"])
        return crop_to(rng, self._read(rng, item, n), n)

    def generate_clip(self, seed: int, index: int) -> Clip:
        """Clip ``index`` of the stream ``seed``: float32 [clip_s * 16000], same output every call."""
        from tympan.datasets.offline.mix import add_noise, reverberate
        cfg = self.cfg
        rng = np.random.default_rng([int(seed), int(index), 4242])
        n = int(cfg.clip_s * SR)
        meta: dict[str, Any] = {"sources": [], "voices": [], "programs": [], "parts": []}
        fg = np.zeros(n, dtype=np.float32)
        has_speech = bool(self.sources["recordings"].get("speech") or self.sources.get("espeak"))
        has_music = bool(self.sources["recordings"].get("music") or self.sources.get("programs"))
        want_speech = has_speech and rng.random() < cfg.p_speech
        want_music = has_music and rng.random() < cfg.p_music
        if not (want_speech or want_music):          # every clip has a foreground
            want_speech = has_speech and (not has_music or rng.random() < 0.5)
            want_music = not want_speech and has_music
        for part, wanted, make in (("speech", want_speech, self._speech), ("music", want_music, self._music)):
            if wanted:
                x = make(rng, n, meta)
                fg += x * (10 ** (rng.uniform(-6, 0) / 20) / (rms(x) + 1e-6))
                meta["parts"].append(part)
        beds = self.sources["recordings"].get("scene", [])
        if beds and rng.random() < cfg.p_bed:
            item = beds[int(rng.integers(len(beds)))]
            bed = loop_to(rng, self._read(rng, item, n), n)
            level = rms(fg) / (10 ** (rng.uniform(*cfg.fg_over_bed_db) / 20)) if rms(fg) > 0 else 0.1
            fg += bed * (level / (rms(bed) + 1e-6))
            meta["sources"].append(item["id"])
            meta["parts"].append("scene")
        if rng.random() < cfg.p_reverb:
            rt60 = float(rng.uniform(0.2, 1.2))
            fg = reverberate(rng, fg, rt60_s=rt60, wet=float(rng.uniform(0.1, 0.5)))
            meta["rt60_s"] = round(rt60, 3)
        if rng.random() < cfg.p_noise:
            colour = str(rng.choice(["white", "pink", "brown"]))
            fg = add_noise(rng, fg, snr_db=float(rng.uniform(*cfg.snr_db)), colour=colour)
            meta["noise"] = colour
        return Clip(clip_id=f"pretrain-s{seed}-{index:08d}", audio=normalise(rng, fg, (-28.0, -16.0)),
                    sample_rate=SR, labels=[], meta=meta)

    def iter_clips(self, seed: int, start: int = 0, stop: int | None = None) -> Iterable[Clip]:
        """Clips ``start, start+1, ...`` of stream ``seed`` (endless when ``stop`` is None)."""
        i = start
        while stop is None or i < stop:
            yield self.generate_clip(seed, i)
            i += 1


def write_pretrain_shards(mixer: PretrainMixer, out: str, *, seed: int, n_clips: int,
                          shard_size: int = 64) -> dict[str, Any]:
    """Write clips ``0..n_clips-1`` of stream ``seed`` as shards ``out/shard-NNNNNN.tar``.

    A shard already present is kept (reruns resume); returns counts and the shard list."""
    from tympan.datasets import storage
    from tympan.datasets.manifest import make_row
    from tympan.datasets.shards import encode_record, shard_name, write_shard
    shards = []
    for k, start in enumerate(range(0, n_clips, shard_size)):
        uri = f"{out.rstrip('/')}/{shard_name(k)}"
        shards.append(uri)
        if storage.is_local(uri) and Path(storage.local_path(uri)).exists():
            continue
        records = []
        for clip in mixer.iter_clips(seed, start, min(n_clips, start + shard_size)):
            row = make_row(clip.clip_id, f"tympan-offline:pretrain?seed={seed}&index={clip.clip_id[-8:]}",
                           split="train", meta=clip.meta)
            records.append(encode_record(row, clip.audio, facts={"generator": "offline_pretrain",
                                                                 "seed": seed}))
        write_shard(uri, records)
    return {"shards": shards, "clips": n_clips, "seed": seed, "config": asdict(mixer.cfg)}
