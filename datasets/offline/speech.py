"""Spoken words and sentences from the espeak-ng synthesizer (Debian package ``espeak-ng``).

espeak-ng speaks ~130 languages with ~100 voice variants (``-v lang+variant``), speed ``-s``
(words/min) and pitch ``-p`` (0-99), and writes 16-bit mono WAV at 22.05 kHz to stdout
(ANCHORS.md section 8). :func:`speak` returns that audio as float32 at 16 kHz.

One espeak-ng process renders one utterance; start-up dominates its cost (~10-30 ms), so
:func:`speak_many` keeps several processes in flight from a thread pool (the threads only wait on
pipes, so the GIL is no bottleneck). Splitting a single multi-utterance call at its pauses was
rejected: pause lengths vary with the voice, so the cut points would not be exact.
"""

from __future__ import annotations

import functools
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16000
ESPEAK_PACKAGE = "espeak-ng"
# Variants left out of list_variants(ordinary=True): whispering voices have no pitch at all,
# and names with spaces cannot be passed through ``-v lang+variant`` reliably.
UNVOICED_VARIANTS = frozenset({"whisper", "whisperf"})


class OfflineToolError(RuntimeError):
    """A Debian tool or data package is missing or failed; the message names the package."""


@dataclass(frozen=True)
class Utterance:
    """One thing to say. ``voice`` is an espeak-ng language/accent id (``en-us``, ``fr-fr``...)."""
    text: str
    voice: str = "en"
    variant: str | None = None
    speed: int = 160
    pitch: int = 50


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise OfflineToolError(
            f"espeak-ng was not found on PATH: install the Debian package `{ESPEAK_PACKAGE}` "
            f"(apt-get install {ESPEAK_PACKAGE})")
    return path


@functools.lru_cache(maxsize=None)
def list_variants(ordinary: bool = True) -> tuple[str, ...]:
    """Names of espeak-ng voice variants (the part after ``+``), sorted.

    ``ordinary=True`` drops whispering variants and names containing spaces (see
    ``UNVOICED_VARIANTS``)."""
    out = subprocess.run([espeak_binary(), "--voices=variant"], capture_output=True, text=True,
                         check=True).stdout
    names = set()
    for line in out.splitlines()[1:]:
        # columns: Pty Language Age/Gender VoiceName File; File is "!v/<name>", the last column
        # for variants, and <name> may contain a space ("Mr serious").
        if "!v/" in line:
            names.add(line.split("!v/", 1)[1].strip())
    if ordinary:
        names = {n for n in names if " " not in n and n not in UNVOICED_VARIANTS}
    return tuple(sorted(names))


@functools.lru_cache(maxsize=None)
def list_languages() -> tuple[str, ...]:
    """espeak-ng language/accent ids (``--voices`` second column)."""
    out = subprocess.run([espeak_binary(), "--voices"], capture_output=True, text=True,
                         check=True).stdout
    return tuple(sorted({line.split()[1] for line in out.splitlines()[1:] if line.split()}))


def _parse_wav(data: bytes, what: str) -> tuple[np.ndarray, int]:
    """Parse espeak's streamed WAV: its RIFF/data sizes are placeholders (0x7ffff000) when writing
    to a pipe, so the samples are simply everything after the ``data`` tag."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise OfflineToolError(f"espeak-ng returned no WAV audio for {what}")
    rate = struct.unpack("<I", data[24:28])[0]
    pos = data.find(b"data", 12)
    if pos < 0:
        raise OfflineToolError(f"espeak-ng WAV has no data chunk for {what}")
    body = data[pos + 8:]
    body = body[: len(body) // 2 * 2]
    return np.frombuffer(body, dtype="<i2").astype(np.float32) / 32768.0, rate


def _check(u: Utterance) -> None:
    if not u.text.strip():
        raise ValueError(f"espeak text is empty (voice={u.voice!r})")
    if not 80 <= u.speed <= 450:
        raise ValueError(f"espeak speed={u.speed} outside 80..450 words/min")
    if not 0 <= u.pitch <= 99:
        raise ValueError(f"espeak pitch={u.pitch} outside 0..99")
    # espeak-ng silently falls back to the default voice for an unknown variant: refuse instead.
    if u.variant is not None and u.variant not in list_variants(ordinary=False):
        raise ValueError(f"espeak variant={u.variant!r} does not exist; see list_variants()")


def speak_utterance(u: Utterance) -> np.ndarray:
    """Render one utterance. Returns float32 [n] at 16 kHz, leading/trailing silence kept."""
    _check(u)
    voice = u.voice if u.variant is None else f"{u.voice}+{u.variant}"
    what = f"voice={voice!r} text={u.text[:40]!r}"
    proc = subprocess.run([espeak_binary(), "-v", voice, "-s", str(int(u.speed)),
                           "-p", str(int(u.pitch)), "--stdout", "--", u.text],
                          capture_output=True)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip()
        raise OfflineToolError(f"espeak-ng failed for {what}: {msg}")
    audio, rate = _parse_wav(proc.stdout, what)
    if audio.size == 0:
        raise OfflineToolError(f"espeak-ng produced no samples for {what}")
    if rate != SAMPLE_RATE:
        g = np.gcd(SAMPLE_RATE, rate)
        audio = resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def speak(text: str, *, voice: str = "en", variant: str | None = None, speed: int = 160,
          pitch: int = 50) -> np.ndarray:
    """Say ``text`` with espeak-ng voice ``voice+variant``. Returns float32 [n] at 16 kHz."""
    return speak_utterance(Utterance(text, voice, variant, speed, pitch))


def speak_many(utterances: Iterable[Utterance], *, workers: int = 4) -> list[np.ndarray]:
    """Render many utterances with ``workers`` espeak-ng processes in flight; order is kept."""
    items = list(utterances)
    for u in items:
        _check(u)   # fail before starting any process
    if workers <= 1 or len(items) < 2:
        return [speak_utterance(u) for u in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(speak_utterance, items))


def trim_silence(audio: np.ndarray, threshold: float = 0.01, pad_s: float = 0.02) -> np.ndarray:
    """Cut leading/trailing samples below ``threshold`` (keeping ``pad_s`` of margin)."""
    idx = np.flatnonzero(np.abs(audio) > threshold)
    if idx.size == 0:
        return audio
    pad = int(pad_s * SAMPLE_RATE)
    return audio[max(0, idx[0] - pad): idx[-1] + pad + 1]
