"""The training stream on a real local Ray cluster: every method's batches from a small shard
set with the shapes and dtypes of its contract, determinism, resume from a Position, and the
split that Ray Train workers read.

Every test asks for ``s3_server`` (through ``ray_cluster``) before Ray starts, so the
session's Ray workers inherit the S3 endpoint (tests/conftest.py).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tympan.datasets.synthetic import synthetic_clips
from tympan.distributed.pipeline import (FRONTEND_KEYS, PipelineConfig, Position, build_pipeline)
from tympan.methods.registry import METHODS, get_method

ALL_METHODS = list(METHODS)


def first_batch(p):
    return next(iter(p.iter_batches()))


def all_batches(p):
    return list(p.iter_batches())


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_streams_its_batch_contract(ray_cluster, shard_set, method):
    """Shapes and dtypes equal what the method's own sampler gives for clips of this kind
    (its documented contract), with B = the pipeline's batch size."""
    root, clips = shard_set
    mcfg = get_method(method).config_cls()       # the paper defaults
    p = build_pipeline(str(root), method, mcfg, PipelineConfig(batch_size=4, group_size=4),
                       epochs=1)
    batch = first_batch(p)
    want = get_method(method).sample_views(mcfg, clips[:4], np.random.default_rng(0))
    assert set(batch) == set(want)
    for k, v in want.items():
        assert batch[k].shape == v.shape, (method, k)
        assert batch[k].dtype == v.dtype, (method, k)
        assert np.all(np.isfinite(batch[k])), (method, k)
    assert p.bad_clips().total == 0


def test_slice_contract_shapes_as_documented(ray_cluster, shard_set):
    root, _ = shard_set
    p = build_pipeline(str(root), "cola", cfg=PipelineConfig(batch_size=5), epochs=1)
    b = first_batch(p)
    assert b["anchor"].shape == b["positive"].shape == (5, 96, 64)       # COLA [B, T, F]
    p = build_pipeline(str(root), "audio2vec-cbow", cfg=PipelineConfig(batch_size=3), epochs=1)
    b = first_batch(p)
    assert b["context"].shape == (3, 4, 96, 64) and b["target"].shape == (3, 96, 64)


def test_one_epoch_yields_every_clip_once(ray_cluster, shard_set):
    root, clips = shard_set
    cfg = PipelineConfig(batch_size=4, keep_ids=True, drop_last=False, group_size=4)
    p = build_pipeline(str(root), "temporal-gap", cfg=cfg, epochs=2)
    ids = Counter(i for b in p.iter_batches() for i in b["clip_id"])
    assert ids == Counter({c.clip_id: 2 for c in clips})
    stages = p.stage_seconds()                       # what `tympan bench data` reads per stage
    assert stages["units"] == 6 and stages["examples"] == 36
    assert stages["read_decode_s"] > 0 and stages["views_s"] > 0


def test_same_seed_same_batches_other_seed_differs(ray_cluster, shard_set):
    root, _ = shard_set

    def run(seed):
        cfg = PipelineConfig(batch_size=4, seed=seed, shuffle_buffer=8, keep_ids=True)
        return all_batches(build_pipeline(str(root), "cola", cfg=cfg, epochs=1))

    a, b, c = run(7), run(7), run(8)
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert list(x["clip_id"]) == list(y["clip_id"])
        np.testing.assert_array_equal(x["anchor"], y["anchor"])
        np.testing.assert_array_equal(x["positive"], y["positive"])
    assert [list(x["clip_id"]) for x in a] != [list(x["clip_id"]) for x in c]


def test_start_position_resumes_the_same_stream(ray_cluster, shard_set):
    """No shuffle buffer: the stream is the units in order, so starting at (epoch 1, offset 2)
    gives exactly the tail of an uninterrupted two-epoch run, and position_after points there."""
    root, clips = shard_set
    cfg = PipelineConfig(batch_size=6, keep_ids=True, shuffle_buffer=0, group_size=6)
    full = build_pipeline(str(root), "triplet", cfg=cfg, epochs=2)
    whole = all_batches(full)
    assert len(whole) == 6                              # 2 epochs x 3 shards x 6 clips / 6
    assert full.position_after(5 * 6) == Position(epoch=1, offset=2)
    assert full.position_after(6 * 6) == Position(epoch=2, offset=0)
    tail = all_batches(build_pipeline(str(root), "triplet", cfg=cfg,
                                      start=Position(epoch=1, offset=2), epochs=2))
    assert len(tail) == 1
    assert list(tail[0]["clip_id"]) == list(whole[-1]["clip_id"])
    np.testing.assert_array_equal(tail[0]["anchor"], whole[-1]["anchor"])


def test_streaming_split_gives_each_worker_part_of_the_stream(ray_cluster, shard_set):
    """What Ray Train's DataConfig does with the dataset: two consumers, disjoint clips that
    together cover the epoch."""
    import threading

    root, clips = shard_set
    cfg = PipelineConfig(batch_size=3, keep_ids=True, drop_last=False, shuffle_buffer=0)
    p = build_pipeline(str(root), "cola", cfg=cfg, epochs=1)
    assert p.data_config() is not None
    splits = p.dataset.streaming_split(2, equal=False)
    seen: list[list[str]] = [[], []]

    def consume(i):
        for b in splits[i].iter_batches(**p.iter_kwargs()):
            seen[i].extend(b["clip_id"])

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(c.clip_id for c in clips)


def test_frontend_table_covers_every_method():
    assert set(FRONTEND_KEYS) == set(METHODS)
    for name, keys in FRONTEND_KEYS.items():
        out = get_method(name).sample_views(get_method(name).config_cls(),
                                            synthetic_clips(2, duration_s=1.0, with_frames=True,
                                                            with_words=True, frame_size=32),
                                            np.random.default_rng(0))
        assert set(keys) <= set(out), name


@pytest.mark.parametrize("method,key", [("triplet", "p_shift"), ("triplet", "p_gain"), ("cola", "p_eq")])
def test_log_mel_augmentations_refuse_a_device_front_end(tmp_path, method, key):
    """p_shift, p_gain and p_eq act on the log-mel after the front end, which
    frontend="device" defers to the trainer: refused before Ray is touched, naming the key."""
    from tympan.config import ConfigError
    mcfg = get_method(method).config_cls(**{key: 1.0})
    with pytest.raises(ConfigError, match=key):
        build_pipeline(str(tmp_path), method, mcfg, PipelineConfig(batch_size=4, frontend="device"),
                       epochs=1)
