"""The offline audio-visual corpus: mp4 clips whose picture shows what is heard.

L3-style pretraining (Arandjelovic & Zisserman 2017, arXiv 1705.08168; Cramer et al., ICASSP
2019) learns from the natural correspondence of a video's frames and its sound; SoundNet
(Aytar et al. 2016, arXiv 1610.09001) distils an image classifier into an audio network. Both
need pictures that match sounds. Offline, three kinds of clips provide them:

| kind             | picture                              | sound                                    |
|------------------|--------------------------------------|------------------------------------------|
| emoji_instrument | Noto emoji of an instrument          | a melody on a matching GM program (FluidR3) |
| emoji_spoken     | Noto emoji of an animal / vehicle    | its name spoken by an espeak-ng voice    |
| tuxpaint_sound   | tuxpaint-stamps-default photo cut-out | the stamp's real recording               |
| tuxpaint_name    | tuxpaint-stamps-default photo cut-out | a real person saying its name (12 languages) |

Each clip places the picture on a random background at a random scale and position, drifting
(:mod:`pictures`). Objects, not clips, are split: valid/test objects never appear in
train. Output under ``out_dir``::

    av/clips/<split>/<clip_id>.mp4       H.264 (yuv420p) + AAC mono 16 kHz
    manifests/av.parquet                 one row per clip (video_source = the mp4), meta holds
                                         the frame parameters so a frame can be re-rendered
    av/images/<split>/<label>/<id>.jpg   image classification set of the train-side objects
    av/images/labels.csv                 path,label,split
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image

from tympan.datasets.manifest import make_row, write_manifest
from tympan.datasets.offline.av_objects import AVObject, catalogue, clip_audio, picture_of
from tympan.datasets.offline.pictures import FrameParams, render_frame, sample_params
from tympan.datasets.offline.scales import AVScale

SR = 16000
log = logging.getLogger(__name__)


def write_mp4(path: str | Path, frames: list[np.ndarray], fps: int, audio: np.ndarray) -> None:
    """Write RGB uint8 frames [H, W, 3] and float32 mono 16 kHz audio as H.264 + AAC, atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    h, w = frames[0].shape[:2]
    with av.open(str(tmp), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": "20", "preset": "veryfast"}
        as_ = c.add_stream("aac", rate=SR, layout="mono")
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = i
            for pkt in vs.encode(vf):
                c.mux(pkt)
        for pkt in vs.encode():
            c.mux(pkt)
        af = av.AudioFrame.from_ndarray(audio.astype(np.float32)[None, :], format="flt",
                                        layout="mono")
        af.sample_rate, af.pts = SR, 0
        for pkt in as_.encode(af):
            c.mux(pkt)
        for pkt in as_.encode():
            c.mux(pkt)
    os.replace(tmp, path)


def split_objects(rng: np.random.Generator, objects: list[AVObject]) -> dict[str, str]:
    """object label -> split; per kind 70/10/20 %, at least one valid and one test object."""
    out: dict[str, str] = {}
    kinds = sorted({o.source for o in objects})
    for kind in kinds:
        labels = sorted({o.label for o in objects if o.source == kind})
        rng.shuffle(labels)
        n_te = max(1, round(0.2 * len(labels)))
        n_va = max(1, round(0.1 * len(labels)))
        for i, lab in enumerate(labels):
            out.setdefault(lab, "test" if i < n_te else "valid" if i < n_te + n_va else "train")
    return out


def build_av_corpus(out_dir: str | Path, scale: AVScale, seed: int = 0,
                    cache_dir: str | Path | None = None, *,
                    sources: tuple[str, ...] = ("emoji", "tuxpaint")) -> dict:
    """Build the AV clips, their manifest and the image set. Deterministic for a seed; a rerun
    keeps clips already written. Returns a summary dict (paths, counts, skipped clips)."""
    cfg = scale
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    rng = np.random.default_rng([seed, 5])
    objects = catalogue(sources, cache_dir, rng, cfg.tuxpaint_objects)
    splits = split_objects(rng, objects)

    plan = []   # (clip_id, object, split, frame params, audio rng seed)
    for o in objects:
        for k in range(cfg.clips_per_object):
            plan.append((f"{o.id}-{k}", o, splits[o.label], sample_params(rng),
                         int(rng.integers(2 ** 31))))
    audios, skipped = clip_audio([(o, s) for _, o, _, _, s in plan], cfg.clip_s, cache_dir)
    rows, counts = [], {"train": 0, "valid": 0, "test": 0}
    for (cid, o, split, params, _), audio in zip(plan, audios):
        if audio is None:
            continue
        a, audio_meta = audio
        path = out_dir / "av" / "clips" / split / f"{cid}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            pic = picture_of(o)
            frames = [render_frame(pic, params, i / cfg.fps)
                      for i in range(int(round(cfg.clip_s * cfg.fps)))]
            write_mp4(path, frames, cfg.fps, a)
        counts[split] += 1
        meta = {"kind": o.kind, "object": o.label, "group": o.label, "picture": o.picture,
                "audio": audio_meta, "frame": params.to_dict(), "fps": cfg.fps,
                "duration_s": cfg.clip_s}
        rows.append(make_row(f"av/{cid}", str(path.resolve()), labels=[o.label], split=split,
                             video_source=str(path.resolve()), meta=meta))
    manifest = write_manifest(rows, out_dir / "manifests" / "av.parquet")
    images = build_image_set(out_dir / "av" / "images", [o for o in objects
                                                          if splits[o.label] == "train"],
                             cfg.images_per_object, np.random.default_rng([seed, 6]))
    summary = {"manifest": str(manifest), "clips": len(rows), "splits": counts,
               "objects": {s: sorted({o.label for o in objects if splits[o.label] == s})
                           for s in ("train", "valid", "test")},
               "kinds": sorted({o.kind for o in objects}), "images": images,
               "skipped": skipped, "seconds": round(time.perf_counter() - t0, 2)}
    (out_dir / "av" / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    log.info("AV corpus: %d clips %s, %d skipped, %d images in %.1f s", len(rows), counts,
             len(skipped), images["n"], summary["seconds"])
    return summary


def build_image_set(root: Path, objects: list[AVObject], per_object: tuple[int, int, int],
                    rng: np.random.Generator) -> dict:
    """JPEG renders of each object on random scenes; split by render (the classes are the train
    objects, which a SoundNet-style teacher must recognise in train clips' frames)."""
    rows = []
    labels = sorted({o.label for o in objects})
    by_label = {lab: [o for o in objects if o.label == lab] for lab in labels}
    for lab in labels:
        for split, n in zip(("train", "valid", "test"), per_object):
            for k in range(n):
                o = by_label[lab][int(rng.integers(len(by_label[lab])))]
                p: FrameParams = sample_params(rng)
                rel = Path(split) / lab / f"{lab}-{k}.jpg"
                dst = root / rel
                if not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    tmp = dst.with_name(f".{dst.name}.tmp")
                    Image.fromarray(render_frame(picture_of(o), p, 0.0)).save(
                        tmp, format="JPEG", quality=90)
                    os.replace(tmp, dst)
                rows.append((str(rel), lab, split))
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows(rows)
    (root / "classes.txt").write_text("".join(f"{lab}\n" for lab in labels))
    return {"dir": str(root), "labels": str(root / "labels.csv"), "n": len(rows),
            "classes": len(labels)}
