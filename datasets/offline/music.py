"""Instrument notes and melodies rendered offline from General-MIDI sample sets.

Three independent sample sets ship in Debian main (ANCHORS.md section 8):

| name       | Debian package        | format                       | rendered by                  |
|------------|-----------------------|------------------------------|------------------------------|
| ``fluidr3``  | fluid-soundfont-gm    | SoundFont 2 (FluidR3_GM.sf2) | fluidsynth (pyfluidsynth)    |
| ``timgm6mb`` | timgm6mb-soundfont    | SoundFont 2 (TimGM6mb.sf2)   | fluidsynth (pyfluidsynth)    |
| ``freepats`` | freepats              | GUS patches (``*.pat``)      | ``gus`` (fluidsynth reads no GUS patches) |

FluidR3 is the training set; TimGM6mb and FreePats are held out for test splits. FreePats only
has 72 melodic programs (61 of them in an NSynth family): :func:`available_programs` says which.

fluidsynth runs in-process with no audio driver: each soundfont is loaded once per process
into a 16 kHz synthesizer (reverb and chorus off, so the dry sample is what is learned), and
notes are pulled with ``get_samples``.

General-MIDI program -> NSynth instrument family (Engel et al., "Neural Audio Synthesis of
Musical Notes with WaveNet Autoencoders", ICML 2017, arXiv 1704.01279: 11 families). Programs
are 0-based; GM groups of 8 map as a whole unless listed; unmapped programs (synth pads and
effects 88-103, timpani 47, orchestra hit 55, most ethnic/percussive 104-119, sound effects
120-127) belong to no NSynth family and are not used.

| family     | GM programs                                                          |
|------------|----------------------------------------------------------------------|
| keyboard   | 0-7 (pianos, electric pianos, harpsichord, clavinet)                 |
| mallet     | 8-15 (celesta ... dulcimer), 108 kalimba, 112 tinkle bell, 114 steel drums |
| organ      | 16-21, 23 (organs, accordion, tango accordion)                       |
| reed       | 22 harmonica, 64-71 (saxophones, oboe, English horn, bassoon, clarinet), 109 bagpipe, 111 shanai |
| guitar     | 24-31, 104 sitar, 105 banjo                                          |
| bass       | 32-39                                                                |
| string     | 40-46 (violin ... harp), 48-51 (string ensembles), 110 fiddle        |
| vocal      | 52-54 (choir aahs, voice oohs, synth voice)                          |
| brass      | 56-63                                                                |
| flute      | 72-79 (piccolo ... ocarina)                                          |
| synth_lead | 80-87                                                                |
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np

from tympan.datasets.offline import gus
from tympan.datasets.offline.speech import OfflineToolError

SAMPLE_RATE = 16000
FAMILIES = ("bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string",
            "synth_lead", "vocal")


def _family_table() -> dict[int, str]:
    t: dict[int, str] = {}
    spans = {"keyboard": [range(0, 8)], "mallet": [range(8, 16), [108, 112, 114]],
             "organ": [range(16, 22), [23]], "reed": [[22], range(64, 72), [109, 111]],
             "guitar": [range(24, 32), [104, 105]], "bass": [range(32, 40)],
             "string": [range(40, 47), range(48, 52), [110]], "vocal": [range(52, 55)],
             "brass": [range(56, 64)], "flute": [range(72, 80)], "synth_lead": [range(80, 88)]}
    for fam, groups in spans.items():
        for g in groups:
            for p in g:
                t[p] = fam
    return t


GM_FAMILY: dict[int, str] = _family_table()
# Playable MIDI range per family (about the instruments' real range), so a "bass" note is not
# rendered at a pitch its samples were never meant for.
FAMILY_RANGE: dict[str, tuple[int, int]] = {
    "bass": (28, 60), "brass": (45, 79), "flute": (60, 96), "guitar": (40, 84),
    "keyboard": (36, 96), "mallet": (53, 96), "organ": (36, 89), "reed": (45, 84),
    "string": (40, 88), "synth_lead": (48, 88), "vocal": (48, 79)}

SOUNDFONTS: dict[str, tuple[str, str]] = {
    "fluidr3": ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "fluid-soundfont-gm"),
    "timgm6mb": ("/usr/share/sounds/sf2/TimGM6mb.sf2", "timgm6mb-soundfont"),
    "freepats": ("/usr/share/midi/freepats", "freepats"),
}


def soundfont_path(name: str) -> Path:
    """The file (or, for FreePats, directory) of sample set ``name``; error names the package."""
    if name not in SOUNDFONTS:
        raise ValueError(f"soundfont={name!r} unknown; choose one of {sorted(SOUNDFONTS)}")
    path, package = SOUNDFONTS[name]
    p = Path(path)
    if not p.exists():
        raise OfflineToolError(f"soundfont {name!r} not found at {p}: install the Debian package "
                               f"`{package}` (apt-get install {package})")
    return p


@functools.lru_cache(maxsize=None)
def _freepats_programs() -> dict[int, Path]:
    root = soundfont_path("freepats") / "Tone_000"
    out = {}
    for f in sorted(root.glob("*.pat")):
        try:
            out[int(f.name[:3])] = f
        except ValueError:
            continue
    return out


class _Fluid:
    """One in-process fluidsynth at 16 kHz with one soundfont loaded (once per process)."""

    def __init__(self, path: Path):
        try:
            import fluidsynth
        except (ImportError, OSError) as e:   # pyfluidsynth needs libfluidsynth3
            raise OfflineToolError(f"pyfluidsynth cannot load libfluidsynth: install the Debian "
                                   f"package `libfluidsynth3` ({e})") from None
        self.synth = fluidsynth.Synth(gain=0.5, samplerate=float(SAMPLE_RATE), **{
            "synth.reverb.active": 0, "synth.chorus.active": 0})
        # fluid_synth_write_float instead of pyfluidsynth's get_samples (int16): the int16 path
        # adds dither whose state carries over between calls, so the same note would not render
        # bit-identically twice in one process; the float path has no dither and no clipping.
        import ctypes
        self._write = fluidsynth._fl.fluid_synth_write_float
        self._write.restype = ctypes.c_int
        self._write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                                ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self._frames = 0
        self._lock = threading.Lock()   # one synth per soundfont and process: serialise renders
        self.sfid = self.synth.sfload(str(path))
        if self.sfid < 0:
            raise OfflineToolError(f"fluidsynth could not load the soundfont {path}")
        self.programs = {p for p in range(128) if self.synth.program_select(0, self.sfid, 0, p) == 0}
        self._prime()

    def _prime(self, program: int | None = None) -> None:
        """Cut all sound and stop on a 64-frame block boundary: fluidsynth renders in blocks and
        applies a note-on at the next block start, so this keeps onsets where they are asked."""
        self.synth.all_sounds_off(0)
        self._samples(128 + (-(self._frames + 128)) % 64)
        if program is not None:
            self.synth.program_select(0, self.sfid, 0, program)

    def _samples(self, n: int) -> np.ndarray:
        """Advance the synth by n frames; returns float32 [n] (mono mix of left and right)."""
        self._frames += n
        left, right = np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.float32)
        if self._write(self.synth.synth, n, left.ctypes.data, 0, 1, right.ctypes.data, 0, 1) != 0:
            raise OfflineToolError("fluid_synth_write_float failed")
        return 0.5 * (left + right)

    def render(self, events: list[tuple[float, float, int, int]], program: int,
               n: int) -> np.ndarray:
        """events: (onset_s, offset_s, pitch, velocity), monophonic or not; returns float32 [n]."""
        if program not in self.programs:
            raise ValueError(f"program {program} is not in this soundfont")
        if not events:
            return np.zeros(n, dtype=np.float32)
        with self._lock:
            return self._render(events, program, n)

    def _render(self, events: list[tuple[float, float, int, int]], program: int,
                n: int) -> np.ndarray:
        self.synth.program_select(0, self.sfid, 0, program)
        # A note's first 64-frame block depends on the program its voice slot played last (slots
        # keep per-program state across all_sounds_off). Fill the slots a render can use with
        # this program, unheard, so every render starts from the same state whatever came before.
        _, _, p0, v0 = min(events)
        for k in range(24):
            self.synth.noteon(0, int(np.clip(p0 - 12 + k, 0, 127)), v0)
        self._samples(128)
        self._prime(program)
        marks = sorted([(on, 1, p, v) for on, _, p, v in events] +
                       [(off, 0, p, 0) for _, off, p, _ in events])
        out, done = [], 0
        for t, kind, p, v in marks:
            k = min(n, int(round(t * SAMPLE_RATE)))
            if k > done:
                out.append(self._samples(k - done))
                done = k
            if kind:
                self.synth.noteon(0, p, v)
            else:
                self.synth.noteoff(0, p)
        if n > done:
            out.append(self._samples(n - done))
        self._prime()
        return np.concatenate(out)


@functools.lru_cache(maxsize=None)
def _fluid(name: str) -> _Fluid:
    return _Fluid(soundfont_path(name))


def available_programs(soundfont: str) -> tuple[int, ...]:
    """GM programs (0-127, bank 0) that ``soundfont`` can play."""
    if soundfont == "freepats":
        return tuple(sorted(_freepats_programs()))
    return tuple(sorted(_fluid(soundfont).programs))


def _normalise(x: np.ndarray, what: str, peak: float = 0.5) -> np.ndarray:
    m = float(np.max(np.abs(x))) if x.size else 0.0
    if m < 1e-4:
        raise OfflineToolError(f"{what} rendered silence")
    return (x * (peak / m)).astype(np.float32)


def render_note(program: int, pitch: int, velocity: int = 100, duration_s: float = 4.0,
                soundfont: str = "fluidr3", *, hold_s: float | None = None) -> np.ndarray:
    """One note, NSynth-style: key held for ``hold_s`` (default 3/4 of the clip), then released.

    Returns float32 [round(duration_s * 16000)], peak-normalised to 0.5."""
    if not 0 <= pitch <= 127 or not 1 <= velocity <= 127:
        raise ValueError(f"pitch={pitch} / velocity={velocity} outside MIDI range")
    if duration_s <= 0:
        raise ValueError(f"duration_s={duration_s} must be > 0")
    hold = 0.75 * duration_s if hold_s is None else hold_s
    n = int(round(duration_s * SAMPLE_RATE))
    what = f"soundfont={soundfont} program={program} pitch={pitch}"
    if soundfont == "freepats":
        progs = _freepats_programs()
        if program not in progs:
            raise ValueError(f"program {program} is not in FreePats; see available_programs()")
        x = gus.play_note(progs[program], pitch, velocity, hold, duration_s, SAMPLE_RATE)
    else:
        x = _fluid(soundfont).render([(0.0, hold, pitch, velocity)], program, n)
    return _normalise(x, what)


def render_melody(rng: np.random.Generator, program: int, soundfont: str = "fluidr3",
                  duration_s: float = 4.0, *, low: int | None = None,
                  high: int | None = None) -> np.ndarray:
    """A random monophonic melody: notes of a random major/minor scale, 1/8 to 1/2 s long.

    Returns float32 [round(duration_s * 16000)], peak-normalised to 0.5."""
    fam = GM_FAMILY.get(program, "keyboard")
    lo, hi = FAMILY_RANGE[fam]
    lo, hi = low if low is not None else lo, high if high is not None else hi
    root = int(rng.integers(lo, max(lo + 1, hi - 12)))
    steps = (0, 2, 4, 5, 7, 9, 11) if rng.random() < 0.5 else (0, 2, 3, 5, 7, 8, 10)
    scale = [root + 12 * o + s for o in range(3) for s in steps if root + 12 * o + s <= hi]
    events, t, i = [], 0.0, int(rng.integers(len(scale)))
    while t < duration_s - 0.1:
        d = float(rng.choice([0.125, 0.25, 0.25, 0.5]))
        i = int(np.clip(i + rng.integers(-2, 3), 0, len(scale) - 1))
        events.append((t, min(t + d * 0.9, duration_s), scale[i], int(rng.integers(60, 121))))
        t += d
    n = int(round(duration_s * SAMPLE_RATE))
    what = f"melody soundfont={soundfont} program={program}"
    if soundfont == "freepats":
        progs = _freepats_programs()
        if program not in progs:
            raise ValueError(f"program {program} is not in FreePats; see available_programs()")
        x = np.zeros(n, dtype=np.float32)
        for on, off, p, v in events:
            k = int(on * SAMPLE_RATE)
            note = gus.play_note(progs[program], p, v, off - on, duration_s - on)
            x[k: k + note.size] += note[: n - k]
    else:
        x = _fluid(soundfont).render(events, program, n)
    return _normalise(x, what)
