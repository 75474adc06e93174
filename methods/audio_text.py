"""Audio-text triplet: word audio and its spelling meet in one embedding space.

Bengio & Heigold, "Word Embeddings for Speech Recognition", Interspeech 2014. An acoustic
CNN embeds a spoken word; a second network embeds the word's spelling from its bag of letter
n-grams (with word-boundary markers); training ranks the right word above a wrong one:
"max(0, m - s(a, w+) + s(a, w-))" (triplet ranking loss). Scores here are cosine similarities.

* audio side: tympan's :class:`~tympan.methods.encoders.ConvEncoder2d` on a log-mel crop;
* word side: letter n-grams n = 1..3 of ``"#" + word + "#"`` (spaces are boundaries too),
  hashed (CRC-32) into ``vocab_size`` count buckets, then a ``word_layers``-layer MLP (3 linear
  layers, ReLU between, as Bengio & Heigold 2014's letter-n-gram network; ``word_layers=2`` is
  tympan's earlier one-hidden-layer MLP);
* wrong words: the sampler draws one per clip from another clip of the local batch with a
  different transcript (Bengio & Heigold's one wrong word per example); with
  ``batch_negatives`` every differently-spelled word of the **global** batch (gathered from
  all workers with gradients) is a wrong word too, and each anchor averages its hinges.

**Two-stage recipe** (``recipe: two-stage``, the paper's): Bengio & Heigold first train the
acoustic CNN as a *word classifier* (softmax over the training vocabulary) and take its
acoustic embedding from that network; only then is the letter-n-gram network trained with the
ranking loss to meet it. Here the classifier is the audio encoder (-> ``embed_dim``) plus a
linear softmax layer over ``word_classes`` classes, a word's class being the CRC-32 of its
transcript modulo ``word_classes`` (no vocabulary file; with far fewer words than classes,
e.g. the keyword corpus's 35 in 1024, collisions are rare and only merge two words' classes).
For the first ``classifier_steps`` training steps the loss is that cross-entropy; after them
the ranking loss below, with both towers training (whether the paper froze the CNN in stage
two is not verified here). The count of training-mode ``loss`` calls (one per train step)
lives in a buffer, so a resumed run stays in its stage; the classifier layer stays in the
checkpoint, unused by the embeddings, which are the encoder output (the layer under the
softmax). Note: stage one uses the transcripts as **word labels**: it is the paper's
supervised recipe, not a self-supervised one. ``recipe: scratch`` trains the audio encoder with the ranking loss only
from the start (tympan's earlier recipe).

Needs ``clip.meta["transcript"]`` (the spoken-word corpus has it); a clip without one is an
error naming it.

Batch (B = len(clips); V = vocab_size)::

    {"audio":      float32 [B, T, F]   # log-mel of a crop_s crop (loop-padded if shorter)
     "word":       float32 [B, V]      # letter n-gram counts of the clip's transcript
     "wrong_word": float32 [B, V]      # ... of a different word
     "word_class": int64   [B]}        # CRC-32(transcript) % word_classes (two-stage recipe)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tympan.config import check
from tympan.datasets.clip import Clip
from tympan.datasets.frontend import Frontend, FrontendConfig, frontend_numpy
from tympan.methods.base import Method, OptimConfig
from tympan.methods.dist import Dist
from tympan.methods.encoders import ConvEncoder2d
from tympan.methods.l3 import crop_at, sliding_windows
from tympan.methods.losses import ranking_triplet

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def letter_ngrams(word: str, n_max: int = 3) -> list[str]:
    """Letter n-grams (n = 1..n_max) of ``#word#``; spaces become boundary markers."""
    s = "#" + "#".join(word.lower().split()) + "#"
    return [s[i:i + n] for n in range(1, n_max + 1) for i in range(len(s) - n + 1)]


def ngram_vector(word: str, vocab_size: int, n_max: int = 3) -> np.ndarray:
    """Hashed letter n-gram counts: float32 ``[vocab_size]`` (CRC-32: stable across runs)."""
    v = np.zeros(vocab_size, dtype=np.float32)
    for g in letter_ngrams(word, n_max):
        v[zlib.crc32(g.encode("utf-8")) % vocab_size] += 1.0
    return v


