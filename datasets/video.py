"""PyAV (FFmpeg) decoding behind :mod:`tympan.datasets.audio`: the audio track of
mp4/m4a/webm/mkv/mov files, video frames at timestamps, and container probing.

Call the public functions of ``tympan.datasets.audio`` (``decode_audio``,
``decode_video_frames``, ``probe``); they open the source and validate arguments, then
delegate here. Both decoders seek to the keyframe at or before the first time asked for and
decode forward, so a window in a long video costs about one GOP plus the window.
"""

from __future__ import annotations

from typing import BinaryIO

import av
import numpy as np

from tympan.datasets.media import DecodeError, Decoded, MediaInfo, Source, resample_margin

# Targets further apart than this are reached by a new seek instead of decoding every frame
# in between (a seek costs about one GOP of decoding; typical GOPs are 0.5-10 s).
SEEK_GAP_S = 2.0
# Audio codecs with overlapping transforms (AAC, Vorbis, Opus) decode the first frame after a
# seek wrongly; start this much earlier and cut, so windowed reads equal a full decode.
AUDIO_PREROLL_S = 0.1
_EPS = 1e-6
_INT_SCALE = {"s16": 32768.0, "s16p": 32768.0, "s32": 2.0 ** 31, "s32p": 2.0 ** 31,
              "s64": 2.0 ** 63, "s64p": 2.0 ** 63}


def _open(src: str | BinaryIO, name: Source) -> av.container.InputContainer:
    try:
        return av.open(src, mode="r", metadata_errors="ignore")
    except FileNotFoundError:
        raise DecodeError(name, "missing", "no such file") from None
    except (av.error.FFmpegError, ValueError, OSError) as e:
        if _is_iso_media(src):
            # An MP4/MOV that starts well but cannot be opened has lost its index (the moov box,
            # written last by default): the usual result of an interrupted download or copy.
            raise DecodeError(name, "truncated",
                              f"MP4 header present but unreadable: {e}") from None
        raise DecodeError(name, "undecodable", str(e)) from None


def _is_iso_media(src: str | BinaryIO) -> bool:
    try:
        if isinstance(src, str):
            with open(src, "rb") as f:
                head = f.read(12)
        else:
            src.seek(0)
            head = src.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp"


def _planar_float(frame: av.AudioFrame) -> np.ndarray:
    """An audio frame of any sample format -> float32 [channels, samples]."""
    arr = frame.to_ndarray()
    fmt = frame.format.name
    n_ch = len(frame.layout.channels)
    if not frame.format.is_planar:
        arr = arr.reshape(-1, n_ch).T                 # packed [1, n*ch] -> [ch, n]
    if fmt in ("u8", "u8p"):
        return (arr.astype(np.float32) - 128.0) / 128.0
    if fmt in _INT_SCALE:
        return (arr / _INT_SCALE[fmt]).astype(np.float32)
    return arr.astype(np.float32, copy=False)


