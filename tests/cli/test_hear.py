"""`tympan.hear`: the HEAR 2021 API over checkpoints of several methods (shapes, dtypes,
timestamps in ms), for 0.1-4 s inputs, loaded from a file, a run directory and a Ray-Train-style
checkpoint directory. The checks are the ones hear-validator makes (README, "HEAR 2021 API")."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import tympan.hear as hear
from tympan.config import build
from tympan.methods.registry import get_method

# Narrow versions of the architectures, so the test runs in seconds on two cores.
METHODS = {
    "triplet": ["width=0.125"],
    "l3": ["width=0.125"],
    "audio-word2vec": ["hidden=16"],
    "soundnet": ["width=0.125"],
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_hear_api_shapes_dtypes_and_timestamps(method, tmp_path):
    cls = get_method(method)
    torch.manual_seed(0)
    cls(build(cls.config_cls, {}, METHODS[method])).save(tmp_path / "model.pt")
    model = hear.load_model(str(tmp_path / "model.pt"))
    assert isinstance(model, torch.nn.Module)
    assert model.sample_rate == 16000
    assert isinstance(model.scene_embedding_size, int) and isinstance(model.timestamp_embedding_size, int)
    d = model.timestamp_embedding_size
    rng = np.random.default_rng(0)
    for seconds in (0.1, 0.37, 1.0, 2.0, 4.0):
        n = int(seconds * model.sample_rate)
        audio = torch.from_numpy(rng.uniform(-1, 1, (3, n)).astype(np.float32))
        emb, ts = hear.get_timestamp_embeddings(audio, model)
        assert emb.dtype == torch.float32 and ts.dtype == torch.float32
        assert emb.ndim == 3 and emb.shape[0] == 3 and emb.shape[2] == d
        assert ts.shape == emb.shape[:2] and torch.isfinite(emb).all()
        assert torch.equal(ts[0], ts[1]) and torch.equal(ts[0], ts[2])
        # regular spacing (validator: < 1 ms deviation), centres inside the analysed span, in ms
        if ts.shape[1] > 1:
            diff = torch.diff(ts[0])
            assert torch.all((diff - diff.mean()).abs() < 1e-3) and diff.mean() >= 10.0
        assert 0.0 < float(ts[0, 0]) <= max(1000.0 * seconds, 1100.0)
        scene = hear.get_scene_embeddings(audio, model)
        assert scene.dtype == torch.float32 and scene.shape == (3, model.scene_embedding_size)
        torch.testing.assert_close(scene, emb.mean(dim=1), atol=1e-5, rtol=1e-4)
    # longer audio -> at least as many timestamps
    long = hear.get_timestamp_embeddings(torch.zeros(1, 4 * 16000), model)[1].shape[1]
    short = hear.get_timestamp_embeddings(torch.zeros(1, 1600), model)[1].shape[1]
    assert long >= short >= 1
    with pytest.raises(ValueError, match="shorter than 0.1 s"):
        hear.get_scene_embeddings(torch.zeros(1, 800), model)


def test_hear_loads_run_and_ray_checkpoint_directories(tmp_path, monkeypatch):
    """The layouts of `tympan pretrain` (train branch, distributed/checkpoints.py): an
    experiment folder of step-NNNNNNNN/checkpoint.pt files holding Method.payload() plus the
    trainer state, and a run directory whose summary.json names one by absolute path."""
    cls = get_method("triplet")
    old, new = (cls(build(cls.config_cls, {}, ["width=0.125"])) for _ in range(2))
    exp = tmp_path / "storage" / "run1"
    for step, m in ((100, old), (200, new)):
        (exp / f"step-{step:08d}").mkdir(parents=True)
        torch.save({**m.payload(), "optimizer": {"state": {}}, "step": step,
                    "data": {"position": {"epoch": 0, "offset": step}}},
                   exp / f"step-{step:08d}" / "checkpoint.pt")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps(
        {"method": "triplet", "checkpoint": str(exp / "step-00000100" / "checkpoint.pt"),
         "mlflow_run_id": "abc"}))
    audio = torch.zeros(2, 16000)
    for where, m in ((tmp_path / "run", old), (exp, new), (exp / "step-00000100", old)):
        ref = m.eval().embed_clip(audio)
        torch.testing.assert_close(hear.get_scene_embeddings(audio, hear.load_model(str(where))), ref)
    from tympan.distributed.checkpoint_ref import load_checkpoint

    ck = load_checkpoint(tmp_path / "run")
    assert ck.pretrain_run_id == "abc" and set(ck.payload) == {"method", "config", "state_dict"}
    monkeypatch.setenv("TYMPAN_CHECKPOINT", str(tmp_path / "run"))
    assert hear.load_model().scene_embedding_size == 128
    monkeypatch.delenv("TYMPAN_CHECKPOINT")
    with pytest.raises(ValueError, match="needs a checkpoint"):
        hear.load_model()
