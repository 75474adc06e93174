"""Synthesized downstream tasks: keyword spotting, language id, instrument family and pitch.

They mirror four of the eight downstream tasks of Tagliasacchi et al. 2020 (arXiv 1905.11796):
Speech Commands, VoxForge language id, NSynth instrument family and NSynth pitch, rendered with
espeak-ng (:mod:`speech`) and General-MIDI sample sets (:mod:`music`), and
written with :func:`tasks.write_task`, which refuses splits that share a group.

| task              | classes                | split disjoint by (group)                        |
|-------------------|------------------------|--------------------------------------------------|
| keywords          | the 35 Speech Commands words (Warden 2018, arXiv 1804.03209) | voice = accent+variant; valid/test variants never speak in train |
| language_id       | ``LANGUAGES`` (8)      | voice variant (+ extra split ``test_human``: real speakers) |
| instrument_family | 11 NSynth families     | sample set: train FluidR3, test TimGM6mb + FreePats; valid = FluidR3 programs unseen in train |
| pitch             | MIDI notes             | same as instrument_family                        |

Keyword clips are 1 s (as in Speech Commands) with room reverb and coloured noise; language id
clips are 5 s; notes are 4 s at full scale as in NSynth (2 s at small). Every example keeps
its transcript / program / note in ``meta``. Issue 4 also asks language id for a harder test split
of real human speech; :func:`offline.build_offline` passes it in as ``language_extra``
(``{"test_human": recorded_tasks.human_language_examples(...)}``) once the Debian
recordings are fetched.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import numpy as np

from tympan.datasets.offline.music import (FAMILIES, FAMILY_RANGE, GM_FAMILY, available_programs,
                                           render_note)
from tympan.datasets.offline.speech import OfflineToolError, Utterance, list_variants, speak_many, trim_silence
from tympan.datasets.offline.mix import add_noise, fit_length, reverberate
from tympan.datasets.offline.tasks import TaskExample, TaskInfo, write_task
from tympan.datasets.offline.scales import SynthScale

SR = 16000
log = logging.getLogger(__name__)
# Speech Commands v2's 35 words (Warden 2018).
KEYWORDS = ("backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward",
            "four", "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on",
            "one", "right", "seven", "sheila", "six", "stop", "three", "tree", "two", "up",
            "visual", "wow", "yes", "zero")
ENGLISH_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
                   "en-gb-x-gbcwmd", "en-us-nyc")
# Languages with both an espeak-ng voice and real human recordings in tuxpaint-stamps-default
# (_desc_<lang>.ogg) or ktuberling-data (sounds/<lang>/), so recorded test splits can match.
LANGUAGES = ("ca", "de", "el", "en", "es", "fr", "ro", "ru")
ESPEAK_LANGUAGE = {"ca": "ca", "de": "de", "el": "el", "en": "en-gb", "es": "es", "fr": "fr-fr",
                   "ro": "ro", "ru": "ru"}
# A few everyday words per language; sentences mix them with numbers, which espeak-ng reads out
# in the voice's language, so no text corpus is needed.
_WORDS = {
    "ca": "casa gos gat aigua pa llet dia nit sol lluna verd vermell blau gran petit bo avui "
          "demà sempre molt poc escola amic mare pare llibre taula finestra",
    "de": "Haus Hund Katze Wasser Brot Milch Tag Nacht Sonne Mond grün rot blau groß klein gut "
          "heute morgen immer sehr wenig Schule Freund Mutter Vater Buch Tisch Fenster",
    "el": "σπίτι σκύλος γάτα νερό ψωμί γάλα μέρα νύχτα ήλιος φεγγάρι πράσινο κόκκινο μπλε "
          "μεγάλος μικρός καλός σήμερα αύριο πάντα πολύ λίγο σχολείο φίλος μητέρα πατέρας βιβλίο",
    "en": "house dog cat water bread milk day night sun moon green red blue big small good "
          "today tomorrow always very little school friend mother father book table window",
    "es": "casa perro gato agua pan leche día noche sol luna verde rojo azul grande pequeño "
          "bueno hoy mañana siempre mucho poco escuela amigo madre padre libro mesa ventana",
    "fr": "maison chien chat eau pain lait jour nuit soleil lune vert rouge bleu grand petit bon "
          "aujourd'hui demain toujours beaucoup peu école ami mère père livre table fenêtre",
    "ro": "casă câine pisică apă pâine lapte zi noapte soare lună verde roșu albastru mare mic "
          "bun azi mâine mereu foarte puțin școală prieten mamă tată carte masă fereastră",
    "ru": "дом собака кошка вода хлеб молоко день ночь солнце луна зелёный красный синий "
          "большой маленький хороший сегодня завтра всегда очень мало школа друг мать отец книга",
}


def _split_variants(rng: np.random.Generator, n: tuple[int, int, int]) -> dict[str, list[str]]:
    """Disjoint train/valid/test lists of espeak-ng voice variants (a seeded shuffle)."""
    pool = list(list_variants())
    rng.shuffle(pool)
    if sum(n) > len(pool):
        raise ValueError(f"asked for {sum(n)} voice variants, espeak-ng has {len(pool)}")
    n_tr, n_va, n_te = n
    return {"test": pool[:n_te], "valid": pool[n_te:n_te + n_va],
            "train": pool[n_te + n_va:n_te + n_va + n_tr]}


def _augment(rng: np.random.Generator, x: np.ndarray) -> tuple[np.ndarray, dict]:
    """Room reverb (70%) then coloured noise (80%), as Speech Commands clips are noisy rooms."""
    info: dict = {}
    if rng.random() < 0.7:
        rt60 = float(rng.uniform(0.15, 0.8))
        x = reverberate(rng, x, rt60_s=rt60, wet=float(rng.uniform(0.2, 0.6)))
        info["rt60_s"] = round(rt60, 3)
    if rng.random() < 0.8:
        snr, colour = float(rng.uniform(5.0, 25.0)), str(rng.choice(["white", "pink", "brown"]))
        x = add_noise(rng, x, snr_db=snr, colour=colour)
        info.update(snr_db=round(snr, 2), noise=colour)
    return x, info


def keyword_examples(scale: SynthScale, seed: int) -> list[TaskExample]:
    rng = np.random.default_rng([seed, 1])
    variants = _split_variants(rng, scale.kw_voices)
    plan = []   # (split, accent, variant, word, take, speed, pitch)
    for split, vs in variants.items():
        takes = scale.kw_takes if split == "train" else 1
        for v in vs:
            accent = str(rng.choice(ENGLISH_ACCENTS))
            base_speed, base_pitch = int(rng.integers(130, 200)), int(rng.integers(25, 80))
            for w in KEYWORDS:
                for k in range(takes):
                    plan.append((split, accent, v, w, k,
                                 int(np.clip(base_speed + rng.integers(-15, 16), 80, 450)),
                                 int(np.clip(base_pitch + rng.integers(-8, 9), 0, 99))))
    audio = speak_many([Utterance(w, a, v, sp, pi) for (_, a, v, w, _, sp, pi) in plan])
    out = []
    for (split, accent, v, w, k, sp, pi), x in zip(plan, audio):
        x = fit_length(rng, trim_silence(x), SR)              # 1 s, word at a random offset
        said = np.flatnonzero(x)                              # the placed (trimmed) word
        span = [round(float(said[0]) / SR, 4), round(float(said[-1] + 1) / SR, 4)] if said.size else [0.0, 1.0]
        x, aug = _augment(rng, x)
        voice = f"{accent}+{v}"
        out.append(TaskExample(
            clip_id=f"{w}-{voice}-{k}", audio=x, label=w, split=split, group=voice,
            meta=dict(transcript=w, voice=voice, accent=accent, variant=v, speed=sp, pitch=pi,
                      source="espeak-ng", word_alignment=[[w, *span]], **aug)))
    return out


def language_examples(scale: SynthScale, seed: int, duration_s: float = 5.0) -> list[TaskExample]:
    """espeak-ng sentences in each of ``LANGUAGES``, 5 s each; group = voice variant."""
    return list(_language_examples(scale, seed, duration_s))


@functools.lru_cache(maxsize=1)     # memoised: a copy per call, the rendering once
def _language_examples(scale: SynthScale, seed: int, duration_s: float) -> tuple[TaskExample, ...]:
    rng = np.random.default_rng([seed, 2])
    variants = _split_variants(rng, scale.lid_voices)
    plan = []
    for split, vs in variants.items():
        takes = scale.lid_takes if split == "train" else 1
        for v in vs:
            for lang in LANGUAGES:
                words = _WORDS[lang].split()
                for k in range(takes):
                    parts = []
                    for _ in range(14):   # ~6-8 s of speech at 130-190 words/min: cropped to 5 s
                        parts.append(str(rng.integers(2, 10000)) if rng.random() < 0.3
                                     else str(rng.choice(words)))
                    plan.append((split, v, lang, k, " ".join(parts), int(rng.integers(130, 190)),
                                 int(rng.integers(25, 80))))
    audio = speak_many([Utterance(t, ESPEAK_LANGUAGE[lang], v, sp, pi)
                        for (_, v, lang, _, t, sp, pi) in plan])
    out = []
    for (split, v, lang, k, text, sp, pi), x in zip(plan, audio):
        x = trim_silence(x)
        n = int(duration_s * SR)
        x = np.pad(x, (0, max(0, n - x.size)))[:n] if x.size < n else x[:n]
        out.append(TaskExample(
            clip_id=f"{lang}-{v}-{k}", audio=x.astype(np.float32), label=lang, split=split,
            group=v, meta=dict(transcript=text, language=lang, voice=ESPEAK_LANGUAGE[lang],
                               variant=v, speed=sp, pitch=pi, source="espeak-ng")))
    return tuple(out)


def _program_split(rng: np.random.Generator) -> dict[str, dict[str, list[int]]]:
    """family -> programs per split: FluidR3 programs split into train and valid (one held-out
    program per family), TimGM6mb and FreePats programs for test (tagged by soundfont)."""
    fluid = [p for p in available_programs("fluidr3") if p in GM_FAMILY]
    res: dict[str, dict[str, list[int]]] = {}
    for fam in FAMILIES:
        ps = [p for p in fluid if GM_FAMILY[p] == fam]
        rng.shuffle(ps)
        res[fam] = {"valid": ps[:1], "train": ps[1:]}
    return res


def _note_examples(scale: SynthScale, seed: int, task: str) -> list[TaskExample]:
    """Notes for ``instrument_family`` (label = family) or ``pitch`` (label = MIDI note)."""
    rng = np.random.default_rng([seed, 3 if task == "instrument_family" else 4])
    progs = _program_split(rng)
    test_sets = {sf: [p for p in available_programs(sf) if p in GM_FAMILY]
                 for sf in ("timgm6mb", "freepats")}

    def sources(split: str, fam: str) -> list[tuple[str, int]]:
        if split == "test":
            return [(sf, p) for sf, ps in test_sets.items() for p in ps if GM_FAMILY[p] == fam]
        return [("fluidr3", p) for p in progs[fam][split]]

    plan = []   # (split, label, soundfont, program, pitch)
    if task == "instrument_family":
        for fam in FAMILIES:
            lo, hi = FAMILY_RANGE[fam]
            for split, n in zip(("train", "valid", "test"), scale.fam_per_class):
                src = sources(split, fam)
                for i in range(n):
                    sf, p = src[int(rng.integers(len(src)))] if split != "test" else src[i % len(src)]
                    plan.append((split, fam, sf, p, int(rng.integers(lo, hi + 1))))
    else:
        lo_p, hi_p = scale.pitch_range
        for note in range(lo_p, hi_p + 1):
            fams = [f for f in FAMILIES if FAMILY_RANGE[f][0] <= note <= FAMILY_RANGE[f][1]]
            for split, n in zip(("train", "valid", "test"), scale.pitch_per_class):
                src = [s for f in fams for s in sources(split, f)]
                for _ in range(n):
                    sf, p = src[int(rng.integers(len(src)))]
                    plan.append((split, str(note), sf, p, note))
    out, skipped = [], 0
    for i, (split, label, sf, p, pitch) in enumerate(plan):
        vel = int(rng.choice([25, 50, 75, 100, 127]))
        try:
            x = render_note(p, pitch, vel, scale.note_s, sf)
        except OfflineToolError:
            # a program whose samples do not reach this key renders silence: skip and count it
            skipped += 1
            continue
        gain = float(10 ** (rng.uniform(-12, 0) / 20))
        out.append(TaskExample(
            clip_id=f"{sf}-p{p:03d}-n{pitch:03d}-v{vel:03d}-{i:05d}", audio=x * gain, label=label,
            split=split, group=f"{sf}/p{p:03d}",
            meta=dict(soundfont=sf, program=p, pitch=pitch, velocity=vel, family=GM_FAMILY[p],
                      source="fluidsynth" if sf != "freepats" else "freepats-gus")))
    if skipped:
        log.warning("task %s: %d of %d notes rendered silence and were skipped", task, skipped,
                    len(plan))
    return out


SYNTH_TASKS = ("keywords", "language_id", "instrument_family", "pitch")


def build_synth_tasks(out_dir: str | Path, scale: SynthScale, seed: int = 0,
                      cache_dir: str | Path | None = None, *, only: tuple[str, ...] | None = None,
                      language_extra: dict[str, list[TaskExample]] | None = None) -> list[TaskInfo]:
    """Build the four synthesized tasks under ``out_dir`` (``tasks/<name>`` + ``manifests/``).

    ``only``: build just these of ``SYNTH_TASKS``. ``language_extra``: extra test splits of
    ``language_id`` (e.g. ``{"test_human": [...]}``, see :func:`tasks.write_task`).
    ``cache_dir`` is accepted for symmetry with the recorded-audio builders; synthesis needs
    none (the tools and soundfonts are Debian packages on disk). Deterministic for a seed."""
    unknown = set(only or ()) - set(SYNTH_TASKS)
    if unknown:
        raise ValueError(f"only={sorted(unknown)} unknown; synthesized tasks are {SYNTH_TASKS}")
    s = scale
    infos = []
    specs = [
        ("keywords", lambda: keyword_examples(s, seed), "voice (espeak accent+variant)",
         "Speech Commands' 35 words spoken by espeak-ng voices, 1 s, reverb + coloured noise"),
        ("language_id", lambda: language_examples(s, seed), "voice variant",
         f"espeak-ng speech in {len(LANGUAGES)} languages, 5 s"),
        ("instrument_family", lambda: _note_examples(s, seed, "instrument_family"),
         "soundfont (train FluidR3, test TimGM6mb+FreePats) / program",
         "NSynth's 11 instrument families from General-MIDI programs"),
        ("pitch", lambda: _note_examples(s, seed, "pitch"),
         "soundfont (train FluidR3, test TimGM6mb+FreePats) / program",
         "MIDI note of single rendered notes, NSynth-style"),
    ]
    for name, make, factor, desc in specs:
        if only is not None and name not in only:
            continue
        t0 = time.perf_counter()
        examples = make()
        render_s = time.perf_counter() - t0
        extra = language_extra if name == "language_id" else None
        if extra:   # the extra splits hold out their own speakers (see their examples' group)
            desc += "; extra test split" + "s" * (len(extra) > 1) + " " + ", ".join(sorted(extra))
            factor += "; " + ", ".join(sorted(extra)) + ": unseen speakers"
        info = write_task(out_dir, name, examples, split_factor=factor, description=desc,
                          extra_test_splits=extra)
        log.info("task %s: rendered in %.1f s, written (with baseline) in %.1f s", name, render_s,
                 info.seconds)
        infos.append(info)
    return infos
