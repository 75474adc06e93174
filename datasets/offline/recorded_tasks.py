"""Downstream tasks built from real recordings in Debian packages (:mod:`debian`).

They mirror the recorded tasks of Tagliasacchi et al. 2020 (arXiv 1905.11796: LibriSpeech
speaker id, MUSAN speech/music/noise, TUT acoustic scenes, bird audio detection, VoxForge
language id) with the leakage factor of each held out (VoxForge language id is ``synth_tasks``'
``language_id``, whose extra test split ``test_human`` of real speech comes from here:
:func:`human_language_examples`):

| task               | classes | built from | splits disjoint by |
|--------------------|---------|------------|--------------------|
| speaker_id         | the hedgewars voice packs (15 actors) | each phrase as recorded | phrase |
| speech_music_noise | speech / music / noise, 5 s | voices, game music, ambience | source package |
| scenes             | ~10 ambience classes, 5 s | a bed looped, animal events mixed in | bed (one per class held out) |
| bird_detection     | bird / no_bird, 5 s | a bird take over a non-bird bed vs the bed alone | bird take, bed |

Every example's ``meta["sources"]`` lists the ``package:path`` ids of the recordings in it, so
the pretraining corpus can prove it never uses a test-side recording.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np

from tympan.datasets.offline.debian import Recording, recordings
from tympan.datasets.offline.mix import add_event, chain_to, crop_to, loop_to, normalise
from tympan.datasets.offline.tasks import TaskExample, TaskInfo, write_task
from tympan.datasets.offline.scales import RecordedScale

SR = 16000
log = logging.getLogger(__name__)

HW = "usr/share/games/hedgewars/Data"
MG = "usr/share/games/megaglest"
LC = "usr/share/games/lincity-ng/sounds"
TP = "usr/share/tuxpaint/stamps"
KT = "usr/share/ktuberling/sounds"
WL = "usr/share/games/widelands/data"

# Scene classes -> file-name patterns of their ambience beds (lincity-ng city sounds, megaglest
# tileset ambiences). One bed per class is held out for test.
SCENE_BEDS: dict[str, tuple[str, str]] = {
    "birds_day": ("megaglest-data", rf"{MG}/tilesets/[^/]+/sounds/(day|sunny_day|desertday)\.ogg"),
    "night": ("megaglest-data", rf"{MG}/tilesets/[^/]+/sounds/(night|nightime)\.ogg"),
    "rain": ("megaglest-data", rf"{MG}/tilesets/[^/]+/sounds/rain\.(ogg|wav)"),
    "traffic": ("lincity-ng-data", rf"{LC}/(TraficHigh|TraficLow|DirtTrack)\d\.wav"),
    "industry": ("lincity-ng-data", rf"{LC}/(IndustryHigh|IndustryLight|CoalMine|OreMine)\d\.wav"),
    "market": ("lincity-ng-data", rf"{LC}/Market\w+\.wav"),
    "harbour": ("lincity-ng-data", rf"{LC}/Harbor\d\.wav"),
    "residential": ("lincity-ng-data", rf"{LC}/(ResidentialHigh|ResidentialMed|ResidentialLow|ResidentialLowLow)\d\.wav"),
    "farm": ("lincity-ng-data", rf"{LC}/(Farm|OrganicFarm)\d\.wav"),
    "water": ("lincity-ng-data", rf"{LC}/(Water|ParklandLake)\d\.wav"),
    "crowd": ("lincity-ng-data", rf"{LC}/(SportsCroud|School)\d\.wav"),
}
NON_BIRD_BEDS = ("rain", "traffic", "industry", "market", "harbour", "residential", "water")
# Animal calls mixed into scenes as events (class-agnostic, so they cannot give the class away).
EVENT_GLOBS = {"megaglest-data": [f"{MG}/tilesets/*/sounds/wolf.wav", f"{MG}/tilesets/*/sounds/mudchute_cow_1.ogg"],
               "tuxpaint-stamps-default": [f"{TP}/animals/mammals/*.ogg"]}
BIRD_GLOB = f"{TP}/animals/birds/*.ogg"


def _hash01(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from strings (split assignment independent of order)."""
    h = hashlib.sha1("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64


def _split_groups(groups: list[str], seed: int, fractions=(0.6, 0.15, 0.25), tag: str = "") -> dict[str, str]:
    """group -> split, by a seeded stable shuffle; every split gets at least one group when >= 3."""
    order = sorted(set(groups), key=lambda g: _hash01(seed, tag, g))
    n = len(order)
    n_test = max(1, round(fractions[2] * n)) if n >= 2 else 0
    n_valid = max(1, round(fractions[1] * n)) if n >= 3 else 0
    out = {}
    for i, g in enumerate(order):
        out[g] = "test" if i < n_test else ("valid" if i < n_test + n_valid else "train")
    return out


def _meta(*recs: Recording, **extra) -> dict:
    return {"sources": sorted({r.source_id for r in recs}),
            "provenance": [r.provenance() for r in recs], **extra}


# ---- speaker id -------------------------------------------------------------------------

def speaker_examples(cache: Path | None, scale: RecordedScale, seed: int) -> list[TaskExample]:
    """15 hedgewars voice packs (label) x ~60 phrases; test phrases are never heard in train."""
    recs = recordings(cache, "hedgewars-data", [f"{HW}/Sounds/voices/*"])
    phrase = {r.path: re.sub(r"\d+$", "", r.stem).lower() for r in recs}   # Ow1..Ow4 = one phrase
    splits = _split_groups(list(phrase.values()), seed, tag="speaker")
    rng = np.random.default_rng([seed, 11])
    out = []
    for r in recs:
        voice = Path(r.path).parent.name
        x = normalise(rng, r.load()[: 3 * SR])            # a phrase, at most 3 s
        out.append(TaskExample(f"{voice}-{r.stem}", x, voice, splits[phrase[r.path]], phrase[r.path],
                               _meta(r, voice=voice, phrase=phrase[r.path])))
    return out


# ---- speech / music / noise --------------------------------------------------------------

def _smn_sources(cache: Path | None, scale: RecordedScale) -> dict[str, dict[str, list[Recording]]]:
    """split -> class -> recordings; each split draws on its own packages (MUSAN-style
    generalisation across sources)."""
    k, m = scale.speech_files, scale.music_files
    full = "supertux-data" in scale.packages
    src = {
        "train": {
            "speech": recordings(cache, "hedgewars-data", [f"{HW}/Sounds/voices/*"]),
            "music": recordings(cache, "hedgewars-data", [f"{HW}/Music/*"], limit=m),
            "noise": recordings(cache, "lincity-ng-data", [f"{LC}/*"], exclude=[f"{LC}/Click*", f"{LC}/Window*"]),
        },
        "valid": {
            "speech": recordings(cache, "megaglest-data", [f"{MG}/techs/*/units/*/sounds/*_ack*",
                                                           f"{MG}/techs/*/units/*/sounds/*_select*"], limit=k),
            "music": recordings(cache, "megaglest-data", [f"{MG}/data/core/menu/music/*"]),
            "noise": recordings(cache, "megaglest-data", [f"{MG}/tilesets/*/sounds/*"]),
        },
        "test": {
            "speech": recordings(cache, "ktuberling-data", [f"{KT}/*/*"], limit=4 * (k or 10 ** 6)),
            "music": (recordings(cache, "supertux-data", ["*/music/*"], limit=m) if full
                      else recordings(cache, "wesnoth-1.16-music", ["*"], limit=m)),
            "noise": recordings(cache, "tuxpaint-stamps-default", [f"{TP}/vehicles/*", f"{TP}/household/*",
                                                                   f"{TP}/town/*", f"{TP}/naturalforces/*"],
                                exclude=["*_desc*", "*_??.ogg", "*_??_??.ogg"], limit=k),
        },
    }
    if full:
        src["test"]["noise"] += recordings(cache, "widelands-data", [f"{WL}/sound/*"],
                                           exclude=[f"{WL}/sound/animals/*", "*/lobby*", "*/message*"])
    return src


def smn_examples(cache: Path | None, scale: RecordedScale, seed: int) -> list[TaskExample]:
    rng = np.random.default_rng([seed, 12])
    n = int(scale.clip_s * SR)
    out = []
    for split, classes in _smn_sources(cache, scale).items():
        for label, recs in classes.items():
            if not recs:
                raise RuntimeError(f"speech_music_noise: no {label} recordings for {split}")
            cache_audio = {}
            for i in range(scale.smn_clips[("train", "valid", "test").index(split)]):
                if label == "speech":        # one speaker's utterances chained (a voice pack / language)
                    r0 = recs[int(rng.integers(len(recs)))]
                    same = [r for r in recs if Path(r.path).parent == Path(r0.path).parent]
                    pieces = [cache_audio.setdefault(r.path, r.load()) for r in same[:40]]
                    x, used = chain_to(rng, pieces, n)
                    used_recs = [same[j] for j in used]
                else:
                    r0 = recs[int(rng.integers(len(recs)))]
                    a = cache_audio.setdefault(r0.path, r0.load())
                    x = crop_to(rng, a, n) if (label == "music" or a.size >= n) else loop_to(rng, a, n)
                    used_recs = [r0]
                pkg = r0.package
                out.append(TaskExample(f"{split}-{label}-{i:04d}", normalise(rng, x), label, split, pkg,
                                       _meta(*used_recs, package=pkg)))
    return out


# ---- scenes and bird detection ------------------------------------------------------------

def scene_beds(cache: Path | None) -> dict[str, list[Recording]]:
    """class -> its distinct ambience beds."""
    by_pkg: dict[str, list[Recording]] = {}
    out: dict[str, list[Recording]] = {}
    for cls, (pkg, pattern) in SCENE_BEDS.items():
        if pkg not in by_pkg:
            glob = [f"{MG}/tilesets/*/sounds/*"] if pkg == "megaglest-data" else [f"{LC}/*"]
            by_pkg[pkg] = recordings(cache, pkg, glob)
        beds = [r for r in by_pkg[pkg] if re.fullmatch(pattern, r.path) and r.duration_s >= 0.5]
        if len(beds) < 2:
            raise RuntimeError(f"scene class {cls!r}: {len(beds)} distinct beds in {pkg}, need >= 2")
        out[cls] = beds
    return out


def _bed_splits(beds: dict[str, list[Recording]], seed: int, tag: str) -> dict[str, str]:
    """source_id -> split: per class one bed for test, one for valid when >= 3, rest train."""
    out = {}
    for cls, rs in beds.items():
        order = sorted(rs, key=lambda r: _hash01(seed, tag, r.source_id))
        for i, r in enumerate(order):
            out[r.source_id] = "test" if i == 0 else ("valid" if i == 1 and len(rs) >= 3 else "train")
    return out


def _events(cache: Path | None) -> list[Recording]:
    return [r for pkg, globs in EVENT_GLOBS.items()
            for r in recordings(cache, pkg, globs, exclude=["*_desc*"]) if r.duration_s <= 6.0]


def scene_examples(cache: Path | None, scale: RecordedScale, seed: int) -> list[TaskExample]:
    rng = np.random.default_rng([seed, 13])
    beds, events = scene_beds(cache), _events(cache)
    splits = _bed_splits(beds, seed, "scenes")
    n = int(scale.clip_s * SR)
    out = []
    for cls, rs in beds.items():
        for r in rs:
            split = splits[r.source_id]
            a = r.load()
            for i in range(scale.scene_clips[("train", "valid", "test").index(split)]):
                x, used = loop_to(rng, a, n), [r]
                for _ in range(int(rng.integers(0, 3))):   # 0-2 animal events at -5..10 dB
                    ev = events[int(rng.integers(len(events)))]
                    x = add_event(rng, x, ev.load(), float(rng.uniform(-5, 10)))
                    used.append(ev)
                out.append(TaskExample(f"{cls}-{r.stem}-{r.sha1[:8]}-{i:03d}",
                                       normalise(rng, x), cls, split, r.source_id,
                                       _meta(*used, bed=r.source_id, scene=cls)))
    return out


def bird_examples(cache: Path | None, scale: RecordedScale, seed: int) -> list[TaskExample]:
    """Bird takes over non-bird beds (label bird) vs the beds alone with a non-bird animal call
    half of the time (label no_bird); bird takes and beds are both held out per split."""
    rng = np.random.default_rng([seed, 14])
    birds = [r for r in recordings(cache, "tuxpaint-stamps-default", [BIRD_GLOB], exclude=["*_desc*"])]
    if "widelands-data" in scale.packages:
        birds += recordings(cache, "widelands-data", [f"{WL}/sound/animals/bird*"])
    take = {r.source_id: (re.sub(r"_\d+$", "", r.stem) if r.package == "widelands-data" else r.stem) for r in birds}
    take_split = _split_groups(list(take.values()), seed, tag="birds")
    beds = scene_beds(cache)
    bed_split = _bed_splits({c: beds[c] for c in NON_BIRD_BEDS}, seed, "birds")
    bed_by_split: dict[str, list[Recording]] = {}
    for c in NON_BIRD_BEDS:
        for r in beds[c]:
            bed_by_split.setdefault(bed_split[r.source_id], []).append(r)
    calls = _events(cache)
    n = int(scale.clip_s * SR)
    out = []
    for b in birds:
        split = take_split[take[b.source_id]]
        for i in range(scale.bird_clips):
            bed = bed_by_split[split][int(rng.integers(len(bed_by_split[split])))]
            x = add_event(rng, loop_to(rng, bed.load(), n), b.load(), float(rng.uniform(3, 15)))
            out.append(TaskExample(f"bird-{b.package}-{b.stem}-{i:03d}", normalise(rng, x), "bird", split,
                                   f"take:{b.package}:{take[b.source_id]}", _meta(b, bed, bird=b.stem)))
    for split, bs in bed_by_split.items():
        n_neg = sum(1 for b in birds if take_split[take[b.source_id]] == split) * scale.bird_clips
        for i in range(n_neg):
            bed = bs[i % len(bs)]
            x, used = loop_to(rng, bed.load(), n), [bed]
            if rng.random() < 0.5:
                ev = calls[int(rng.integers(len(calls)))]
                x = add_event(rng, x, ev.load(), float(rng.uniform(0, 12)))
                used.append(ev)
            out.append(TaskExample(f"nobird-{split}-{i:04d}", normalise(rng, x), "no_bird", split,
                                   f"bed:{bed.source_id}", _meta(*used)))
    return out


# ---- language id: real human speech as an extra test split --------------------------------

def human_language_examples(cache: Path | None, languages: tuple[str, ...], scale: RecordedScale,
                            seed: int, split: str = "test_human") -> list[TaskExample]:
    """5 s of real speech per clip: ktuberling words of one language chained, or one tuxpaint
    spoken description (``*_desc_<lang>.ogg``; ``*_desc.ogg`` is English). group = package:language
    (one recording set per language and package: its speakers). ``split`` names the extra test
    split of ``language_id`` these examples form."""
    rng = np.random.default_rng([seed, 15])
    n = int(scale.clip_s * SR)
    out = []
    for lang in languages:
        kt = recordings(cache, "ktuberling-data", [f"{KT}/{lang}/*"], limit=scale.speech_files)
        pat = f"{TP}/*_desc.ogg" if lang == "en" else f"{TP}/*_desc_{lang}.ogg"
        tp = recordings(cache, "tuxpaint-stamps-default", [pat], limit=scale.lid_human_per_lang)
        for i in range(scale.lid_human_per_lang):
            use_tp = bool(tp) and (i % 2 == 1 or not kt)
            if use_tp:
                r = tp[i // 2 % len(tp)]
                x, used = crop_to(rng, r.load(), n), [r]
            elif kt:
                pieces = [r.load() for r in kt]
                x, idx = chain_to(rng, pieces, n, gap_s=(0.15, 0.4))
                used = [kt[j] for j in idx]
            else:
                raise RuntimeError(f"language_id {split}: no recordings of language {lang!r}")
            pkg = used[0].package
            out.append(TaskExample(f"human-{lang}-{pkg}-{i:03d}", normalise(rng, x), lang, split,
                                   f"human:{pkg}:{lang}", _meta(*used, language=lang, transcript=None)))
    return out


# ---- all ------------------------------------------------------------------------------

def build_recorded_tasks(out_dir: str | os.PathLike, scale: RecordedScale, seed: int = 0,
                         cache_dir: str | os.PathLike | None = None,
                         only: tuple[str, ...] | None = None) -> list[TaskInfo]:
    """Build the recorded-audio tasks under ``out_dir`` (``tasks/<name>`` + ``manifests/``)."""
    s, cache = scale, Path(cache_dir) if cache_dir else None
    specs = [
        ("speaker_id", lambda: speaker_examples(cache, s, seed), "phrase",
         "which of the hedgewars voice actors speaks a phrase; test phrases unseen in train"),
        ("speech_music_noise", lambda: smn_examples(cache, s, seed), "source Debian package",
         "MUSAN-like speech / music / noise, 5 s; train, valid and test from different packages"),
        ("scenes", lambda: scene_examples(cache, s, seed), "ambience bed (one per class held out)",
         f"{len(SCENE_BEDS)} acoustic scenes from game ambience beds with animal events, 5 s"),
        ("bird_detection", lambda: bird_examples(cache, s, seed), "bird take / bed",
         "bird call over a non-bird bed vs the bed alone, 5 s"),
    ]
    infos = []
    for name, make, factor, desc in specs:
        if only is not None and name not in only:
            continue
        infos.append(write_task(out_dir, name, make(), split_factor=factor, description=desc))
        log.info("task %s written in %.1f s", name, infos[-1].seconds)
    return infos
