"""Tiny media generators for the decoding tests (fixture ``media_kit``): tones and noise as wav/flac/ogg/mp3 (soundfile)
and a short mp4 (H.264 video + AAC audio, written with PyAV) whose frame colour encodes the
frame index, so a frame test can tell which frame came back."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

# soundfile format/subtype per extension; lossy codecs need their subtype spelled out.
SF_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"),
              "ogg": ("OGG", "VORBIS"), "mp3": ("MP3", "MPEG_LAYER_III")}


def tone(freq: float, duration_s: float, sample_rate: int, channels: int = 1,
         amp: float = 0.5) -> np.ndarray:
    """Sine tone, float32 [n] (mono) or [n, channels]; channel c is scaled by 1/(c+1)."""
    t = np.arange(int(round(duration_s * sample_rate))) / sample_rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if channels == 1:
        return x
    return np.stack([x / (c + 1) for c in range(channels)], axis=1)


def write_audio(path: Path, data: np.ndarray, sample_rate: int) -> Path:
    import soundfile as sf

    fmt, subtype = SF_FORMATS[path.suffix[1:]]
    sf.write(str(path), data, sample_rate, format=fmt, subtype=subtype)
    return path


FPS = 10
COLOR_STEP = 8       # frame i has colour (COLOR_STEP*i, 255 - COLOR_STEP*i, 128)


def frame_color(i: int) -> np.ndarray:
    return np.array([COLOR_STEP * i, 255 - COLOR_STEP * i, 128], dtype=np.float64)


def frame_index_of(rgb: np.ndarray) -> int:
    """Inverse of frame_color on a decoded (lossy) frame: nearest index by the mean colour."""
    mean = rgb.reshape(-1, 3).mean(axis=0)
    return int(round((mean[0] + (255 - mean[1])) / (2 * COLOR_STEP)))


def write_mp4(path: Path, duration_s: float = 3.0, size: tuple[int, int] = (48, 64),
              audio_rate: int = 44100, freq: float = 440.0, audio: bool = True,
              faststart: bool = False) -> Path:
    """H.264 video at FPS frames/s (frame i has frame_color(i)) + stereo AAC tone at ``freq``
    (both channels: the tone, the second at half amplitude). ``faststart`` puts the index
    first, so a cut file still opens and decodes up to the cut."""
    import av

    h, w = size
    n_frames = int(round(duration_s * FPS))
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=opts) as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": "10", "g": "5"}          # a keyframe every 0.5 s: seeks are tested
        streams = [vs]
        if audio:
            as_ = out.add_stream("aac", rate=audio_rate)
            as_.layout = "stereo"
            streams.append(as_)
        for i in range(n_frames):
            img = np.empty((h, w, 3), np.uint8)
            img[:] = frame_color(i).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            for pkt in vs.encode(frame):
                out.mux(pkt)
        wave = tone(freq, duration_s, audio_rate, channels=2) if audio else np.zeros((0, 2))
        hop = 1024
        for s in range(0, len(wave), hop):
            chunk = np.ascontiguousarray(wave[s:s + hop].T, dtype=np.float32)   # planar [2, hop]
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            af.sample_rate = audio_rate
            af.pts = s
            af.time_base = Fraction(1, audio_rate)
            for pkt in as_.encode(af):
                out.mux(pkt)
        for stream in streams:
            for pkt in stream.encode(None):
                out.mux(pkt)
    return path


@pytest.fixture(scope="session")
def media_kit():
    """The generators above, for test modules (pytest's importlib mode cannot import conftest):
    ``media_kit.tone(...)``, ``.write_audio``, ``.write_mp4``, ``.frame_index_of``, ``.FPS``."""
    return SimpleNamespace(tone=tone, write_audio=write_audio, write_mp4=write_mp4,
                           frame_color=frame_color, frame_index_of=frame_index_of, FPS=FPS,
                           SF_FORMATS=SF_FORMATS)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    """A directory with the generated files the decoding tests share (written once)."""
    d = tmp_path_factory.mktemp("media")
    for ext in SF_FORMATS:
        write_audio(d / f"tone440_16k.{ext}", tone(440, 2.0, 16000), 16000)
    write_audio(d / "stereo_44k.wav", tone(1000, 2.0, 44100, channels=2), 44100)
    write_audio(d / "tone1k_48k.flac", tone(1000, 2.0, 48000), 48000)
    rng = np.random.default_rng(0)
    write_audio(d / "noise_16k.flac", (0.1 * rng.standard_normal(48000)).astype(np.float32), 16000)
    write_mp4(d / "av.mp4")
    return d


@pytest.fixture(scope="session")
def http_root(tmp_path_factory):
    """A read-only HTTP server on 127.0.0.1 (stdlib http.server in a thread) serving a fresh
    directory. Yields ``(directory, base_url)``."""
    import functools
    import http.server
    import threading

    root = tmp_path_factory.mktemp("http")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):   # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
