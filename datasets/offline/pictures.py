"""Pictures for the audio-visual corpus: emoji and tuxpaint photo cut-outs on random scenes.

A picture is an RGBA uint8 array [h, w, 4] whose alpha marks the object. :func:`render_frame`
composes it onto a background (solid colour or two-colour gradient) at a scale and a position
that drift slowly over the clip, so no two clips of one object look alike and a model must find
the object rather than memorise a frame (L3's frames come from varied real videos,
Arandjelovic & Zisserman 2017, arXiv 1705.08168). Everything about a frame is in
:class:`FrameParams`, which the corpus stores in the manifest, so a frame can be re-rendered
exactly from its row (the tests do this to check that a decoded frame shows its label).

Emoji come from fonts-noto-color-emoji, drawn with Pillow at size 109 (the bitmap strike size
of Noto Color Emoji) with ``embedded_color=True``.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tympan.datasets.offline.speech import OfflineToolError

EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_PACKAGE = "fonts-noto-color-emoji"
FRAME_SIZE = 224          # L3's image input is 224 x 224
PICTURE_MAX = 256         # pictures are stored at most this large (cut-outs can be 1000+ px)


@functools.lru_cache(maxsize=1)
def _emoji_font() -> ImageFont.FreeTypeFont:
    if not Path(EMOJI_FONT).exists():
        raise OfflineToolError(f"{EMOJI_FONT} not found: install the Debian package "
                               f"`{EMOJI_PACKAGE}` (apt-get install {EMOJI_PACKAGE})")
    return ImageFont.truetype(EMOJI_FONT, 109)


@functools.lru_cache(maxsize=None)
def emoji_picture(char: str) -> np.ndarray:
    """RGBA uint8 [h, w, 4] of one emoji, cropped to its opaque pixels."""
    im = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((8, 8), char, font=_emoji_font(), embedded_color=True)
    box = im.getbbox()
    if box is None:
        raise OfflineToolError(f"the emoji font has no glyph for {char!r} (U+{ord(char[0]):04X})")
    a = np.array(im.crop(box))
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=512)
def png_picture(path: str) -> np.ndarray:
    """RGBA uint8 [h, w, 4] of a PNG cut-out, cropped to its opaque pixels, at most 256 px."""
    with Image.open(path) as im:
        im = im.convert("RGBA")
        box = im.getchannel("A").point(lambda v: 255 if v > 16 else 0).getbbox()
        if box is None:
            raise ValueError(f"{path}: picture is fully transparent")
        im = im.crop(box)
        im.thumbnail((PICTURE_MAX, PICTURE_MAX), Image.Resampling.LANCZOS)
        a = np.array(im)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class FrameParams:
    """How a picture is placed in every frame of one clip (all fractions of the frame size)."""
    bg_top: tuple[int, int, int]       # background colour at the top ...
    bg_bottom: tuple[int, int, int]    # ... and bottom (equal: a solid background)
    scale: float                       # the picture's longer side / frame size
    x: float                           # picture centre at t=0, in [0, 1]
    y: float
    vx: float                          # drift per second
    vy: float
    size: int = FRAME_SIZE

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FrameParams":
        return cls(**{**d, "bg_top": tuple(d["bg_top"]), "bg_bottom": tuple(d["bg_bottom"])})


def sample_params(rng: np.random.Generator, size: int = FRAME_SIZE) -> FrameParams:
    top = tuple(int(v) for v in rng.integers(0, 256, 3))
    bottom = top if rng.random() < 0.5 else tuple(int(v) for v in rng.integers(0, 256, 3))
    scale = float(rng.uniform(0.35, 0.8))
    half = scale / 2
    return FrameParams(bg_top=top, bg_bottom=bottom, scale=round(scale, 4),
                       x=round(float(rng.uniform(half, 1 - half)), 4),
                       y=round(float(rng.uniform(half, 1 - half)), 4),
                       vx=round(float(rng.uniform(-0.05, 0.05)), 4),
                       vy=round(float(rng.uniform(-0.05, 0.05)), 4), size=size)


@functools.lru_cache(maxsize=64)
def _background(top: tuple, bottom: tuple, size: int) -> np.ndarray:
    w = np.linspace(0.0, 1.0, size)[:, None, None]
    bg = (1 - w) * np.array(top, dtype=np.float32) + w * np.array(bottom, dtype=np.float32)
    return np.broadcast_to(bg, (size, size, 3)).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _scaled(picture: bytes, shape: tuple, side: int) -> tuple[np.ndarray, np.ndarray]:
    im = Image.fromarray(np.frombuffer(picture, dtype=np.uint8).reshape(shape), "RGBA")
    h, w = shape[:2]
    f = side / max(h, w)
    im = im.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BILINEAR)
    a = np.asarray(im).astype(np.float32)
    return a[..., :3], a[..., 3:] / 255.0


def render_frame(picture: np.ndarray, p: FrameParams, t: float) -> np.ndarray:
    """The frame at time ``t`` seconds: uint8 [size, size, 3]."""
    size = p.size
    frame = _background(p.bg_top, p.bg_bottom, size).copy()
    rgb, alpha = _scaled(picture.tobytes(), picture.shape,
                         max(4, round(p.scale * size)))
    h, w = alpha.shape[:2]
    # drift, reflected at the borders so the picture stays inside the frame
    cx = _bounce(p.x + p.vx * t, w / 2 / size) * size
    cy = _bounce(p.y + p.vy * t, h / 2 / size) * size
    x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
    xa, ya = max(0, x0), max(0, y0)
    xb, yb = min(size, x0 + w), min(size, y0 + h)
    if xb > xa and yb > ya:
        a = alpha[ya - y0:yb - y0, xa - x0:xb - x0]
        frame[ya:yb, xa:xb] = a * rgb[ya - y0:yb - y0, xa - x0:xb - x0] + (1 - a) * frame[ya:yb, xa:xb]
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def _bounce(v: float, margin: float) -> float:
    lo, hi = margin, 1.0 - margin
    if hi <= lo:
        return 0.5
    span = hi - lo
    q = np.mod(v - lo, 2 * span)
    return float(lo + (q if q <= span else 2 * span - q))
