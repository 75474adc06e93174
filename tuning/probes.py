"""A trial's downstream score: frozen clip embeddings of the pretrained encoder + linear probes.

One function, :func:`score_tasks`, is all a study calls; it uses the linear probe of
``tympan.methods.probe`` (L2 chosen on the validation split when the task has one). The
evaluation driver of ``tympan evaluate`` (``tympan.distributed.evaluate``) scores whole
checkpoints with baselines; a trial needs only the pretrained row of a few tasks, in-process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from tympan.tuning.data import ProbeTask, load_probe_task


@torch.no_grad()
def embed_waves(model, waves: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Clip embeddings ``[N, D]``; clips of equal length are embedded together (padding would
    change a clip's mean embedding)."""
    out = np.zeros((len(waves), model.embedding_dim), dtype=np.float32)
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(waves):
        by_length.setdefault(len(w), []).append(i)
    for idx in by_length.values():
        for j in range(0, len(idx), batch_size):
            chunk = idx[j:j + batch_size]
            out[chunk] = model.embed_clip(torch.from_numpy(np.stack([waves[i] for i in chunk]))).numpy()
    return out


def probe_task(model, task: ProbeTask) -> float:
    """Test accuracy of a linear probe on ``task`` over the frozen embeddings of ``model``."""
    from tympan.methods.probe import linear_probe

    x = {s: embed_waves(model, w) for s, w in task.waves.items()}
    valid = (x["valid"], task.labels["valid"]) if "valid" in x else (None, None)
    res = linear_probe(x["train"], task.labels["train"], x["test"], task.labels["test"], *valid)
    return float(res.accuracy)


def score_tasks(checkpoint: str | Path | dict, root: Path, tasks: Sequence[str],
                max_per_split: int | None = None) -> dict[str, float]:
    """Checkpoint (path or payload) -> ``{task: test accuracy}``."""
    from tympan.methods.registry import load_method

    model = load_method(checkpoint)
    torch.manual_seed(0)
    return {t: probe_task(model, load_probe_task(root, t, max_per_split)) for t in tasks}
