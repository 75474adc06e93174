"""The method registry: ``tympan pretrain --method NAME`` looks names up here, nowhere else.

Entries are ``"module:Class"`` strings imported on first use, so listing the methods (CLI
help, config validation) does not import every model's dependencies.
"""

from __future__ import annotations

import importlib
from typing import Any

METHODS: dict[str, str] = {
    "audio2vec-cbow": "tympan.methods.audio2vec:Audio2VecCBoW",
    "audio2vec-skipgram": "tympan.methods.audio2vec:Audio2VecSkipGram",
    "temporal-gap": "tympan.methods.temporal_gap:TemporalGap",
    "triplet": "tympan.methods.triplet:Triplet",
    "cola": "tympan.methods.cola:COLA",
    "l3": "tympan.methods.l3:L3",
    "soundnet": "tympan.methods.soundnet:SoundNet",
    "audio-word2vec": "tympan.methods.audio_word2vec:AudioWord2Vec",
    "audio-text": "tympan.methods.audio_text:AudioText",
}


class UnknownMethodError(KeyError):
    def __str__(self) -> str:
        return f"unknown method {self.args[0]!r}; known: {', '.join(METHODS)}"


def get_method(name: str) -> type:
    """Method class for a registry name."""
    if name not in METHODS:
        raise UnknownMethodError(name)
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_method(name: str, cfg: Any = None):
    cls = get_method(name)
    return cls(cfg if cfg is not None else cls.config_cls())


def load_method(payload_or_path: Any, map_location: str = "cpu"):
    """Rebuild a method from :meth:`Method.payload` (or a file holding one)."""
    import torch

    from tympan.methods.base import config_from_dict

    payload = payload_or_path
    if not isinstance(payload, dict):
        payload = torch.load(str(payload_or_path), map_location=map_location, weights_only=True)
    cls = get_method(payload["method"])
    model = cls(config_from_dict(cls.config_cls, payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval()