def audio_text_ranking(audio: Tensor, word: Tensor, wrong: Tensor, word_counts: Tensor,
                       margin: float, *, gather: Callable[[Tensor], Tensor] | None = None,
                       batch_negatives: bool = True) -> Tensor:
    """Triplet ranking loss on cosine scores; mean over the local anchors.

    ``audio``, ``word``, ``wrong`` ``[B, D]`` embeddings (row i of ``word`` is clip i's own
    word); ``word_counts`` ``[B, V]`` the n-gram inputs, used only to tell which pool words
    are spelled differently. Anchor i's hinges: its sampled wrong word and, with
    ``batch_negatives``, every pool word (global batch via ``gather``) spelled differently
    from its own; the anchor's loss is their mean. Averaging the per-rank losses gives the
    loss of the concatenated batch (as :mod:`tympan.methods.losses`)."""
    a, w, wn = (F.normalize(x, dim=-1) for x in (audio, word, wrong))
    s_pos = (a * w).sum(-1)                                        # [B]
    s_wrong = (a * wn).sum(-1)                                     # [B]
    if not batch_negatives:
        return ranking_triplet(s_pos, s_wrong, margin)
    pool = w if gather is None else gather(w)                      # [N, D]
    counts = word_counts if gather is None else gather(word_counts)   # [N, V]
    wc = word_counts.float()
    d2 = (wc.pow(2).sum(1, keepdim=True) + counts.float().pow(2).sum(1)[None, :]
          - 2.0 * wc @ counts.float().T)                           # [B, N] squared distances
    differ = (d2 > 0.5).to(a.dtype)                                # counts are integers
    hinge_pool = F.relu(margin - s_pos[:, None] + a @ pool.T) * differ   # [B, N]
    hinge_wrong = F.relu(margin - s_pos + s_wrong)                 # [B]
    return ((hinge_wrong + hinge_pool.sum(1)) / (1.0 + differ.sum(1))).mean()


@dataclass
class AudioTextConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)   # log-mel 64
    crop_s: float = 1.0               # keyword clips (Speech Commands) are 1 s
    width: float = 1.0                # ConvEncoder2d channel multiplier
    embed_dim: int = 128              # joint audio/word space (unverified)
    vocab_size: int = 16384           # hash buckets for letter n-grams
    ngram_max: int = 3                # Bengio & Heigold: letter n-grams up to 3
    word_hidden: int = 256
    word_layers: int = 3              # Bengio & Heigold: 3-layer MLP over letter n-grams
    margin: float = 0.5               # on cosine scores (unverified)
    batch_negatives: bool = True
    # Bengio & Heigold's recipe: word-classifier pretraining of the audio CNN, then ranking.
    recipe: Literal["two-stage", "scratch"] = "two-stage"
    classifier_steps: int = 2000      # stage-one steps (unverified: size it to the run)
    word_classes: int = 1024          # hashed word classes of the classifier
    embed_hop_s: float = 0.25
    batch_size: int = 64
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3))

    def __post_init__(self):
        check(self.crop_s > 0, "crop_s", self.crop_s, "must be positive")
        check(self.embed_dim > 0, "embed_dim", self.embed_dim, "must be positive")
        check(self.vocab_size >= 16, "vocab_size", self.vocab_size, "must be >= 16")
        check(self.ngram_max >= 1, "ngram_max", self.ngram_max, "must be >= 1")
        check(self.word_hidden > 0, "word_hidden", self.word_hidden, "must be positive")
        check(self.word_layers >= 1, "word_layers", self.word_layers, "must be >= 1")
        check(self.margin > 0, "margin", self.margin, "must be positive")
        check(self.embed_hop_s > 0, "embed_hop_s", self.embed_hop_s, "must be positive")
        check(self.batch_size >= 2, "batch_size", self.batch_size, "must be >= 2 (wrong words)")
        check(self.recipe in ("two-stage", "scratch"), "recipe", self.recipe,
              "must be 'two-stage' (Bengio & Heigold) or 'scratch'")
        check(self.classifier_steps >= 0, "classifier_steps", self.classifier_steps, "must be >= 0")
        check(self.word_classes >= 2, "word_classes", self.word_classes, "must be >= 2")

    @property
    def crop_samples(self) -> int:
        return int(round(self.crop_s * self.frontend.sample_rate))


def word_class(word: str, n_classes: int) -> int:
    """The classifier class of a (normalised) transcript: CRC-32 modulo ``n_classes``."""
    return zlib.crc32(word.encode("utf-8")) % n_classes


def _transcript(clip: Clip) -> str:
    t = clip.meta.get("transcript")
    if not isinstance(t, str) or not t.strip():
        raise ValueError(f"audio-text: clip {clip.clip_id!r} has no meta['transcript'] "
                         f"(got {t!r}); the method needs word transcripts")
    return " ".join(t.lower().split())


def sample_audio_text_views(cfg: AudioTextConfig, clips: Sequence[Clip],
                            rng: np.random.Generator) -> dict[str, np.ndarray]:
    words = [_transcript(c) for c in clips]
    n = cfg.crop_samples
    crops = np.empty((len(clips), n), dtype=np.float32)
    wrong = []
    for i, clip in enumerate(clips):
        audio = np.asarray(clip.audio, dtype=np.float32)
        crops[i] = crop_at(audio, int(rng.integers(max(len(audio) - n, 0) + 1)), n)
        others = [w for w in words if w != words[i]]
        if others:
            wrong.append(others[int(rng.integers(len(others)))])
        else:   # the whole batch says one word: a random letter string stands in
            fake = words[i]
            while fake == words[i]:
                fake = "".join(rng.choice(list(_LETTERS), size=max(2, len(words[i]))))
            wrong.append(fake)
    vec = lambda w: ngram_vector(w, cfg.vocab_size, cfg.ngram_max)    # noqa: E731
    return {"audio": frontend_numpy(cfg.frontend, crops),              # [B, T, F]
            "word": np.stack([vec(w) for w in words]),                 # [B, V]
            "wrong_word": np.stack([vec(w) for w in wrong]),           # [B, V]
            "word_class": np.asarray([word_class(w, cfg.word_classes) for w in words],
                                     dtype=np.int64)}                  # [B]


