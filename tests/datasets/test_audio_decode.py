"""Decoding real files written by the tests (soundfile for wav/flac/ogg/mp3, PyAV for an
H.264 + AAC mp4): formats, mono mixdown, resampling, windows, frames, errors, remote sources."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest

from tympan.datasets import audio
from tympan.datasets.audio import DecodeError, decode_audio, decode_video_frames, probe

SF_EXTS = ["flac", "mp3", "ogg", "wav"]
FPS = 10      # frame rate of media_kit.write_mp4


@pytest.fixture(scope="module")
def kit(media_kit):
    return media_kit


def peak_hz(x: np.ndarray, sr: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)])


@pytest.mark.parametrize("ext", SF_EXTS)
def test_each_audio_format_decodes_to_16k_mono_float32(media_dir, kit, ext):
    x = decode_audio(str(media_dir / f"tone440_16k.{ext}"))
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 32000) <= (0 if ext in ("wav", "flac") else 1200)
    assert abs(peak_hz(x) - 440) < 2
    if ext in ("wav", "flac"):       # lossless up to 16-bit quantisation
        np.testing.assert_allclose(x, kit.tone(440, 2.0, 16000), atol=1 / 32768 + 1e-7)


def test_stereo_44k_is_averaged_and_resampled(media_dir, kit):
    x = decode_audio(str(media_dir / "stereo_44k.wav"))
    assert len(x) == 32000
    assert abs(peak_hz(x) - 1000) < 2
    # Channels are the tone and half the tone: their mean is 0.75 x the tone.
    ref = 0.75 * kit.tone(1000, 2.0, 16000)
    np.testing.assert_allclose(x[200:-200], ref[200:-200], atol=5e-3)
    assert decode_audio(str(media_dir / "stereo_44k.wav"), sample_rate=44100).shape == (88200,)


def test_48k_tone_keeps_its_frequency(media_dir, kit):
    x = decode_audio(str(media_dir / "tone1k_48k.flac"))
    assert len(x) == 32000 and abs(peak_hz(x) - 1000) < 2
    np.testing.assert_allclose(x[200:-200], kit.tone(1000, 2.0, 16000)[200:-200], atol=5e-3)


@pytest.mark.parametrize("name", ["noise_16k.flac", "tone440_16k.wav", "stereo_44k.wav",
                                  "tone1k_48k.flac", "av.mp4"])
@pytest.mark.parametrize("window", [(0.0, 0.5), (0.37, 1.2), (1.0, None), (0.0125, 0.0375)])
def test_window_equals_slice_of_full_decode(media_dir, name, window):
    src = str(media_dir / name)
    full = decode_audio(src)
    start, end = window
    part = decode_audio(src, start_s=start, end_s=end)
    i = round(start * 16000)
    expected_len = (len(full) - i) if end is None else round((end - start) * 16000)
    assert abs(len(part) - expected_len) <= 1
    np.testing.assert_allclose(part, full[i:i + len(part)], atol=1e-4)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 22254, 32000, 44100, 48000, 96000])
def test_windows_of_noise_match_full_decode_at_every_rate(tmp_path, kit, rate):
    # White noise has energy up to Nyquist, so a missing filter margin shows (~1e-3 errors,
    # a tone hides them); 22254 Hz is nearly coprime with 16 kHz (shared grid every 11127).
    noise = (0.3 * np.random.default_rng(rate).standard_normal(3 * rate)).astype(np.float32)
    path = str(kit.write_audio(tmp_path / "noise.wav", noise, rate))
    full = decode_audio(path)
    assert len(full) == round(3 * rate * 16000 / rate)
    for start, end in [(0.0, 0.3), (0.61, 1.37), (1.2345, None), (2.5, 2.75)]:
        part = decode_audio(path, start_s=start, end_s=end)
        i = round(round(start * rate) * 16000 / rate)     # the window starts on a native sample
        # native-rate rounding of the window's ends moves its length by at most one sample
        assert abs(len(part) - (len(full) - i if end is None else round(end * 16000) - i)) <= 1
        np.testing.assert_allclose(part, full[i:i + len(part)], atol=2e-6, err_msg=str((start, end)))


@pytest.mark.parametrize("orig,new", [(44100, 16000), (48000, 16000), (8000, 16000), (16000, 44100)])
def test_resample_keeps_tone_phase_and_length(orig, new):
    # Delay-compensated: output sample k is at time k / new, so a resampled tone equals the tone
    # sampled at the new rate (away from the edges, where the filter sees zeros).
    t_in, t_out = np.arange(2 * orig) / orig, np.arange(2 * new) / new
    y = audio.resample(np.sin(2 * np.pi * 997 * t_in).astype(np.float32), orig, new)
    assert y.dtype == np.float32 and y.shape == (2 * new,)
    np.testing.assert_allclose(y[300:-300], np.sin(2 * np.pi * 997 * t_out[300:-300]), atol=2e-3)
    stereo = np.stack([np.sin(2 * np.pi * 997 * t_in), np.zeros_like(t_in)]).astype(np.float32)
    both = audio.resample(stereo, orig, new)          # [..., n]: channels first
    assert both.shape == (2, 2 * new)
    np.testing.assert_allclose(both[0], y, atol=1e-6)
    assert np.abs(both[1]).max() < 1e-6


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_downmix_is_the_channel_mean(channels):
    x = np.random.default_rng(channels).standard_normal((1001, channels)).astype(np.float32)
    np.testing.assert_allclose(audio.downmix(x), x.mean(axis=1), rtol=1e-6, atol=1e-7)


class CountingReader(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, n=-1):
        out = super().read(n)
        self.bytes_read += len(out)
        return out

    def readinto(self, b):
        n = super().readinto(b)
        self.bytes_read += n
        return n


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_window_reads_only_part_of_a_long_file(tmp_path, kit, ext):
    rng = np.random.default_rng(1)
    path = kit.write_audio(tmp_path / f"long.{ext}",
                       (0.1 * rng.standard_normal(60 * 16000)).astype(np.float32), 16000)
    data = path.read_bytes()
    f = CountingReader(data)
    x = decode_audio(f, start_s=41.0, end_s=41.5, ext=ext)
    assert len(x) == 8000
    np.testing.assert_array_equal(x, decode_audio(str(path))[41 * 16000:41 * 16000 + 8000])
    assert f.bytes_read < 0.1 * len(data), f"read {f.bytes_read} of {len(data)} bytes"


def test_mp4_audio_track_and_probe(media_dir):
    src = str(media_dir / "av.mp4")
    x = decode_audio(src)
    assert len(x) == 48000 and abs(peak_hz(x) - 440) < 2
    assert 0.3 < np.abs(x[1000:-1000]).max() < 0.45          # 0.75 * 0.5 after AAC
    info = probe(src)
    assert info.has_audio and info.has_video and info.sample_rate == 44100 and info.channels == 2
    assert info.duration_s == pytest.approx(3.0, abs=0.05)
    winfo = probe(str(media_dir / "stereo_44k.wav"))
    assert (winfo.sample_rate, winfo.channels, winfo.has_video) == (44100, 2, False)
    assert winfo.duration_s == pytest.approx(2.0)


def test_frames_at_requested_times(media_dir, kit):
    src = str(media_dir / "av.mp4")
    times = [2.95, 0.0, 0.05, 0.1, 1.26, 0.5, 2.0]      # unsorted, repeats within one frame
    frames = decode_video_frames(src, times)
    assert frames.shape == (len(times), 48, 64, 3) and frames.dtype == np.uint8
    assert [kit.frame_index_of(f) for f in frames] == [int(t * FPS + 1e-9) for t in times]
    small = decode_video_frames(src, [1.55], size=(24, 32))
    assert small.shape == (1, 24, 32, 3) and kit.frame_index_of(small[0]) == 15
    with pytest.raises(DecodeError) as e:
        decode_video_frames(src, [3.5])
    assert e.value.reason == "too_short"
    with pytest.raises(DecodeError) as e:
        decode_video_frames(str(media_dir / "tone440_16k.wav"), [0.0])
    assert e.value.reason == "no_video"


def test_video_only_mp4_has_no_audio(tmp_path, kit):
    src = str(kit.write_mp4(tmp_path / "silent.mp4", duration_s=1.0, audio=False))
    with pytest.raises(DecodeError) as e:
        decode_audio(src)
    assert e.value.reason == "no_audio" and "silent.mp4" in str(e.value)
    assert not probe(src).has_audio


def _cut(src, dst, fraction=0.5):
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * fraction)])
    return str(dst)


@pytest.mark.parametrize("name", ["tone440_16k.wav", "tone440_16k.flac", "tone440_16k.mp3",
                                  "tone440_16k.ogg", "av.mp4"])
def test_truncated_file_is_a_typed_error(media_dir, tmp_path, name):
    bad = _cut(media_dir / name, tmp_path / f"cut_{name}")
    with pytest.raises(DecodeError) as e:
        decode_audio(bad)
    assert e.value.reason == "truncated", str(e.value)
    assert e.value.source == bad and "truncated" in str(e.value) and bad in str(e.value)


def test_truncated_faststart_mp4_frames_and_audio(tmp_path, kit):
    bad = _cut(kit.write_mp4(tmp_path / "fs.mp4", faststart=True), tmp_path / "fs_cut.mp4")
    for call in (lambda: decode_audio(bad), lambda: decode_video_frames(bad, [2.9])):
        with pytest.raises(DecodeError) as e:
            call()
        assert e.value.reason == "truncated", str(e.value)


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "mp4"])
def test_empty_and_missing_files(tmp_path, ext):
    empty = tmp_path / f"empty.{ext}"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError) as e:
        decode_audio(str(empty))
    assert e.value.reason == "empty" and str(empty) in str(e.value)
    with pytest.raises(DecodeError) as e:
        decode_audio(str(tmp_path / f"absent.{ext}"))
    assert e.value.reason == "missing" and "absent" in str(e.value)


def test_garbage_is_undecodable(tmp_path):
    for name in ("noise.wav", "noise.flac", "noise.mp4", "noise.bin"):
        p = tmp_path / name
        p.write_bytes(np.random.default_rng(2).bytes(4000))
        with pytest.raises(DecodeError) as e:
            decode_audio(str(p))
        assert e.value.reason == "undecodable", (name, str(e.value))


def test_short_windows_and_bad_windows(media_dir):
    src = str(media_dir / "tone440_16k.flac")                    # 2.0 s
    for kwargs in [dict(start_s=1.5, end_s=2.5), dict(start_s=2.5), dict(min_duration_s=3.0),
                   dict(start_s=1.0, min_duration_s=1.5)]:
        with pytest.raises(DecodeError) as e:
            decode_audio(src, **kwargs)
        assert e.value.reason == "too_short", kwargs
    assert len(decode_audio(src, start_s=1.5, end_s=2.01, tolerance_s=0.02)) == 8000
    with pytest.raises(DecodeError) as e:
        decode_audio(str(media_dir / "av.mp4"), start_s=2.0, end_s=4.0)
    assert e.value.reason == "too_short"
    for kwargs in [dict(start_s=-1.0), dict(start_s=1.0, end_s=0.5), dict(end_s=0.0)]:
        with pytest.raises(DecodeError) as e:
            decode_audio(src, **kwargs)
        assert e.value.reason == "bad_window", kwargs


def test_bytes_source_needs_no_file(media_dir):
    data = (media_dir / "tone440_16k.flac").read_bytes()
    np.testing.assert_array_equal(decode_audio(data, ext=".flac"),
                                  decode_audio(str(media_dir / "tone440_16k.flac")))
    with pytest.raises(DecodeError) as e:
        decode_audio(b"", ext="flac")
    assert e.value.reason == "empty"


def test_s3_sources(s3_server, s3_bucket, media_dir, kit):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint_url"])
    for name in ("tone1k_48k.flac", "av.mp4"):
        s3.upload_file(str(media_dir / name), s3_bucket, f"media/{name}")
    flac = f"s3://{s3_bucket}/media/tone1k_48k.flac"
    np.testing.assert_array_equal(decode_audio(flac), decode_audio(str(media_dir / "tone1k_48k.flac")))
    np.testing.assert_array_equal(decode_audio(flac, start_s=0.5, end_s=1.0),
                                  decode_audio(str(media_dir / "tone1k_48k.flac"), start_s=0.5, end_s=1.0))
    frames = decode_video_frames(f"s3://{s3_bucket}/media/av.mp4", [1.0, 2.0])
    assert [kit.frame_index_of(f) for f in frames] == [10, 20]
    assert probe(flac).sample_rate == 48000
    with pytest.raises(DecodeError) as e:
        decode_audio(f"s3://{s3_bucket}/media/missing.flac")
    assert e.value.reason == "missing" and "missing.flac" in str(e.value)


def test_http_sources(http_root, media_dir, kit):
    root, base = http_root
    for name in ("noise_16k.flac", "av.mp4"):
        shutil.copy(media_dir / name, root / name)
    np.testing.assert_array_equal(decode_audio(f"{base}/noise_16k.flac"),
                                  decode_audio(str(media_dir / "noise_16k.flac")))
    x = decode_audio(f"{base}/av.mp4", start_s=1.0, end_s=1.5)
    assert len(x) == 8000 and abs(peak_hz(x) - 440) < 4
    assert kit.frame_index_of(decode_video_frames(f"{base}/av.mp4", [2.25])[0]) == 22
    with pytest.raises(DecodeError) as e:
        decode_audio(f"{base}/gone.flac")
    assert e.value.reason == "missing"


def test_extension_constants():
    assert {".wav", ".flac", ".ogg", ".mp3"} <= audio.AUDIO_EXTENSIONS
    assert {".mp4", ".m4a", ".webm", ".mkv", ".mov"} <= audio.VIDEO_EXTENSIONS
    assert not audio.AUDIO_EXTENSIONS & audio.VIDEO_EXTENSIONS
    with pytest.raises(ValueError):
        DecodeError("x.wav", "some_new_reason")


def test_errors_survive_pickling():
    # Ray ships exceptions between processes by pickling them.
    import pickle

    from tympan.datasets.storage import ObjectNotFound

    e = pickle.loads(pickle.dumps(DecodeError("s3://b/k.flac", "truncated", "lost sync")))
    assert (e.source, e.reason, e.detail) == ("s3://b/k.flac", "truncated", "lost sync")
    assert str(e) == "s3://b/k.flac: truncated (lost sync)"
    nf = pickle.loads(pickle.dumps(ObjectNotFound("s3://b/k.flac")))
    assert isinstance(nf, FileNotFoundError) and nf.uri == "s3://b/k.flac"
