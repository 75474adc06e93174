"""The objects of the audio-visual corpus: what each one looks like and how it sounds.

Emoji objects come with this module's tables (instrument -> General-MIDI programs, so the
melody is played by the instrument shown; animals and vehicles -> the English word espeak-ng
says). Photo objects are the PNG cut-outs of Debian's tuxpaint-stamps-default, each with
``<stamp>.ogg`` (a real recording of the thing) and/or ``<stamp>_desc[_<lang>].ogg`` (real
people saying its name), fetched with :func:`debian.ensure_packages`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tympan.datasets.offline.music import render_melody
from tympan.datasets.offline.pictures import emoji_picture, png_picture
from tympan.datasets.offline.speech import Utterance, list_variants, speak_many, trim_silence
from tympan.datasets.offline.mix import fit_length

SR = 16000
TUXPAINT = "tuxpaint-stamps-default"
# instrument -> (emoji, GM programs that sound like the picture)
INSTRUMENT_EMOJI: dict[str, tuple[str, tuple[int, ...]]] = {
    "guitar": ("\U0001F3B8", (24, 25, 26, 27)), "piano": ("\U0001F3B9", (0, 1, 2)),
    "trumpet": ("\U0001F3BA", (56, 59)), "saxophone": ("\U0001F3B7", (64, 65, 66, 67)),
    "violin": ("\U0001F3BB", (40, 110)), "banjo": ("\U0001FA95", (105,)),
    "accordion": ("\U0001FA97", (21, 23)), "flute": ("\U0001FA88", (72, 73)),
    "bell": ("\U0001F514", (14, 112)), "microphone": ("\U0001F3A4", (52, 53)),
}
# things whose name is spoken -> emoji
SPOKEN_EMOJI: dict[str, str] = {
    "dog": "\U0001F415", "cat": "\U0001F408", "cow": "\U0001F404", "pig": "\U0001F416",
    "horse": "\U0001F40E", "sheep": "\U0001F411", "rooster": "\U0001F413", "duck": "\U0001F986",
    "frog": "\U0001F438", "lion": "\U0001F981", "elephant": "\U0001F418", "monkey": "\U0001F412",
    "owl": "\U0001F989", "bee": "\U0001F41D", "mouse": "\U0001F401", "wolf": "\U0001F43A",
    "goat": "\U0001F410", "snake": "\U0001F40D", "car": "\U0001F697", "train": "\U0001F686",
    "airplane": "\u2708", "bicycle": "\U0001F6B2", "helicopter": "\U0001F681",
    "ship": "\U0001F6A2", "bus": "\U0001F68C", "rain": "\U0001F327",
}
# letters, digits, coins: near-duplicate pictures and sounds across stamps ("u with umlaut,
# outline" vs "filled"), which would leak an object's look and sound across the object split
EXCLUDED_STAMP_DIRS = frozenset({"symbols"})
ENGLISH = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")


@dataclass(frozen=True)
class AVObject:
    id: str                        # unique, file-name safe
    label: str                     # what the picture shows (the class)
    kind: str                      # emoji_instrument | emoji_spoken | tuxpaint
    source: str                    # emoji | tuxpaint
    picture: dict                  # {"emoji": char} or {"package", "version", "path"}
    programs: tuple[int, ...] = ()
    sound: str | None = None       # tuxpaint: absolute path of the real recording
    names: tuple[str, ...] = field(default_factory=tuple)   # tuxpaint: spoken-name recordings
    png: str | None = None


def _label(stem: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_") or "x"


def emoji_objects() -> list[AVObject]:
    out = [AVObject(f"inst_{k}", k, "emoji_instrument", "emoji", {"emoji": c}, programs=p)
           for k, (c, p) in INSTRUMENT_EMOJI.items()]
    out += [AVObject(f"say_{k}", k, "emoji_spoken", "emoji", {"emoji": c})
            for k, c in SPOKEN_EMOJI.items()]
    return out


def tuxpaint_objects(cache_dir, rng: np.random.Generator, limit: int) -> list[AVObject]:
    """Stamps with a PNG and a real sound or spoken name; ``limit`` > 0 picks that many at
    random, preferring stamps with a real sound."""
    from tympan.datasets.offline.debian import ensure_packages, package_version
    root = ensure_packages([TUXPAINT], cache_dir)[TUXPAINT]
    stamps = root / "usr" / "share" / "tuxpaint" / "stamps"
    version = package_version(root)
    found = []
    for png in sorted(stamps.rglob("*.png")):
        if png.relative_to(stamps).parts[0] in EXCLUDED_STAMP_DIRS:
            continue
        stem = png.with_suffix("")
        sound = stem.with_suffix(".ogg")
        names = tuple(str(p) for p in sorted(png.parent.glob(f"{glob_escape(stem.name)}_desc*.ogg")))
        if not sound.exists() and not names:
            continue
        rel = str(png.relative_to(root))
        found.append(AVObject(
            id="tux_" + _label(str(stem.relative_to(stamps))), label=_label(stem.name),
            kind="tuxpaint", source="tuxpaint",
            picture={"package": TUXPAINT, "version": version, "path": rel},
            sound=str(sound) if sound.exists() else None, names=names, png=str(png)))
    if limit and limit < len(found):
        with_sound = [o for o in found if o.sound]
        rest = [o for o in found if not o.sound]
        idx = rng.permutation(len(with_sound))[:limit]
        pick = [with_sound[i] for i in sorted(idx)]
        if len(pick) < limit:
            pick += [rest[i] for i in sorted(rng.permutation(len(rest))[:limit - len(pick)])]
        found = pick
    return found


def glob_escape(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)


def catalogue(sources: tuple[str, ...], cache_dir, rng: np.random.Generator,
              tuxpaint_limit: int) -> list[AVObject]:
    unknown = set(sources) - {"emoji", "tuxpaint"}
    if unknown:
        raise ValueError(f"AV sources {sorted(unknown)} unknown; choose from emoji, tuxpaint")
    objs = emoji_objects() if "emoji" in sources else []
    if "tuxpaint" in sources:
        objs += tuxpaint_objects(cache_dir, rng, tuxpaint_limit)
    return objs


def picture_of(o: AVObject) -> np.ndarray:
    """RGBA uint8 [h, w, 4]."""
    if o.source == "emoji":
        return emoji_picture(o.picture["emoji"])
    return png_picture(o.png)


def clip_audio(items: list[tuple[AVObject, int]], clip_s: float,
               cache_dir=None) -> tuple[list[tuple[np.ndarray, dict] | None], list[dict]]:
    """The sound of each (object, seed): float32 [clip_s * 16000] and its provenance.

    A recording that does not decode gives None and an entry in the returned skip list."""
    n = int(round(clip_s * SR))
    out: list[tuple[np.ndarray, dict] | None] = [None] * len(items)
    skipped: list[dict] = []
    speech: list[tuple[int, Utterance]] = []
    variants = list_variants()
    for i, (o, seed) in enumerate(items):
        rng = np.random.default_rng(seed)
        if o.kind == "emoji_instrument":
            prog = int(rng.choice(o.programs))
            x = render_melody(rng, prog, "fluidr3", clip_s)
            out[i] = (_level(rng, x), {"source": "fluidsynth", "soundfont": "fluidr3",
                                       "program": prog})
        elif o.kind == "emoji_spoken":
            speech.append((i, Utterance(o.label, str(rng.choice(ENGLISH)),
                                        str(rng.choice(variants)), int(rng.integers(130, 190)),
                                        int(rng.integers(25, 80)))))
        else:
            use_sound = o.sound is not None and (not o.names or rng.random() < 0.6)
            path = o.sound if use_sound else str(rng.choice(o.names))
            try:
                x = load_recording(path)
            except (RuntimeError, ValueError, OSError) as e:   # sf.LibsndfileError is a RuntimeError
                skipped.append({"object": o.id, "path": path, "reason": f"undecodable: {e}"})
                continue
            if x.size == 0 or float(np.max(np.abs(x))) < 1e-4:
                skipped.append({"object": o.id, "path": path, "reason": "silent"})
                continue
            x = fit_length(rng, trim_silence(x), n)
            rel = path.split(f"/{TUXPAINT}/", 1)[-1]
            out[i] = (_level(rng, x), {"source": "recording", "package": TUXPAINT,
                                       "path": rel, "what": "sound" if use_sound else "name"})
    if speech:
        audio = speak_many([u for _, u in speech])
        for (i, u), x in zip(speech, audio):
            rng = np.random.default_rng(items[i][1] + 1)
            x = fit_length(rng, trim_silence(x), n)
            out[i] = (_level(rng, x), {"source": "espeak-ng", "transcript": u.text,
                                       "voice": f"{u.voice}+{u.variant}", "speed": u.speed,
                                       "pitch": u.pitch})
    return out, skipped


def load_recording(path: str) -> np.ndarray:
    """A short recording as float32 mono [n] at 16 kHz (soundfile + polyphase resampling).

    Not ``audio.decode_audio``: its torchaudio resampler builds a [new/g, orig/g] kernel, which
    for tuxpaint's odd rates (22254 Hz: g = 2) takes ~3 GB; ``resample_poly`` needs a 1-D
    filter only."""
    import soundfile as sf
    from scipy.signal import resample_poly
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != SR:
        g = int(np.gcd(sr, SR))
        x = resample_poly(x, SR // g, sr // g).astype(np.float32)
    return x


def _level(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    m = float(np.max(np.abs(x))) + 1e-9
    return (x * (0.9 / m) * 10 ** (rng.uniform(-12, 0) / 20)).astype(np.float32)


def picture_from_meta(picture: dict, cache_dir=None) -> np.ndarray:
    """The RGBA picture named by a manifest row's ``meta["picture"]`` (to re-render a frame)."""
    if "emoji" in picture:
        return emoji_picture(picture["emoji"])
    from tympan.datasets.offline.debian import ensure_packages
    root = ensure_packages([picture["package"]], cache_dir)[picture["package"]]
    return png_picture(str(Path(root) / picture["path"]))
