"""The HEAR 2021 common API over any tympan checkpoint (Turian et al., "HEAR: Holistic
Evaluation of Audio Representations", PMLR 176, 2022; ANCHORS.md section 5)::

    import tympan.hear as hear
    model = hear.load_model("runs/demo/model.pt")      # any method's checkpoint
    emb, t_ms = hear.get_timestamp_embeddings(audio, model)   # [n, T, D] float32, [n, T] ms
    scene = hear.get_scene_embeddings(audio, model)            # [n, D] float32

``audio``: a float32 tensor ``[n_sounds, n_samples]`` in [-1, 1], mono, at
``model.sample_rate`` (16000), on the model's device; any length of at least 0.1 s (shorter
than a method's analysis window, a sound is loop-padded to it). Timestamps are the centres of
the method's analysis windows, in milliseconds, at the method's hop (``embed_hop_*`` in its
config: 480 ms for the 96-frame slice methods), identical for every sound of a batch. Scene
embeddings are the mean of the timestamp embeddings, as ``tympan evaluate`` uses them.

``model_file_path`` is anything ``tympan evaluate --checkpoint`` takes: a checkpoint file, a run
directory, a Ray Train checkpoint directory or an MLflow ``runs:/`` URI; the empty default
reads the ``TYMPAN_CHECKPOINT`` environment variable. Validate with the HEAR validator (README,
"HEAR 2021 API"): ``hear-validator tympan.hear --model CHECKPOINT``.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

MIN_SECONDS = 0.1


class HearModel(nn.Module):
    """A tympan method wrapped with the HEAR attributes (ints)."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method.eval()
        self.sample_rate = int(method.sample_rate)
        self.scene_embedding_size = int(method.embedding_dim)
        self.timestamp_embedding_size = int(method.embedding_dim)

    @property
    def device(self) -> torch.device:
        return next(self.method.parameters()).device

    def _check(self, audio: Tensor) -> Tensor:
        if not isinstance(audio, Tensor) or audio.ndim != 2:
            raise ValueError(f"audio must be a tensor [n_sounds, n_samples], got "
                             f"{getattr(audio, 'shape', type(audio))}")
        if audio.shape[1] < MIN_SECONDS * self.sample_rate:
            raise ValueError(f"audio of {audio.shape[1]} samples is shorter than {MIN_SECONDS} s "
                             f"at {self.sample_rate} Hz")
        return audio.float().to(self.device)


def load_model(model_file_path: str = "") -> HearModel:
    """A tympan checkpoint (any method) -> the HEAR model, on CPU (move it with ``.to``)."""
    from tympan.distributed.checkpoint_ref import load_checkpoint
    from tympan.methods.registry import load_method

    path = model_file_path or os.environ.get("TYMPAN_CHECKPOINT", "")
    if not path:
        raise ValueError("tympan.hear.load_model needs a checkpoint: pass model_file_path "
                         "(hear-validator --model PATH) or set TYMPAN_CHECKPOINT")
    return HearModel(load_method(load_checkpoint(path).payload))


@torch.no_grad()
def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> tuple[Tensor, Tensor]:
    """``[n, n_samples]`` -> (embeddings ``[n, T, D]`` float32, timestamps ``[n, T]`` float32 ms)."""
    emb, t_ms = model.method.embed_frames(model._check(audio))
    t_ms = t_ms.to(torch.float32)
    if t_ms.ndim == 1:
        t_ms = t_ms.unsqueeze(0)
    return emb.float(), t_ms.expand(emb.shape[0], -1).contiguous()


@torch.no_grad()
def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    """``[n, n_samples]`` -> ``[n, D]`` float32 (mean of the timestamp embeddings)."""
    return model.method.embed_clip(model._check(audio)).float()
