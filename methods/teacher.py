"""Image teachers for SoundNet-style distillation: load one, or train a small one.

Aytar, Vondrick & Torralba, "SoundNet: Learning Sound Representations from Unlabeled Video",
NIPS 2016 (arXiv 1610.09001), distil ImageNet/Places CNNs into a waveform network. tympan
lets the user name any torch image classifier as the teacher:

* ``teacher.path``: a TorchScript file (``torch.jit.save``), or
* ``teacher.arch`` = ``"timm:NAME"`` / ``"torchvision:NAME"`` plus ``teacher.weights``, a state
  dict file loaded with ``torch.load(weights_only=True)``; the architecture is built with
  ``pretrained=False`` / ``weights=None``: nothing is ever downloaded.

:func:`train_teacher` is the recipe for a teacher without ImageNet weights: train a small
classifier (default timm ``resnet18``) on an image set - arrays, a folder with one sub-folder
per class, or a folder plus a ``file,label`` CSV (the audio-visual corpus's image set) - and
save both forms (``<out>.pt`` TorchScript, ``<out>.state.pt`` state dict, ``<out>.json``
classes and normalisation).
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tympan.config import check

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_IMAGE_EXT = (".jpg", ".jpeg", ".png")


@dataclass
class TeacherConfig:
    path: str = ""                      # TorchScript file
    arch: str = ""                      # "timm:resnet18" / "torchvision:resnet18"
    weights: str = ""                   # state-dict file for ``arch``
    image_size: int = 224
    # tuple[float, ...]: tympan.config's fixed-length tuple coercion swaps items and types
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    temperature: float = 1.0            # softmax temperature on the teacher's logits

    def __post_init__(self):
        check(not (self.path and self.arch), "path", self.path,
              "give either path (TorchScript) or arch + weights, not both")
        if self.arch:
            check(self.arch.split(":")[0] in ("timm", "torchvision") and ":" in self.arch,
                  "arch", self.arch, "must be 'timm:NAME' or 'torchvision:NAME'")
            check(bool(self.weights), "weights", self.weights,
                  f"arch {self.arch!r} needs a state-dict file (weights are never downloaded)")
        check(self.image_size >= 8, "image_size", self.image_size, "must be >= 8")
        check(len(self.mean) == 3, "mean", self.mean, "needs 3 values (R, G, B)")
        check(len(self.std) == 3 and all(s > 0 for s in self.std), "std", self.std,
              "needs 3 positive values (R, G, B)")
        check(self.temperature > 0, "temperature", self.temperature, "must be positive")

    @property
    def configured(self) -> bool:
        return bool(self.path or self.arch)


def build_arch(arch: str, n_classes: int) -> nn.Module:
    """``"timm:NAME"`` / ``"torchvision:NAME"`` (bare NAME = timm) with random weights."""
    lib, _, name = arch.rpartition(":")
    if lib in ("", "timm"):
        import timm
        return timm.create_model(name, pretrained=False, num_classes=n_classes)
    if lib == "torchvision":
        import torchvision
        return torchvision.models.get_model(name, weights=None, num_classes=n_classes)
    raise ValueError(f"teacher arch {arch!r}: library must be timm or torchvision")


def load_teacher(cfg: TeacherConfig, n_classes: int) -> nn.Module:
    """The frozen teacher in eval mode; checks it maps ``[1, 3, S, S]`` to ``[1, n_classes]``."""
    if not cfg.configured:
        raise ValueError("soundnet: no teacher configured; set teacher.path=<TorchScript file> "
                         "or teacher.arch=timm:NAME teacher.weights=<state dict>")
    source = cfg.path or cfg.weights
    if not Path(source).is_file():
        raise FileNotFoundError(f"soundnet teacher file not found: {source}")
    if cfg.path:
        with warnings.catch_warnings():                # TorchScript is deprecated, still loads
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(cfg.path, map_location="cpu")
    else:
        model = build_arch(cfg.arch, n_classes)
        state = torch.load(cfg.weights, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"teacher weights {cfg.weights} do not fit {cfg.arch} with "
                             f"{n_classes} classes: {e}") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, cfg.image_size, cfg.image_size))
    if tuple(out.shape) != (1, n_classes):
        raise ValueError(f"teacher {source} outputs {tuple(out.shape)} for one image; soundnet "
                         f"config n_classes={n_classes} expects (1, {n_classes})")
    return model


# ---- the recipe ------------------------------------------------------------------------------
def _read_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image      # the recipe reads JPEGs once, offline; training never does

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)


def load_image_set(folder: str | Path, labels_csv: str | Path | None, size: int,
                   split: str | None = None) -> tuple[np.ndarray, list[str]]:
    """Images uint8 ``[N, size, size, 3]`` + labels from ``folder/<label>/*.jpg`` or from a
    ``file,label`` CSV (file relative to ``folder``; ``path`` is read as ``file``, so the
    offline corpus's ``av/images/labels.csv`` loads as it is). ``split``: keep only the CSV's
    rows whose ``split`` column is this value."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    if labels_csv is not None:
        with open(labels_csv, newline="") as fh:
            rows = list(csv.DictReader(fh))
        key = "file" if rows and "file" in rows[0] else "path"
        if not rows or not {key, "label"} <= set(rows[0]):
            raise ValueError(f"{labels_csv}: needs a header with columns 'file' (or 'path') and 'label'")
        if split is not None:
            if "split" not in rows[0]:
                raise ValueError(f"{labels_csv}: no 'split' column to select split={split!r} from")
            rows = [r for r in rows if r["split"] == split]
        items = [(folder / r[key], r["label"]) for r in rows]
    else:
        items = [(p, d.name) for d in sorted(folder.iterdir()) if d.is_dir()
                 for p in sorted(d.iterdir()) if p.suffix.lower() in _IMAGE_EXT]
    if not items:
        raise ValueError(f"{folder}: no images found (expected <label>/*.jpg or a labels CSV)")
    images, labels, bad = [], [], []
    for path, label in items:
        try:
            images.append(_read_image(path, size))
            labels.append(label)
        except (OSError, ValueError):
            bad.append(str(path))                      # unreadable image: skipped and counted
    if bad:
        warnings.warn(f"train_teacher: skipped {len(bad)} unreadable images, e.g. {bad[:3]}")
    return np.stack(images), labels


@dataclass
class TeacherResult:
    torchscript: Path
    state_dict: Path
    meta: Path
    classes: list[str]
    train_accuracy: float


def train_teacher(images: np.ndarray | str | Path, labels: Sequence[str] | str | Path | None = None,
                  *, out_path: str | Path, arch: str = "timm:resnet18", epochs: int = 10,
                  image_size: int = 224, batch_size: int = 32, lr: float = 1e-3, seed: int = 0
                  ) -> TeacherResult:
    """Train an image classifier to serve as SoundNet teacher; returns where it was saved.

    ``images``: uint8 ``[N, H, W, 3]`` with ``labels`` a list of N strings, or a folder (then
    ``labels`` is None for ``<label>/*.jpg`` sub-folders, or a ``file,label`` CSV path).
    Adam, random flips, ImageNet normalisation (what :class:`TeacherConfig` assumes)."""
    if isinstance(images, (str, Path)):
        images, labels = load_image_set(images, labels, image_size)
    if labels is None or len(labels) != len(images):
        raise ValueError(f"train_teacher: {len(images)} images but "
                         f"{None if labels is None else len(labels)} labels")
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(l) for l in labels])
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    torch.manual_seed(seed)
    model = build_arch(arch, len(classes))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            xb = x[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            opt.zero_grad()
            F.cross_entropy(model(xb), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float(torch.cat([model(xb).argmax(1) for xb in x.split(batch_size)]).eq(y).float().mean())
    out = Path(out_path).with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    ts, sd, meta = Path(f"{out}.pt"), Path(f"{out}.state.pt"), Path(f"{out}.json")
    with warnings.catch_warnings():                    # TorchScript is deprecated, still works
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.trace(model, x[:1])
        for path, save in ((ts, lambda p: torch.jit.save(scripted, p)),
                           (sd, lambda p: torch.save(model.state_dict(), p)),
                           (meta, lambda p: Path(p).write_text(json.dumps(
                               {"arch": arch, "classes": classes, "image_size": image_size,
                                "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "train_accuracy": acc})))):
            tmp = path.with_name(path.name + ".tmp")   # atomic: write, then rename
            save(str(tmp))
            tmp.replace(path)
    return TeacherResult(ts, sd, meta, classes, acc)
