"""Pipeline sources and failure behaviour: a shard set with 5 % corrupt records (every good
clip exactly once per epoch, exactly the bad ids reported), s3:// against moto, weighted
mixes, the offline corpus's live mixer and AV clips, CPU vs device front end, data URIs."""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tympan.config import ConfigError
from tympan.datasets import storage
from tympan.datasets.shards import shard_name, write_shard
from tympan.datasets.synthetic import synthetic_clips
from tympan.distributed.pipeline import PipelineConfig, Position, build_pipeline
from tympan.distributed.sources import MixerSource, ShardPlan, ShardSource, parse_data_uri
from tympan.methods.registry import get_method

from .conftest import record_of, write_shard_set


@pytest.fixture(scope="module")
def corrupt_set(tmp_path_factory):
    """3 shards x 20 records; 3 of the 60 (5 %) are bad: garbage FLAC bytes, a FLAC member
    cut in half, and a shard file cut off inside its last record. One more record has no
    frames: good for audio methods, bad for L3."""
    clips = synthetic_clips(60, duration_s=1.5, seed=5, with_frames=True, frame_size=32)
    root = tmp_path_factory.mktemp("corrupt")
    bad = {clips[5].clip_id: "undecodable", clips[27].clip_id: "truncated",
           clips[59].clip_id: "truncated"}
    frameless = clips[33].clip_id
    for s in range(3):
        records = []
        for c in clips[20 * s:20 * s + 20]:
            rec = record_of(c, frames=c.clip_id != frameless)
            if c.clip_id == clips[5].clip_id:
                rec[0] = (rec[0][0], np.random.default_rng(0).bytes(len(rec[0][1])))
            if c.clip_id == clips[27].clip_id:
                rec[0] = (rec[0][0], rec[0][1][:len(rec[0][1]) // 2])
            records.append(rec)
        write_shard(str(root / shard_name(s)), records)
    last = root / shard_name(2)
    with tarfile.open(last) as tar:
        member = [m for m in tar.getmembers() if m.name.endswith(".flac")][-1]
    with open(last, "r+b") as f:                  # cut the file inside the last FLAC member
        f.truncate(member.offset_data + member.size // 2)
    return root, clips, bad, frameless


def ids_of(p) -> Counter:
    return Counter(i for b in p.iter_batches() for i in b["clip_id"])


def test_corrupt_records_are_dropped_counted_and_named(ray_cluster, corrupt_set):
    root, clips, bad, _ = corrupt_set
    cfg = PipelineConfig(batch_size=8, keep_ids=True, drop_last=False, group_size=8)
    p = build_pipeline(str(root), "cola", cfg=cfg, epochs=2)
    seen = ids_of(p)
    assert seen == Counter({c.clip_id: 2 for c in clips if c.clip_id not in bad})
    report = p.bad_clips()
    assert report.total == 6                                    # 3 bad clips x 2 epochs
    assert {(c.clip_id, c.reason) for c in report.clips} == set(bad.items())
    assert sorted(c.epoch for c in report.clips) == [0, 0, 0, 1, 1, 1]
    assert report.counts == {"truncated": 4, "undecodable": 2}
    assert all(c.where.endswith(".tar") for c in report.clips)


def test_av_method_drops_a_record_without_frames(ray_cluster, corrupt_set):
    root, clips, bad, frameless = corrupt_set
    cfg = PipelineConfig(batch_size=8, keep_ids=True, drop_last=False, group_size=8)
    p = build_pipeline(str(root), "l3", get_method("l3").config_cls(image_size=32),
                       cfg=cfg, epochs=1)
    seen = ids_of(p)
    want_bad = {**bad, frameless: "no_frames"}
    assert seen == Counter({c.clip_id: 1 for c in clips if c.clip_id not in want_bad})
    assert {(c.clip_id, c.reason) for c in p.bad_clips().clips} == set(want_bad.items())


def test_s3_prefix_streams_the_same_batches_as_the_directory(ray_cluster, s3_bucket, shard_set):
    root, _ = shard_set
    for path in sorted(Path(root).glob("shard-*.tar")):
        storage.write_bytes_atomic(f"s3://{s3_bucket}/train/{path.name}", path.read_bytes())
    cfg = PipelineConfig(batch_size=6, seed=3, keep_ids=True)
    local = list(build_pipeline(str(root), "cola", cfg=cfg, epochs=1).iter_batches())
    remote = list(build_pipeline(f"s3://{s3_bucket}/train", "cola", cfg=cfg, epochs=1).iter_batches())
    assert len(remote) == len(local) == 3
    for a, b in zip(local, remote):
        assert list(a["clip_id"]) == list(b["clip_id"])
        np.testing.assert_array_equal(a["anchor"], b["anchor"])


# One method per way a sampler reaches its front end: crops selected after it (COLA with noise
# on the positive, SkipGram's slice windows), a design-study front end (L3 mel256), features
# masked after it (Audio Word2Vec), a second input beside it (audio-text). Temporal gap and
# triplet take COLA's path; SoundNet ships waveforms in both placements.
@pytest.mark.parametrize("method,mcfg", [
    ("cola", {}), ("audio2vec-skipgram", {}), ("l3", {"image_size": 32}),
    ("audio-word2vec", {}), ("audio-text", {})])
def test_device_frontend_gives_the_cpu_batches(ray_cluster, shard_set, method, mcfg):
    """frontend='device' ships waveform crops; DeviceFrontend on the training device (CUDA
    when there is one) turns them into the CPU pipeline's features to 1e-4."""
    root, _ = shard_set
    cfg_m = get_method(method).config_cls(**mcfg)
    batches = {}
    for where in ("cpu", "device"):
        cfg = PipelineConfig(batch_size=6, seed=11, frontend=where, group_size=6)
        p = build_pipeline(str(root), method, cfg_m, cfg, epochs=1)
        batches[where] = next(iter(p.iter_batches()))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    fe = p.device_frontend.to(dev)
    shipped = batches["device"]
    out = fe({k: torch.from_numpy(np.array(v)).to(dev) for k, v in shipped.items()})
    for k, v in batches["cpu"].items():
        assert out[k].shape == v.shape, (method, k)
        np.testing.assert_allclose(out[k].cpu().numpy(), v, atol=1e-4, rtol=0, err_msg=f"{method} {k}")
    for k in p.device_frontend.keys:                      # and the keys did ship waveforms
        assert shipped[k].shape[-1] > batches["cpu"][k].shape[-1]


def test_weighted_shard_sets_share_each_epoch_by_weight(tmp_path):
    a = write_shard_set(tmp_path / "a", synthetic_clips(6, duration_s=0.5), per_shard=2)
    b = write_shard_set(tmp_path / "b", synthetic_clips(2, duration_s=0.5, seed=9), per_shard=2)
    src = parse_data_uri(f"{tmp_path / 'a'}=0.75,{tmp_path / 'b'}=0.25")
    assert isinstance(src, ShardSource) and [s.weight for s in src.sets] == [0.75, 0.25]
    plan = ShardPlan(src, seed=0)
    assert plan.units_per_epoch == 4
    for epoch in range(3):
        units = [plan.describe(epoch * 4 + j) for j in range(4)]
        assert Counter(s for _, s, _ in units) == {0: 3, 1: 1}
        assert sorted(u for _, s, u in units if s == 0) == sorted(map(str, a))
        assert [u for _, s, u in units if s == 1] == [str(b[0])]


def test_bad_data_uris_are_config_errors_naming_them(tmp_path):
    for uri, part in [("", "empty"), (f"{tmp_path}/nope", "not a directory"),
                      (f"{tmp_path}=x", "not a number"), (f"{tmp_path}=-1", "positive"),
                      ("http://host/x", "s3://"), (f"offline:{tmp_path}", "tympan data offline"),
                      (f"offline:{tmp_path},{tmp_path}", "one built offline corpus")]:
        with pytest.raises(ConfigError, match=part) as e:
            parse_data_uri(uri)
        assert repr(uri) in str(e.value)


def test_live_mixer_and_offline_av_stream_batches(ray_cluster, offline_small):
    root, _ = offline_small
    assert isinstance(parse_data_uri(f"offline:{root}"), MixerSource)
    cfg = PipelineConfig(batch_size=4, clips_per_unit=4, group_size=4, keep_ids=True,
                         shuffle_buffer=0, max_units=3)
    p = build_pipeline(f"offline:{root}", "cola", cfg=cfg, start=Position(0, 4))
    batches = list(p.iter_batches())
    assert len(batches) == 3                                  # max_units units of 4 clips
    assert batches[0]["anchor"].shape == (4, 96, 64)
    assert list(batches[0]["clip_id"]) == [f"pretrain-s0-{i:08d}" for i in range(4, 8)]
    assert p.position_after(8) == Position(0, 12)              # clips, not units
    av = build_pipeline(f"offline-av:{root}", "l3", get_method("l3").config_cls(image_size=64),
                        PipelineConfig(batch_size=4, clips_per_unit=4, group_size=4), epochs=1)
    b = next(iter(av.iter_batches()))
    assert b["frame"].shape == (4, 3, 64, 64) and b["match"].dtype == np.int64
    assert av.bad_clips().total == 0
