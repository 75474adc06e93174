"""What every decoder shares: the media kinds, the decode result types and the one error.

:mod:`tympan.datasets.audio` (soundfile, and the public entry points) and
:mod:`tympan.datasets.video` (PyAV) both build on this module; it imports neither, so the
dependency runs one way: media <- video <- audio.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np

# Files soundfile decodes (seek + read of the window).
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au"})
# Containers PyAV decodes: may hold video, an audio track or both (m4a/aac: audio only).
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4a", ".m4v", ".webm", ".mkv", ".mov", ".aac"})
REASONS = ("missing", "empty", "truncated", "undecodable", "too_short", "no_audio", "no_video",
           "bad_window")

Source = Union[str, os.PathLike, bytes, BinaryIO]


class DecodeError(Exception):
    """A clip cannot be decoded as asked. ``source`` names it, ``reason`` is one of REASONS."""

    def __init__(self, source: object, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"DecodeError reason {reason!r} is not one of {REASONS}")
        self.source, self.reason, self.detail = _name(source), reason, detail
        super().__init__(f"{self.source}: {reason}" + (f" ({detail})" if detail else ""))

    def __reduce__(self):
        # Rebuilt from its fields when it crosses a process boundary (Ray workers).
        return type(self), (self.source, self.reason, self.detail)


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float          # of the audio track when there is one, else of the container
    sample_rate: int | None    # native rate of the audio track
    channels: int | None
    has_audio: bool
    has_video: bool


def _name(source: object) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", None) or f"<{type(source).__name__}>")


def resample_margin(native_rate: int, target_rate: int) -> int:
    """Native samples to decode beyond each side of a window so that resampling the window
    reproduces the same stretch of a resampled full decode: libsoxr's HQ filter reaches about
    96 samples of the lower rate (measured: windows match a full decode to ~1e-7 from 96 on,
    1e-4 off at 64, for rates 8-96 kHz), taken as 128 with room to spare, plus one period of the
    grid both rates share (native/gcd samples) to start on it. 0: no resampling."""
    if native_rate == target_rate:
        return 0
    period = native_rate // math.gcd(native_rate, target_rate)
    return int(math.ceil(128 * max(1.0, native_rate / target_rate))) + period


@dataclass
class Decoded:
    """Native-rate samples around a window. Indices count native samples from the start of
    the file, so a window and a full decode share one sample grid."""
    data: np.ndarray        # float32 [n, channels]; data[0] is sample ``offset``
    sample_rate: int
    offset: int             # file index of data[0]
    start: int              # file index of the window's first sample
    stop: int               # file index one past the window's last sample
    to_end: bool            # the window runs to the end of the file
