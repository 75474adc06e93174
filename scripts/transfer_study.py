"""Does pretraining transfer? Every method pretrained at one budget, then scored by
``tympan evaluate``'s code against its own random init and log-mel statistics (docs/results.md).

Three steps, so that the pretraining can run where the compute is (a GPU machine with no Ray,
no decoders and no Debian corpus) and the evaluation where the corpus is:

    python scripts/transfer_study.py pack data/offline runs/transfer/pack.npz
    python scripts/transfer_study.py train runs/transfer/pack.npz --out runs/transfer/models \
        --steps 3000 --batch 64 --device cuda --jobs 9
    python scripts/transfer_study.py eval data/offline --models runs/transfer/models \
        --out runs/transfer/eval

``pack`` decodes the offline corpus's unlabelled pretraining mixes (and, for L3 and SoundNet, the
audio-visual training clips with their frames and the picture set the SoundNet teacher learns
from) into one file of arrays. ``train`` pretrains each method in its own process on random
batches of those clips (:func:`tympan.demo.pretrain_in_process`, the code the demo's tests use)
and saves ``<method>.pt`` (float16 weights, to travel) with its loss curve. ``eval`` runs
:func:`tympan.distributed.evaluate.evaluate` on each model and writes one table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import torch

# audio-text is missing: it needs word transcripts, which the offline pretraining mixes lack.
AUDIO_METHODS = ["audio2vec-cbow", "audio2vec-skipgram", "temporal-gap", "triplet", "cola",
                 "audio-word2vec"]
AV_METHODS = ["l3", "soundnet"]
TASKS = ["speech_music_noise", "pitch", "keywords", "speaker_id", "scenes", "bird_detection"]


# ---- pack ---------------------------------------------------------------------------------------

def pack(corpus: Path, out: Path, av_frames: int, frame_size: int, teacher_size: int) -> None:
    from tympan.datasets.shards import decode_record, iter_records, list_shards
    from tympan.distributed.sources import AVPlan, Bad, parse_data_uri

    shards = list_shards(str(corpus / "pretrain" / "shards"))
    audio, ids, transcripts = [], [], []
    for uri in shards:
        with open(uri, "rb") as f:
            for key, members in iter_records(f, uri):
                c = decode_record(key, members, uri, frames=False)
                audio.append(np.clip(np.round(c.audio * 32767), -32768, 32767).astype(np.int16))
                ids.append(c.clip_id)
                transcripts.append(str(c.meta.get("transcript") or ""))
    n = min(len(a) for a in audio)
    arrays = {"audio": np.stack([a[:n] for a in audio]), "ids": np.array(ids),
              "transcripts": np.array(transcripts)}

    plan = AVPlan(parse_data_uri(f"offline-av:{corpus}"), 0, 8, fps=1.0)
    av_audio, av_frames_, av_ids = [], [], []
    for unit in range(plan.units_per_epoch):
        for c in plan.clips(unit, frames=True):
            if isinstance(c, Bad) or c.frames is None or len(c.frames) == 0:
                continue
            fr = torch.from_numpy(c.frames[:av_frames]).permute(0, 3, 1, 2).float()
            fr = torch.nn.functional.interpolate(fr, size=(frame_size, frame_size), mode="bilinear",
                                                 antialias=True)
            fr = fr.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
            if len(fr) < av_frames:
                fr = np.concatenate([fr, fr[np.arange(av_frames - len(fr)) % len(fr)]])
            av_audio.append(np.clip(np.round(c.audio * 32767), -32768, 32767).astype(np.int16))
            av_frames_.append(fr)
            av_ids.append(c.clip_id)
    m = min(len(a) for a in av_audio)
    arrays.update(av_audio=np.stack([a[:m] for a in av_audio]), av_frames=np.stack(av_frames_),
                  av_ids=np.array(av_ids))

    from tympan.methods.teacher import load_image_set
    images, labels = load_image_set(str(corpus / "av" / "images"),
                                    str(corpus / "av" / "images" / "labels.csv"), teacher_size,
                                    split="train")
    arrays.update(teacher_images=np.asarray(images, dtype=np.uint8), teacher_labels=np.array(labels))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"{out}: {len(ids)} pretraining clips of {n / 16000:.1f} s, {len(av_ids)} AV clips x "
          f"{av_frames} frames of {frame_size}px, {len(labels)} teacher pictures; "
          f"{out.stat().st_size / 2**20:.1f} MiB")


def pools(corpus: Path, out: Path, utterances_per_voice: int, melodies: int, seed: int) -> None:
    """What the offline pretraining mixer draws from, made portable: its recorded FLAC pools
    copied, and its two live synthesizers (espeak-ng speech, General-MIDI melodies) rendered
    ahead into FLAC pools, so that fresh mixes can be made where neither tool is installed."""
    import shutil

    import soundfile as sf

    from tympan.datasets.offline.music import render_melody
    from tympan.datasets.offline.speech import speak

    src = json.loads((corpus / "pretrain" / "sources.json").read_text())
    rng = np.random.default_rng(seed)
    (out / "flac").mkdir(parents=True, exist_ok=True)
    recordings = {}
    for kind, items in src["recordings"].items():
        recordings[kind] = []
        for i, item in enumerate(items):
            name = f"{kind}-{i:04d}.flac"
            shutil.copyfile(item["flac"], out / "flac" / name)
            recordings[kind].append({**item, "flac": name})
    rendered = {"espeak": [], "melody": []}
    for v in src.get("espeak", []):
        for text in v["texts"][:utterances_per_voice]:
            x = speak(text, voice=v["voice"], variant=v["variant"], speed=int(rng.integers(130, 190)),
                      pitch=int(rng.integers(25, 80)))
            name = f"espeak-{len(rendered['espeak']):04d}.flac"
            sf.write(out / "flac" / name, x, 16000)
            rendered["espeak"].append({"flac": name, "voice": f"{v['voice']}+{v['variant']}"})
    programs = src.get("programs", [])
    for i in range(melodies if programs else 0):
        p = int(programs[i % len(programs)])
        x = render_melody(rng, p, src["soundfont"], 10.0)
        name = f"melody-{i:04d}.flac"
        sf.write(out / "flac" / name, x, 16000)
        rendered["melody"].append({"flac": name, "program": p})
    (out / "sources.json").write_text(json.dumps({**src, "recordings": recordings, **rendered}))
    size = sum(f.stat().st_size for f in (out / "flac").iterdir())
    print(f"{out}: {sum(len(v) for v in recordings.values())} recordings, "
          f"{len(rendered['espeak'])} utterances, {len(rendered['melody'])} melodies; {size / 2**20:.1f} MiB")


def live_mixer(pools_dir: Path):
    """The offline corpus's own :class:`PretrainMixer` over a :func:`pools` folder: recorded
    sources as they are, espeak-ng and melodies drawn from the rendered pools."""
    import soundfile as sf

    from tympan.datasets.offline.mix import chain_to, crop_to
    from tympan.datasets.offline.pretrain import PretrainMixer

    src = json.loads((pools_dir / "sources.json").read_text())
    for items in src["recordings"].values():
        for item in items:
            item["flac"] = str(pools_dir / "flac" / item["flac"])
    speech_pool, melody_pool = src.pop("espeak"), src.pop("melody")
    src["espeak"], src["programs"] = [], []

    class Live(PretrainMixer):
        def _speech(self, rng, n, meta):
            if speech_pool and rng.random() < self.cfg.p_espeak:
                first = speech_pool[int(rng.integers(len(speech_pool)))]
                same = [u for u in speech_pool if u["voice"] == first["voice"]]
                pieces = [sf.read(str(pools_dir / "flac" / same[int(rng.integers(len(same)))]["flac"]),
                                  dtype="float32")[0] for _ in range(2)]
                meta["voices"].append(first["voice"])
                return chain_to(rng, pieces, n, gap_s=(0.3, 1.5))[0]
            return super()._speech(rng, n, meta)

        def _music(self, rng, n, meta):
            if melody_pool and rng.random() < self.cfg.p_melody:
                m = melody_pool[int(rng.integers(len(melody_pool)))]
                meta["programs"].append(m["program"])
                return crop_to(rng, sf.read(str(pools_dir / "flac" / m["flac"]), dtype="float32")[0], n)
            return super()._music(rng, n, meta)

    return Live(src)


def _mix_range(pools_dir: str, seed: int, start: int, stop: int) -> np.ndarray:
    mixer = live_mixer(Path(pools_dir))
    return np.stack([np.clip(np.round(mixer.generate_clip(seed, i).audio * 32767), -32768, 32767)
                     .astype(np.int16) for i in range(start, stop)])


def mix_clips(pools_dir: Path, n: int, out: Path, jobs: int, seed: int = 7) -> None:
    """``n`` fresh mixes (stream ``seed``, not the corpus's seed 0) into one int16 .npy."""
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.perf_counter()
    bounds = np.linspace(0, n, 4 * jobs + 1).astype(int)
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        parts = list(pool.map(_mix_range, [str(pools_dir)] * (len(bounds) - 1), [seed] * (len(bounds) - 1),
                              bounds[:-1], bounds[1:]))
    np.save(out, np.concatenate(parts))
    print(f"{n} live mixes in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)


def _clips(packed, method: str, live: str | None = None):
    from tympan.datasets.clip import Clip

    if method in AV_METHODS:
        k = packed["av_frames"].shape[1]
        dur = packed["av_audio"].shape[1] / 16000
        times = (np.arange(k) + 0.5) * dur / k
        return [Clip(str(i), a.astype(np.float32) / 32767, frames=f, frame_times=times)
                for i, a, f in zip(packed["av_ids"], packed["av_audio"], packed["av_frames"])]
    if live:
        audio = np.load(live, mmap_mode="r")
        return [Clip(f"live-{i}", audio[i].astype(np.float32) / 32767) for i in range(len(audio))]
    return [Clip(str(i), a.astype(np.float32) / 32767, meta={"transcript": str(t)})
            for i, a, t in zip(packed["ids"], packed["audio"], packed["transcripts"])
            if method != "audio-text" or str(t).strip()]      # as the pipeline drops them


# ---- train --------------------------------------------------------------------------------------

def _overrides(method: str, args, teacher: str | None) -> list[str]:
    o = [] if method == "audio-word2vec" else [f"width={args.width}"]
    if method == "audio-text":
        o.append(f"classifier_steps={args.steps // 4}")     # two stages inside the budget
    if method == "soundnet":
        o += [f"teacher.path={teacher}", f"teacher.image_size={args.teacher_size}",
              f"n_classes={args.teacher_classes}"]
    if method == "l3":
        o.append(f"image_size={args.frame_size}")
    return o + list(args.set.get(method, []))


def _train_one(label: str, args, teacher: str | None) -> dict:
    """``label``: a method name, or ``name=method`` for a variant with its own ``--set``."""
    from tympan.demo import pretrain_in_process

    name, _, method = label.partition("=")
    method = method or name

    torch.set_num_threads(args.threads)
    packed = np.load(args.pack)
    clips = _clips(packed, method, args.live_npy)
    overrides = _overrides(method, args, teacher) + list(args.set.get(name, [])) * (name != method)
    t0 = time.perf_counter()
    model, losses = pretrain_in_process(method, clips, steps=args.steps, batch_size=args.batch,
                                        seed=args.seed, overrides=overrides,
                                        log_every=max(1, args.steps // 10), device=args.device,
                                        max_seconds=args.max_seconds)
    seconds = time.perf_counter() - t0
    steps = len(losses)
    payload = model.payload()
    payload["state_dict"] = {k: (v.half() if v.is_floating_point() else v)
                             for k, v in payload["state_dict"].items()}
    torch.save(payload, str(Path(args.out) / f"{name}.pt"))
    every = max(1, steps // 20)
    curve = [float(np.mean(losses[i:i + every])) for i in range(0, steps, every)]
    return {"name": name, "method": method, "overrides": overrides, "steps": steps, "batch": args.batch,
            "clips": len(clips), "device": args.device,
            "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            "seconds": round(seconds, 1), "steps_per_s": round(steps / seconds, 2),
            "loss_curve": curve}


def _safe_train_one(method, args, teacher) -> dict:
    try:
        return _train_one(method, args, teacher)
    except Exception as e:       # one method's failure must not lose the others' results
        import traceback
        return {"name": method, "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()[-3000:]}


def train(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = None
    args.live_npy = None
    if args.live:
        args.live_npy = str(out / "live.npy")
        mix_clips(Path(args.live), args.live_clips, Path(args.live_npy), args.mix_jobs)
    if any(m.partition("=")[2] == "soundnet" or m == "soundnet" for m in args.methods):
        from tympan.methods.teacher import train_teacher
        packed = np.load(args.pack)
        classes = sorted(set(packed["teacher_labels"].tolist()))
        args.teacher_classes = len(classes)
        teacher = str(out / "teacher.pt")
        t0 = time.perf_counter()
        res = train_teacher(packed["teacher_images"], packed["teacher_labels"].tolist(),
                            out_path=teacher, image_size=args.teacher_size, epochs=args.teacher_epochs)
        print(f"teacher: {res} ({time.perf_counter() - t0:.0f} s)", flush=True)
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results = []
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_safe_train_one, m, args, teacher) for m in args.methods]
        for f in as_completed(futures):
            r = f.result()
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "traceback"}), flush=True)
            if "traceback" in r:
                print(r["traceback"], flush=True)
    (out / "train.json").write_text(json.dumps(results, indent=1))


# ---- eval ---------------------------------------------------------------------------------------

def evaluate_all(args) -> None:
    from tympan.distributed.evaluate import EvalConfig, evaluate, format_table

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    if args.table_only:
        print(table(summary, args.tasks))
        return
    for path in sorted(Path(args.models).glob("*.pt")):
        method = path.stem
        if method == "teacher" or (args.methods and method not in args.methods) or method in summary:
            continue
        t0 = time.perf_counter()
        rows = evaluate(str(path), [str(Path(args.corpus) / "tasks" / t) for t in args.tasks],
                        out / method,
                        EvalConfig(seeds=tuple(range(args.seeds)), backend="local",
                                   models=("pretrained", "random-init", "log-mel"),
                                   max_clips_per_split=args.max_clips_per_split), mlflow_run=False)
        summary[method] = {"rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
        print(f"== {method} ({summary[method]['seconds']} s)\n{format_table(rows)}", flush=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text(table(summary, args.tasks))
    print(table(summary, args.tasks))


def table(summary: dict, tasks) -> str:
    """One row per method: its pretrained and random-init task averages and the lead."""
    lines = ["| method | pretrained | random-init | lead | tasks won | log-mel |",
             "|---|---:|---:|---:|---:|---:|"]
    for method, s in summary.items():
        by = {(r["task"], r["model"]): r["mean"] for r in s["rows"]}
        ts = [t for t in tasks if (t, "pretrained") in by]
        p = np.mean([by[(t, "pretrained")] for t in ts])
        r = np.mean([by[(t, "random-init")] for t in ts])
        lm = np.mean([by[(t, "log-mel")] for t in ts])
        won = sum(by[(t, "pretrained")] > by[(t, "random-init")] for t in ts)
        lines.append(f"| {method} | {p:.3f} | {r:.3f} | {p - r:+.3f} | {won}/{len(ts)} | {lm:.3f} |")
    # Per task: pretrained (random-init mean ± std over its seeds).
    lines += ["", "| method | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for method, s in summary.items():
        by = {(r["task"], r["model"]): r for r in s["rows"]}
        cells = [f"{by[(t, 'pretrained')]['mean']:.3f} ({by[(t, 'random-init')]['mean']:.3f} ± "
                 f"{by[(t, 'random-init')]['std']:.3f})" if (t, "pretrained") in by else "-" for t in tasks]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("corpus", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--av-frames", type=int, default=4)
    p.add_argument("--frame-size", type=int, default=64)
    p.add_argument("--teacher-size", type=int, default=64)
    q = sub.add_parser("pools")
    q.add_argument("corpus", type=Path)
    q.add_argument("out", type=Path)
    q.add_argument("--utterances-per-voice", type=int, default=2)
    q.add_argument("--melodies", type=int, default=40)
    q.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train")
    t.add_argument("pack")
    t.add_argument("--out", required=True)
    t.add_argument("--methods", nargs="*", default=AUDIO_METHODS + AV_METHODS)
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--width", default="0.25")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-seconds", type=float, default=None, help="per method: stop early")
    t.add_argument("--live", default=None, help="a `pools` folder: train the audio methods on "
                   "--live-clips fresh mixes from it instead of the packed corpus mixes")
    t.add_argument("--live-clips", type=int, default=2000)
    t.add_argument("--mix-jobs", type=int, default=4)
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--jobs", type=int, default=1, help="methods trained at once (one process each)")
    t.add_argument("--threads", type=int, default=1, help="torch threads per process")
    t.add_argument("--frame-size", type=int, default=64)
    t.add_argument("--teacher-size", type=int, default=64)
    t.add_argument("--teacher-epochs", type=int, default=30)
    t.add_argument("--set", nargs="*", default=[], metavar="METHOD:KEY=VALUE",
                   help="extra overrides for one method, e.g. triplet:p_gain=1.0")
    e = sub.add_parser("eval")
    e.add_argument("corpus")
    e.add_argument("--models", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--methods", nargs="*", default=[])
    e.add_argument("--tasks", nargs="*", default=TASKS)
    e.add_argument("--seeds", type=int, default=3)
    e.add_argument("--max-clips-per-split", type=int, default=60)
    e.add_argument("--table-only", action="store_true", help="print the table of OUT/summary.json")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        pack(args.corpus, args.out, args.av_frames, args.frame_size, args.teacher_size)
    elif args.cmd == "pools":
        pools(args.corpus, args.out, args.utterances_per_voice, args.melodies, args.seed)
    elif args.cmd == "train":
        extra: dict[str, list[str]] = {}
        for s in args.set:
            m, kv = s.split(":", 1)
            extra.setdefault(m, []).append(kv)
        args.set = extra
        train(args)
    else:
        evaluate_all(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
