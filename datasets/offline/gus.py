"""A small reader and note player for Gravis UltraSound (GUS) patches, the format FreePats ships.

Debian's ``freepats`` package holds ``.pat`` files (GUS patches, for TiMidity and WildMidi), not a
SoundFont, and fluidsynth reads only SoundFont 2/3 (and DLS). Rather than add TiMidity, tympan
plays FreePats notes itself: a patch is a handful of PCM samples, each with a key range (low/high
frequency), the frequency it was recorded at (root) and a sustain loop, so a note is the sample
covering its pitch, resampled by ``f_note / f_root`` and looped while the key is held.
Envelopes, tremolo and vibrato are not modelled (a fixed attack/release is used instead); the
recorded timbre, which is what makes FreePats an independent test soundfont, is kept.

GUS patch layout (little endian): 129-byte file header ("GF1PATCH110" / "GF1PATCH100", number of
waveforms at byte 85), 63-byte instrument header, 47-byte layer header, then for each waveform a
96-byte sample header followed by its PCM data.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_FILE_HEADER, _INSTRUMENT_HEADER, _LAYER_HEADER, _SAMPLE_HEADER = 129, 63, 47, 96
# sample header "modes" bits
_MODE_16BIT, _MODE_UNSIGNED, _MODE_LOOP, _MODE_PINGPONG = 1, 2, 4, 8


class PatchError(ValueError):
    """A GUS patch file is truncated or not a patch; the message names the file."""


@dataclass(frozen=True)
class GusSample:
    data: np.ndarray        # float32 [n] in [-1, 1]
    sample_rate: int
    low_hz: float           # key range this sample serves
    high_hz: float
    root_hz: float          # pitch at which the sample was recorded
    loop_start: int         # in samples
    loop_end: int
    looped: bool
    pingpong: bool


@functools.lru_cache(maxsize=256)
def read_patch(path: str | Path) -> tuple[GusSample, ...]:
    """Parse a ``.pat`` file into its samples (cached: FreePats files are read once)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:8] != b"GF1PATCH":
        raise PatchError(f"{path}: not a GUS patch (header {raw[:12]!r})")
    n_waves = struct.unpack_from("<H", raw, 85)[0]
    pos = _FILE_HEADER + _INSTRUMENT_HEADER + _LAYER_HEADER
    samples = []
    for i in range(n_waves):
        if pos + _SAMPLE_HEADER > len(raw):
            raise PatchError(f"{path}: truncated at sample header {i}")
        (size, loop_start, loop_end, rate, low, high, root) = struct.unpack_from(
            "<IIIHIII", raw, pos + 8)
        modes = raw[pos + 55]
        pos += _SAMPLE_HEADER
        if pos + size > len(raw):
            raise PatchError(f"{path}: sample {i} claims {size} bytes past the end of the file")
        chunk = raw[pos: pos + size]
        pos += size
        width = 2 if modes & _MODE_16BIT else 1
        if modes & _MODE_16BIT:
            dtype = "<u2" if modes & _MODE_UNSIGNED else "<i2"
        else:
            dtype = "u1" if modes & _MODE_UNSIGNED else "i1"
        x = np.frombuffer(chunk[: len(chunk) // width * width], dtype=dtype).astype(np.float32)
        full = 2.0 ** (8 * width - 1)
        if modes & _MODE_UNSIGNED:
            x -= full
        samples.append(GusSample(
            data=x / full, sample_rate=int(rate), low_hz=low / 1000.0, high_hz=high / 1000.0,
            root_hz=root / 1000.0, loop_start=loop_start // width, loop_end=loop_end // width,
            looped=bool(modes & _MODE_LOOP), pingpong=bool(modes & _MODE_PINGPONG)))
    if not samples:
        raise PatchError(f"{path}: patch holds no samples")
    return tuple(samples)


def _pick(samples: tuple[GusSample, ...], hz: float) -> GusSample:
    covering = [s for s in samples if s.low_hz <= hz <= s.high_hz]
    if covering:
        return covering[0]
    # outside every key range: the sample recorded nearest to the pitch (in octaves)
    return min(samples, key=lambda s: abs(np.log2(max(s.root_hz, 1e-3) / hz)))


def _positions(s: GusSample, step: float, n: int) -> np.ndarray | None:
    """Fractional read positions for ``n`` output samples, folded into the sustain loop."""
    p = np.arange(n, dtype=np.float64) * step
    loop_len = s.loop_end - s.loop_start
    if s.looped and loop_len > 1 and s.loop_end <= len(s.data):
        over = p >= s.loop_end
        if np.any(over):
            q = p[over] - s.loop_start
            if s.pingpong:
                q = np.mod(q, 2 * loop_len)
                q = np.where(q >= loop_len, 2 * loop_len - q, q)
            else:
                q = np.mod(q, loop_len)
            p[over] = s.loop_start + q
        return p
    return p[p < len(s.data) - 1]


def play_note(path: str | Path, pitch: int, velocity: int, hold_s: float, duration_s: float,
              sample_rate: int = 16000, release_s: float = 0.25) -> np.ndarray:
    """Render MIDI note ``pitch`` held ``hold_s`` seconds from the patch at ``path``.

    Returns float32 [round(duration_s * sample_rate)]: a 5 ms attack, the looped sample while
    held, then an exponential release (time constant ``release_s / 5``), zero-padded."""
    samples = read_patch(str(path))
    hz = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
    s = _pick(samples, hz)
    n = int(round(duration_s * sample_rate))
    step = (hz / s.root_hz) * (s.sample_rate / sample_rate)
    n_sound = min(n, int(round((hold_s + release_s) * sample_rate)))
    pos = _positions(s, step, n_sound)
    out = np.zeros(n, dtype=np.float32)
    if pos is None or pos.size == 0:
        return out
    x = np.interp(pos, np.arange(len(s.data)), s.data).astype(np.float32)
    t = np.arange(x.size) / sample_rate
    env = np.minimum(1.0, t / 0.005)
    n_hold = int(hold_s * sample_rate)
    if x.size > n_hold:
        env[n_hold:] *= np.exp(-(t[n_hold:] - hold_s) / (release_s / 5.0))
    out[: x.size] = x * env * (velocity / 127.0)
    return out
