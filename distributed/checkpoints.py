"""Pretraining checkpoints: what one holds, atomic writes, reading it back, where the data resumes.

A checkpoint is one file, ``checkpoint.pt``, inside a Ray Train checkpoint directory
(``<storage>/<name>/step-00001200/``). It is :meth:`Method.payload` (method name, method
config, weights: all that ``load_method``, ``tympan embed``, ``tympan evaluate`` and the HEAR
module need) plus what resuming needs (DESIGN.md "Contracts"):

    {"method": str, "config": dict, "state_dict": {name: Tensor},     # Method.payload()
     "frontend": dict | None,       # the front-end config the model was trained with
     "optimizer": dict, "scheduler": dict, "step": int,
     "data": {"start": {"epoch": int, "offset": int}, "examples": int,
              "position": {"epoch": int, "offset": int}},
     "train": dict,                 # the TrainConfig
     "history": {"loss_first": float, "samples": int, "seconds": float, "wait_seconds": float}}

Only plain containers, numbers, strings and tensors: it loads with
``torch.load(path, weights_only=True)``. ``data.start`` is where the stream the run read from
began and ``data.examples`` how many examples (global) it consumed since; ``data.position``
is the pipeline's ``position_after`` of those, where the next stream starts.

Writes are atomic (temporary name in the same directory, then ``os.replace``). No Ray here:
the training loop hands the directory to ``ray.train.report``, which persists it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from tympan.config import to_dict

CHECKPOINT_FILE = "checkpoint.pt"
POSITION_FILE = "data_position.json"


def checkpoint_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def frontend_config(method) -> dict | None:
    """The method's front-end config as a dict (None for waveform models such as SoundNet)."""
    fe = getattr(method.cfg, "frontend", None)
    return to_dict(fe) if fe is not None else None


def make_checkpoint(method, optimizer, scheduler, *, step: int, data: dict, train: dict,
                    history: dict) -> dict[str, Any]:
    payload = method.payload()
    payload.update(frontend=frontend_config(method), optimizer=optimizer.state_dict(),
                   scheduler=scheduler.state_dict(), step=int(step), data=data, train=train,
                   history=history)
    return payload


def write_checkpoint(payload: dict, directory: str | Path) -> Path:
    """``payload`` -> ``directory/checkpoint.pt``, atomically (a reader never sees half a file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, directory / CHECKPOINT_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return directory / CHECKPOINT_FILE


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """A checkpoint file or the directory holding it -> the payload (weights_only load)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    return torch.load(str(path), map_location=map_location, weights_only=True)


# ---- the data position beside the checkpoints ---------------------------------------------------
# Ray Train restarts a failed worker group with the datasets it was given; tympan gives it a
# factory that starts the stream where the latest checkpoint left it. Rank 0 writes this small
# file next to the checkpoints after each ray.train.report returns (i.e. after the checkpoint
# is persisted), so it never points past the checkpoint Ray restores; it may point one
# interval before it when a worker dies between the two writes (data repeats, none is skipped).

def _fs_and_path(uri: str):
    import pyarrow.fs as pafs

    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def write_position(experiment_uri: str, record: dict) -> None:
    """``{"step", "start", "examples"}`` of the checkpoint just persisted."""
    _write_json(experiment_uri, POSITION_FILE, record)


def read_position(experiment_uri: str) -> dict | None:
    return _read_json(experiment_uri, POSITION_FILE)


def _write_json(experiment_uri: str, name: str, record: dict) -> None:
    fs, path = _fs_and_path(experiment_uri.rstrip("/") + "/" + name)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    data = json.dumps(record).encode()
    if "://" in experiment_uri:      # an object-store PUT is atomic
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)


def _read_json(experiment_uri: str, name: str) -> dict | None:
    import pyarrow.fs as pafs

    fs, path = _fs_and_path(experiment_uri.rstrip("/") + "/" + name)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        try:
            return json.loads(f.read().decode())
        except ValueError:
            return None


def list_checkpoints(experiment_uri: str) -> list[str]:
    """``step-*`` checkpoint directories (URIs / paths) holding a checkpoint file, oldest first."""
    import pyarrow.fs as pafs

    fs, root = _fs_and_path(experiment_uri)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return []
    out = []
    for info in fs.get_file_info(pafs.FileSelector(root)):
        if info.type == pafs.FileType.Directory and info.base_name.startswith("step-"):
            if fs.get_file_info(f"{info.path}/{CHECKPOINT_FILE}").type == pafs.FileType.File:
                out.append(info.base_name)
    base = experiment_uri.rstrip("/")
    return [f"{base}/{name}" for name in sorted(out)]


STREAM_FILE = "data_stream.json"


def write_stream_start(experiment_uri: str, start: dict) -> None:
    """Where the stream handed to the current worker group begins (written by the dataset
    factory on each worker-group start, read by the workers)."""
    _write_json(experiment_uri, STREAM_FILE, start)


def read_stream_start(experiment_uri: str) -> dict | None:
    return _read_json(experiment_uri, STREAM_FILE)