def _duration_s(stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def decode_av_audio(src, name: Source, start_s: float | None, end_s: float | None,
                    tolerance_s: float, target_rate: int) -> Decoded:
    """The window's samples of the first audio track at the native rate, with margins for
    resampling to ``target_rate`` (see ``audio.resample_margin``)."""
    with _open(src, name) as container:
        if not container.streams.audio:
            raise DecodeError(name, "no_audio", "the container has no audio track")
        stream = container.streams.audio[0]
        declared = _duration_s(stream)
        if declared is None and container.duration is not None:
            declared = container.duration / av.time_base
        start = start_s or 0.0
        sr = stream.codec_context.sample_rate or stream.sample_rate
        back_s = AUDIO_PREROLL_S + resample_margin(sr, target_rate) / sr
        if start > back_s:
            try:
                container.seek(int((start - back_s) / stream.time_base), stream=stream,
                               backward=True)
            except av.error.FFmpegError as e:
                raise DecodeError(name, "too_short", f"cannot seek to {start} s: {e}") from None
        chunks: list[np.ndarray] = []
        t0 = None
        n = 0
        try:
            for frame in container.decode(stream):
                ft = frame.time if frame.time is not None else n / sr
                if t0 is None:
                    t0, sr = ft, frame.sample_rate
                if end_s is not None and ft >= end_s + back_s:
                    break
                chunks.append(_planar_float(frame))
                n += chunks[-1].shape[1]
        except av.error.FFmpegError as e:
            raise DecodeError(name, "truncated" if chunks else "undecodable", str(e)) from None
    if not chunks:
        if declared is not None and start >= declared:
            raise DecodeError(name, "too_short", f"window starts at {start} s, "
                              f"audio lasts {declared:.3f} s")
        raise DecodeError(name, "empty", "no audio samples decoded")
    data = np.concatenate(chunks, axis=1)               # [ch, n], first sample at time t0
    begin = max(0, int(round((start - t0) * sr)))
    if end_s is None:
        stop = data.shape[1]
        if declared is not None:
            # Drop the encoder's end padding (AAC pads its last frame) beyond the track length.
            stop = min(stop, int(round((declared - t0) * sr)))
    else:
        stop = int(round((end_s - t0) * sr))
    have = data.shape[1]
    if stop > have:
        shortfall_s = (stop - have) / sr
        ends_at = t0 + have / sr
        if declared is not None and ends_at + 1e-3 < declared and (end_s or declared) <= declared:
            raise DecodeError(name, "truncated", f"audio stops at {ends_at:.3f} s, "
                              f"track declares {declared:.3f} s")
        if shortfall_s > tolerance_s:
            raise DecodeError(name, "too_short", f"window ends at {end_s} s, "
                              f"audio lasts {ends_at:.3f} s")
        stop = have
    if begin >= stop:
        raise DecodeError(name, "too_short", f"window starts at {start} s, audio ends first")
    offset = int(round(t0 * sr))                       # file index of data[:, 0]
    return Decoded(np.ascontiguousarray(data.T), sr, offset=offset, start=offset + begin,
                   stop=offset + stop, to_end=end_s is None)


def decode_frames(src, name: Source, times: np.ndarray,
                  size: tuple[int, int] | None) -> np.ndarray:
    """Frames shown at ``times`` (sorted or not) -> uint8 [K, H, W, 3] in the order given."""
    with _open(src, name) as container:
        if not container.streams.video:
            raise DecodeError(name, "no_video", "the container has no video track")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        h, w = size if size is not None else (ctx.height, ctx.width)
        out = np.empty((len(times), h, w, 3), np.uint8)
        order = np.argsort(times, kind="stable")
        fps = float(stream.average_rate or 25)
        declared = _duration_s(stream)
        if declared is None and container.duration is not None:
            declared = container.duration / av.time_base

        def rgb(frame) -> np.ndarray:
            return frame.to_ndarray(format="rgb24", width=w, height=h)

        i = 0
        try:
            while i < len(order):
                target = times[order[i]]
                container.seek(int(target / stream.time_base), stream=stream, backward=True)
                prev, count = None, 0
                for frame in container.decode(stream):
                    ft = frame.time if frame.time is not None else count / fps
                    count += 1
                    # `prev` is the frame on screen until `frame` replaces it at time ft.
                    while i < len(order) and ft > times[order[i]] + _EPS:
                        out[order[i]] = rgb(prev if prev is not None else frame)
                        i += 1
                    prev = frame
                    if i == len(order) or times[order[i]] - ft > SEEK_GAP_S:
                        break
                else:
                    # The stream ended: the last frame stays on screen for one frame period.
                    last_end = declared
                    if prev is not None and prev.time is not None:
                        last_end = prev.time + 1.0 / fps
                    while i < len(order):
                        t = times[order[i]]
                        if declared is not None and t < declared - _EPS and (
                                prev is None or last_end is None or t >= last_end + _EPS):
                            raise DecodeError(name, "truncated", f"no frame decoded at {t} s; the "
                                              f"stream declares {declared:.3f} s")
                        if prev is None or last_end is None or t >= last_end + _EPS:
                            raise DecodeError(name, "too_short", f"no frame at {t} s; video lasts "
                                              f"{declared if declared is not None else '?'} s")
                        out[order[i]] = rgb(prev)
                        i += 1
        except av.error.FFmpegError as e:
            raise DecodeError(name, "truncated" if i else "undecodable", str(e)) from None
    return out


def probe_av(src, name: Source) -> MediaInfo:
    with _open(src, name) as container:
        a = container.streams.audio[0] if container.streams.audio else None
        v = container.streams.video[0] if container.streams.video else None
        dur = _duration_s(a) if a is not None else None
        if dur is None and v is not None:
            dur = _duration_s(v)
        if dur is None:
            dur = container.duration / av.time_base if container.duration is not None else 0.0
        return MediaInfo(duration_s=float(dur),
                         sample_rate=(a.codec_context.sample_rate if a is not None else None),
                         channels=(a.codec_context.channels if a is not None else None),
                         has_audio=a is not None, has_video=v is not None)