def _zero_use(module: nn.Module) -> Tensor:
    """0 x the sum of ``module``'s parameters: marks them used (zero gradient) for DDP."""
    return sum(p.sum() for p in module.parameters()) * 0.0


class AudioText(Method):
    name = "audio-text"
    config_cls = AudioTextConfig
    sample_views = staticmethod(sample_audio_text_views)

    def __init__(self, cfg: AudioTextConfig | None = None):
        super().__init__(cfg)
        cfg = self.cfg
        self.frontend = Frontend(cfg.frontend)
        self.audio_encoder = ConvEncoder2d(dim=cfg.embed_dim, width=cfg.width)
        sizes = [cfg.vocab_size] + [cfg.word_hidden] * (cfg.word_layers - 1) + [cfg.embed_dim]
        layers: list[nn.Module] = []
        for k, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers += [nn.Linear(d_in, d_out)] + ([nn.ReLU(inplace=True)] if k < len(sizes) - 2 else [])
        self.word_encoder = nn.Sequential(*layers)
        # Stage one of the two-stage recipe: a softmax word classifier on the audio embedding.
        self.word_classifier = (nn.Linear(cfg.embed_dim, cfg.word_classes)
                                if cfg.recipe == "two-stage" else None)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before the two-stage recipe: no classifier, no step count; they
        # were trained with the ranking loss, so they load as past stage one.
        if f"{prefix}steps_done" not in state_dict:
            state_dict[f"{prefix}steps_done"] = torch.tensor(self.cfg.classifier_steps)
            if self.word_classifier is not None:
                for k, v in self.word_classifier.state_dict().items():
                    state_dict.setdefault(f"{prefix}word_classifier.{k}", v)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def in_classifier_stage(self) -> bool:
        return self.cfg.recipe == "two-stage" and int(self.steps_done) < self.cfg.classifier_steps

    @property
    def embedding_dim(self) -> int:
        return self.cfg.embed_dim

    def embed_word(self, word: str) -> Tensor:
        """A spelling -> its ``[embed_dim]`` vector in the joint space (for word look-ups)."""
        v = torch.from_numpy(ngram_vector(word, self.cfg.vocab_size, self.cfg.ngram_max))
        return self.word_encoder(v.to(next(self.parameters()).device)[None])[0]

    def loss(self, batch: dict[str, Tensor], dist: Dist = Dist()) -> tuple[Tensor, dict[str, float]]:
        audio = self.audio_encoder(batch["audio"].float())             # [B, D]
        stage_one = self.in_classifier_stage
        if self.training:
            self.steps_done += 1                                       # one loss per train step
        if stage_one:
            logits = self.word_classifier(audio)                       # [B, word_classes]
            target = batch["word_class"].long()
            acc = (logits.argmax(1) == target).float().mean()
            # + 0 x the word tower: DDP (find_unused_parameters off) needs every parameter used
            loss = F.cross_entropy(logits, target) + _zero_use(self.word_encoder)
            return loss, {"word_accuracy": float(acc), "stage": 1.0}
        word, wrong = batch["word"].float(), batch["wrong_word"].float()
        w_emb = self.word_encoder(torch.cat([word, wrong]))            # [2B, D]
        w_pos, w_neg = w_emb.split(word.shape[0])
        gather = dist.gather if dist.world_size > 1 else None
        loss = audio_text_ranking(audio, w_pos, w_neg, word, self.cfg.margin, gather=gather,
                                  batch_negatives=self.cfg.batch_negatives)
        if self.word_classifier is not None:                           # unused now (DDP)
            loss = loss + _zero_use(self.word_classifier)
        with torch.no_grad():
            a, p, n = (F.normalize(x, dim=-1) for x in (audio, w_pos, w_neg))
            acc = ((a * p).sum(-1) > (a * n).sum(-1)).float().mean()
        return loss, {"rank_accuracy": float(acc), "stage": 2.0}

    @torch.no_grad()
    def embed_frames(self, wave: Tensor, chunk: int = 256) -> tuple[Tensor, Tensor]:
        """``[B, n]`` -> (audio embeddings of crop_s windows every embed_hop_s ``[B, W, D]``,
        centre times ms ``[B, W]``)."""
        win = self.cfg.crop_samples
        hop = max(1, int(round(self.cfg.embed_hop_s * self.cfg.frontend.sample_rate)))
        windows, times = sliding_windows(wave.float(), win, hop, self.cfg.frontend.sample_rate)
        b, w = windows.shape[:2]
        flat = windows.reshape(b * w, win)
        out = torch.cat([self.audio_encoder(self.frontend(flat[i:i + chunk]))
                         for i in range(0, b * w, chunk)])
        return out.reshape(b, w, -1), times.expand(b, w)
