"""Tiny shard sets for the pipeline tests: real FLAC + JSON (+ JPEG frames) tars written with
tympan.datasets.shards from synthetic clips (tones with frames and spoken-word transcripts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tympan.datasets.clip import Clip
from tympan.datasets.manifest import make_row
from tympan.datasets.shards import encode_record, shard_name, write_shard
from tympan.datasets.synthetic import synthetic_clips


def record_of(clip: Clip, frames: bool = True):
    row = make_row(clip.clip_id, f"synthetic:{clip.clip_id}", labels=clip.labels, meta=clip.meta)
    if frames:
        return encode_record(row, clip.audio, clip.frames, clip.frame_times)
    return encode_record(row, clip.audio)


def write_shard_set(root: Path, clips: list[Clip], per_shard: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(0, len(clips), per_shard):
        paths.append(root / shard_name(k // per_shard))
        write_shard(str(paths[-1]), [record_of(c) for c in clips[k:k + per_shard]])
    return paths


@pytest.fixture(scope="session")
def shard_set(tmp_path_factory) -> tuple[Path, list[Clip]]:
    """3 shards x 6 clips of 2 s with 2 frames (32 x 32) each and word transcripts."""
    clips = synthetic_clips(18, duration_s=2.0, seed=3, with_frames=True, with_words=True,
                            frame_size=32)
    root = tmp_path_factory.mktemp("shards")
    write_shard_set(root, clips, per_shard=6)
    return root, clips


# The pretraining tests' session fixtures (an mlflow server on 127.0.0.1, a tiny SoundNet
# teacher) live beside their helpers; registered here so every module shares one server.
import sys as _sys  # noqa: E402

_sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import mlflow_server, teacher_path  # noqa: E402,F401
