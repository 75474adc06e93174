"""Resolve what a user names as a checkpoint (``--checkpoint C``) into a method payload.

C may be a checkpoint file (``Method.save``, or a trainer checkpoint holding a
``Method.payload()`` one level down), a Ray Train checkpoint directory, a run directory whose
``summary.json`` names its checkpoint and MLflow run, or an MLflow ``runs:/<run_id>/<path>``
URI. Used by ``tympan embed``, ``tympan evaluate`` and ``tympan.hear``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names it."""


@dataclass
class Checkpoint:
    payload: dict[str, Any]              # Method.payload(): method, config, state_dict
    path: str                            # what was loaded (file)
    pretrain_run_id: str | None = None   # the MLflow run that trained it, when known
    tracking_uri: str | None = None      # where that run lives


def _payload_in(obj: Any) -> dict[str, Any] | None:
    """A Method payload, or one nested one level down in a trainer checkpoint dict."""
    keys = ("method", "config", "state_dict")
    if isinstance(obj, dict) and set(keys) <= set(obj):
        # a pretraining checkpoint (distributed/checkpoints.py on the train branch) adds the
        # optimizer, scheduler and data position beside these: evaluation needs only the three
        return {k: obj[k] for k in keys}
    if isinstance(obj, dict):
        for v in obj.values():
            if isinstance(v, dict) and set(keys) <= set(v):
                return {k: v[k] for k in keys}
    return None


def _load_file(path: Path) -> dict[str, Any]:
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file: name it
        raise CheckpointError(f"{path}: not a tympan checkpoint ({type(e).__name__}: {e})") from None
    payload = _payload_in(obj)
    if payload is None:
        raise CheckpointError(f"{path}: no method payload (keys method/config/state_dict) in it")
    return payload


def _run_info(run_dir: Path) -> tuple[str | None, str | None]:
    """(mlflow run id, tracking uri) of a run directory's summary.json / local store."""
    summary = run_dir / "summary.json"
    run_id = tracking = None
    if summary.is_file():
        data = json.loads(summary.read_text())
        run_id, tracking = data.get("mlflow_run_id"), data.get("tracking_uri")
    if tracking and "***" in tracking:          # a redacted URI is of no use
        tracking = None
    dbs = sorted(run_dir.glob("*.db"))
    return run_id, tracking or (f"sqlite:///{dbs[0].resolve()}" if dbs else None)


def _checkpoint_files(d: Path) -> list[Path]:
    """Candidate files, shallowest first; at one depth the last in name order first, so an
    experiment folder of ``step-NNNNNNNN/checkpoint.pt`` yields its latest step."""
    files = [p for ext in ("*.pt", "*.pth", "*.ckpt") for p in d.rglob(ext)]
    files.sort(key=lambda p: str(p.relative_to(d)), reverse=True)
    return sorted(files, key=lambda p: len(p.relative_to(d).parts))


def _fetch(uri: str) -> Path:
    """A checkpoint named by URI (s3://, http(s)://) -> a local temporary copy."""
    from tympan.datasets import storage

    try:
        data = storage.read_bytes(uri)
    except Exception as e:  # noqa: BLE001 - storage errors of every kind: name the URI
        raise CheckpointError(f"{uri}: cannot read checkpoint ({e})") from None
    fd, tmp = tempfile.mkstemp(prefix="tympan-ckpt-", suffix=".pt")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(tmp)


def load_checkpoint(uri: str | os.PathLike) -> Checkpoint:
    """A checkpoint file (``Method.save`` or a trainer checkpoint holding a payload), a Ray
    Train checkpoint directory, a run directory (``summary.json`` names its checkpoint and MLflow
    run), or an MLflow ``runs:/<run_id>/<artifact path>`` URI."""
    uri = str(uri)
    if uri.startswith("runs:/"):
        import mlflow

        run_id = uri[len("runs:/"):].split("/", 1)[0]
        dst = tempfile.mkdtemp(prefix="tympan-ckpt-")
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst)
        except Exception as e:  # noqa: BLE001 - MLflow raises several kinds
            raise CheckpointError(f"{uri}: cannot download ({type(e).__name__}: {e})") from None
        ck = load_checkpoint(local)
        return Checkpoint(ck.payload, uri, run_id, mlflow.get_tracking_uri())
    if "://" in uri and not uri.startswith("file://"):
        return Checkpoint(_load_file(_fetch(uri)), uri)
    path = Path(uri.removeprefix("file://"))
    if not path.exists():
        raise CheckpointError(f"{uri}: no such checkpoint file or directory")
    if path.is_file():
        run_id, tracking = _run_info(path.parent)
        return Checkpoint(_load_file(path), str(path), run_id, tracking)
    run_id, tracking = _run_info(path)
    summary = path / "summary.json"
    if summary.is_file():
        named = json.loads(summary.read_text()).get("checkpoint")
        if named:
            target = named if "://" in named or Path(named).is_absolute() else str(path / named)
            ck = load_checkpoint(target)
            return Checkpoint(ck.payload, ck.path, run_id or ck.pretrain_run_id,
                              tracking or ck.tracking_uri)
    for f in _checkpoint_files(path):
        try:
            return Checkpoint(_load_file(f), str(f), run_id, tracking)
        except CheckpointError:
            continue
    raise CheckpointError(f"{uri}: no checkpoint file (*.pt, *.pth, *.ckpt holding a method payload) in it")
