"""The ``tympan`` command line. Every command is a thin function over library code; a bad
config is refused (exit 2) before any cluster resource is taken."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from tympan.config import ConfigError

# ---- command implementations (each imports its layer lazily so --help stays fast) --------

def _cmd_data_ingest(args: argparse.Namespace) -> int:
    from tympan.datasets.formats.registry import MetadataError, ingest
    from tympan.datasets.manifest import ManifestError
    from tympan.datasets.storage import StorageError

    options = {}
    if args.template:
        if args.format not in ("audioset", "vggsound"):
            print(f"tympan data ingest: --template applies to audioset/vggsound, not {args.format}",
                  file=sys.stderr)
            return 2
        options["templates"] = args.template
    if args.full_videos:
        if args.format != "audioset":
            print("tympan data ingest: --full-videos applies to audioset only", file=sys.stderr)
            return 2
        options["full_videos"] = True
    spectra = {"time_column": args.time_column, "bands": args.bands,
               "sensor_column": args.sensor_column, "period_s": args.period}
    given = [k for k, v in spectra.items() if v is not None] + (["split"] if args.split_by_sensor else [])
    if given and args.format != "spectra":
        print(f"tympan data ingest: {', '.join(given)} apply to spectra, not {args.format}", file=sys.stderr)
        return 2
    if args.format == "spectra":
        options.update({k: v for k, v in spectra.items() if v is not None})
        if args.split_by_sensor:
            options["split"] = "by-sensor"
    if args.split is not None:
        if args.format != "nsynth":
            print(f"tympan data ingest: --split applies to nsynth, not {args.format}",
                  file=sys.stderr)
            return 2
        options["split"] = args.split
    if args.allow_missing_lists:
        if args.format != "speechcommands":
            print("tympan data ingest: --allow-missing-lists applies to speechcommands only",
                  file=sys.stderr)
            return 2
        options["allow_missing_lists"] = True
    try:
        report = ingest(args.format, args.src, args.out, media=args.media, **options)
    except (MetadataError, ManifestError, StorageError) as e:
        print(f"tympan data ingest: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def _cmd_data_shard(args: argparse.Namespace) -> int:
    from tympan.datasets.manifest import ManifestError
    from tympan.datasets.storage import StorageError
    from tympan.distributed.sharding import format_summary, shard_manifest

    try:
        summary = shard_manifest(args.manifest, args.out, shard_size=args.shard_size,
                                 frames_per_second=args.frames_per_second,
                                 min_duration_s=args.min_duration, address=args.address)
    except (ManifestError, StorageError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        print(f"tympan data shard: {e}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from tympan.datasets.storage import StorageError
    from tympan.distributed.sharding import format_inspection, inspect_shards

    try:
        info = inspect_shards(args.uri)
    except (StorageError, FileNotFoundError) as e:
        print(f"tympan data inspect: {e}", file=sys.stderr)
        return 1
    print(format_inspection(info))
    return 0


def _cmd_data_offline(args: argparse.Namespace) -> int:
    from tympan.datasets.offline.build import build_offline
    from tympan.datasets.offline.debian import DebianSourceError
    try:
        report = build_offline(args.out, scale=args.scale, seed=args.seed, cache_dir=args.cache,
                               table_path=args.table)
    except DebianSourceError as e:
        print(f"tympan data offline: {e}", file=sys.stderr)
        return 2
    print(f"tasks: {len(report['tasks'])}, table: {args.out}/tasks.md, report: {args.out}/report.json")
    return 0


def _cmd_bench_data(args: argparse.Namespace) -> int:
    from tympan.distributed.bench import (REQUIRED_KEYS, BenchDataConfig, run_bench_data, to_json,
                                          write_markdown)

    cpus = tuple(int(c) for c in args.cpus.split(",")) if args.cpus else ()
    res = run_bench_data(BenchDataConfig(quick=args.quick, cpus=cpus, offline=args.offline,
                                         work=args.work, repeats=args.repeats, only=args.only))
    if args.json:
        with open(args.json, "w") as f:
            f.write(to_json(res))
    if args.only:             # one section: rewritten in place, the rest of the report kept
        from tympan.distributed.bench import spectra_section, write_spectra_section
        md = args.out or (None if args.quick else "docs/benchmarks.md")
        command = " ".join(["tympan bench data --only spectra", *filter(None, [
            "--quick" if args.quick else "", f"--repeats {args.repeats}" if args.repeats else ""])])
        if md:
            write_spectra_section(res, md, command)
        print("\n".join(spectra_section(res)))
        return 0
    md = args.out or (None if args.quick else "docs/benchmarks.md")
    if md:
        flags = [f"--cpus {args.cpus}" if args.cpus else "", f"--offline {args.offline}" if args.offline
                 else "", f"--repeats {args.repeats}" if args.repeats else ""]
        write_markdown(res, md, " ".join(["tympan bench data", *filter(None, flags)]))
    width = max(len(k) for k in REQUIRED_KEYS)
    for k in REQUIRED_KEYS:
        print(f"{k:<{width}}  {res[k]:.1f}")
    for k, v in res["ratios"].items():
        print(f"{k:<{width}}  {v:.2f}")
    if md:
        print(f"report: {md}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from tympan.config import build
    from tympan.demo import DemoConfig, run_demo

    from tympan.methods.registry import UnknownMethodError

    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    try:
        run_demo(build(DemoConfig, {}, overrides))
    except UnknownMethodError as e:
        print(f"tympan demo: {e}", file=sys.stderr)
        return 2
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from tympan.distributed.train import (PretrainError, RunSpec, load_run_record, parse_workers,
                                          pretrain, resolve_configs)
    from tympan.methods.registry import UnknownMethodError

    base, method, data = None, args.method, args.data
    if args.resume:
        out = args.out or (f"runs/{args.name}" if args.name else None)
        record = load_run_record(out) if out else None
        if record is not None:      # the stored configs, with this call's overrides on top
            base = {**record["method_cfg"], **record["train"]}
            method, data = method or record["method"], data or record["data"]
    for flag, value in (("--method", method), ("--data", data)):
        if not value:
            print(f"tympan pretrain: {flag} is required (a --resume finds it in the run's run.json)",
                  file=sys.stderr)
            return 2
    if getattr(args, "preset", None) == "sensor" and not args.resume:
        from tympan.methods.sensor import sensor_preset
        try:
            base = {**sensor_preset(method), **(base or {})}
        except KeyError as e:
            print(f"tympan pretrain: {e.args[0]}", file=sys.stderr)
            return 2
    try:
        train, method_cfg = resolve_configs(method, args.config, args.overrides, base=base)
    except UnknownMethodError as e:
        print(f"tympan pretrain: {e}", file=sys.stderr)
        return 2
    spec = RunSpec(method=method, data=data, workers=parse_workers(args.workers),
                   gpus_per_worker=args.gpus_per_worker, address=args.address, name=args.name,
                   out=args.out, storage=args.storage, tracking_uri=args.tracking_uri,
                   resume=args.resume)
    try:
        pretrain(spec, train, method_cfg)
    except PretrainError as e:
        print(f"tympan pretrain: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from tympan.distributed.checkpoint_ref import CheckpointError
    from tympan.distributed.embed import EmbedError, embed

    try:
        embed(args.checkpoint, args.data, args.out, timestamps=args.timestamps, backend=args.backend,
              part_size=args.part_size, num_actors=args.actors)
    except (CheckpointError, EmbedError) as e:
        print(f"tympan embed: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_bench_train(args: argparse.Namespace) -> int:
    from tympan.distributed.bench_train import (BenchTrainConfig, run_bench_train, to_json,
                                                write_markdown)

    res = run_bench_train(BenchTrainConfig(quick=args.quick, methods=tuple(args.methods or ()),
                                           steps=args.steps, work=args.work))
    if args.json:
        to_json(res, args.json)
    md = args.out or (None if args.quick else "docs/benchmarks.md")
    if md:
        flags = ["--quick" if args.quick else "", *(["--methods", *args.methods] if args.methods else [])]
        write_markdown(res, md, " ".join(["tympan bench train", *filter(None, flags)]))
        print(f"written to {md}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tympan.datasets.manifest import ManifestError
    from tympan.distributed.checkpoint_ref import CheckpointError
    from tympan.distributed.evaluate import EvalConfig, EvaluateError, evaluate

    cfg = EvalConfig(seeds=tuple(range(args.seeds)), models=tuple(m.strip() for m in args.models.split(",")),
                     backend=args.backend, max_clips_per_split=args.max_clips_per_split,
                     supervised_steps=args.supervised_steps)
    try:
        evaluate(args.checkpoint, args.tasks, args.out, cfg, tracking_uri=args.tracking_uri)
    except (CheckpointError, EvaluateError, ManifestError) as e:
        print(f"tympan evaluate: {e}", file=sys.stderr)
        return 1
    return 0


# ---- tympan tune --------------------------------------------------------------------------------

def _csv(kind):
    def parse(text: str):
        try:
            return tuple(kind(x.strip()) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of {kind.__name__}")
    return parse


def _study_options(args: argparse.Namespace, kind: str, default_name: str, settings: dict):
    from tympan.tuning.study import StudyOptions, settings_of

    name = args.name or default_name
    return StudyOptions(kind=kind, name=name, out=args.out or f"runs/tune/{name}",
                        corpus=args.corpus, address=args.address, tracking_uri=args.tracking_uri,
                        workers=args.workers, max_concurrent=args.max_concurrent,
                        settings=settings_of(**settings, workers=args.workers))


def _cmd_tune_grid(args: argparse.Namespace) -> int:
    from tympan.tuning.l3_design import GridSpec, run_grid

    kind = args.tune_command
    method = "l3" if kind == "l3-design" else args.method
    spec = GridSpec(method=method, inputs=args.inputs if kind == "l3-design" else (),
                    contents=args.content, sizes=args.sizes, seeds=args.seeds, steps=args.steps,
                    tasks=args.tasks, max_per_split=args.max_per_split,
                    overrides=tuple(args.overrides))
    default = "l3-design" if kind == "l3-design" else f"scaling-{method}"
    opts = _study_options(args, kind, default, {"spec": spec})
    run_grid(kind, spec, opts)
    return 0


def _cmd_tune_sweep(args: argparse.Namespace) -> int:
    from tympan.tuning.sweep import run_sweep

    settings = {"method": args.method, "space": str(args.space), "scheduler": args.scheduler,
                "samples": args.samples, "steps": args.steps, "val_every": args.val_every,
                "size": args.size, "overrides": list(args.overrides), "seed": args.seed}
    opts = _study_options(args, "sweep", f"sweep-{args.method}", settings)
    run_sweep(args.method, args.space, opts, scheduler=args.scheduler, samples=args.samples,
              steps=args.steps, val_every=args.val_every, size=args.size,
              overrides=tuple(args.overrides), seed=args.seed)
    return 0


def _add_tune_parsers(tsub) -> None:
    from tympan.tuning.data import CONTENTS, PROBE_TASKS   # no ray: keeps --help fast

    def common(p):
        p.add_argument("--corpus", default="data/offline",
                       help="built offline corpus; built at small scale when missing (default data/offline)")
        p.add_argument("--name", default=None, help="study name (default: the study kind)")
        p.add_argument("--out", default=None, help="study directory (default runs/tune/NAME)")
        p.add_argument("--address", default=None, help="Ray address (default: embedded / RAY_ADDRESS)")
        p.add_argument("--tracking-uri", default=None,
                       help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite in --out)")
        p.add_argument("--workers", type=int, default=1, help="Ray Train workers per trial (default 1)")
        p.add_argument("--max-concurrent", type=int, default=None,
                       help="trials at a time (default: as many as the cluster's CPUs hold)")
        p.add_argument("overrides", nargs="*",
                       help="key=value training/method config overrides for every trial "
                            "(e.g. width=0.5 image_size=224 optim.lr=1e-4)")

    def grid(p, with_inputs: bool):
        if with_inputs:
            p.add_argument("--inputs", type=_csv(str), default=("linear", "mel128", "mel256"),
                           help="input representations (default linear,mel128,mel256)")
        p.add_argument("--content", type=_csv(str), default=("all",),
                       help=f"pretraining content subsets, of {','.join(CONTENTS)} (AV methods; default all)")
        p.add_argument("--sizes", type=_csv(int), default=(8, 16, 32, 64),
                       help="pretraining clips per trial, nested subsets (default 8,16,32,64)")
        p.add_argument("--seeds", type=int, default=2, help="seeds per point (default 2)")
        p.add_argument("--steps", type=int, default=60, help="optimisation steps per trial (default 60)")
        p.add_argument("--tasks", type=_csv(str), default=PROBE_TASKS,
                       help=f"probe tasks (default {','.join(PROBE_TASKS)})")
        p.add_argument("--max-per-split", type=int, default=48,
                       help="probe clips per split, balanced over labels (default 48)")
        common(p)
        p.set_defaults(func=_cmd_tune_grid)

    grid(tsub.add_parser("l3-design", help="the 'Look, listen and learn more' design study "
                         "(input representation x content x pretraining clips)"), True)
    sc = tsub.add_parser("scaling", help="dataset-size saturation curve of any method")
    sc.add_argument("--method", required=True)
    grid(sc, False)

    sw = tsub.add_parser("sweep", help="hyper-parameter search with ASHA early stopping on val loss")
    sw.add_argument("--method", required=True)
    sw.add_argument("--space", required=True, help="search space YAML (key: value or {loguniform|"
                    "uniform|randint|choice|grid: [...]})")
    sw.add_argument("--scheduler", choices=["asha", "fifo"], default="asha")
    sw.add_argument("--samples", type=int, default=8, help="trials (per grid point) (default 8)")
    sw.add_argument("--steps", type=int, default=40, help="steps per trial (default 40)")
    sw.add_argument("--val-every", type=int, default=10, help="steps between val-loss reports (default 10)")
    sw.add_argument("--size", type=int, default=None, help="pretraining clips (default: the whole pool)")
    sw.add_argument("--seed", type=int, default=0, help="search and training seed (default 0)")
    common(sw)
    sw.set_defaults(func=_cmd_tune_sweep)


# ---- parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tympan",
        description="Self-supervised audio pretraining on Ray: data, pretraining, evaluation, studies.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="the main job on embedded defaults: corpus, pretrain, evaluate")
    demo.add_argument("--out", default=None, help="run directory (default: runs/demo)")
    demo.add_argument("overrides", nargs="*",
                      help="key=value overrides of the demo config (method, steps, batch_size, workers, scale, seed, tasks)")
    demo.set_defaults(func=_cmd_demo)

    data = sub.add_parser("data", help="corpora: ingest, shard, inspect, build the offline corpora")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    ing = dsub.add_parser("ingest", help="a corpus in its own format -> clip manifest (Parquet)")
    ing.add_argument("format", choices=["audioset", "esc50", "speechcommands", "nsynth", "vggsound",
                                        "hear", "folder", "spectra"])
    ing.add_argument("src", help="corpus directory or URI prefix")
    ing.add_argument("--out", required=True, help="manifest path (.parquet)")
    ing.add_argument("--media", default=None, help="media root; default: SRC (esc50, nsynth: SRC/audio)")
    ing.add_argument("--template", action="append", default=None, metavar="T",
                     help="media file-name template, repeatable, e.g. 'Y{ytid}.{ext}' "
                          "(audioset/vggsound; fields ytid, start, end, start_int, end_int, "
                          "start_ms, end_ms, start_06); default: the common layouts")
    ing.add_argument("--full-videos", action="store_true",
                     help="audioset media are whole videos: cut the segment window")
    ing.add_argument("--time-column", default=None, help="spectra: the timestamp column (default: time/timestamp/date)")
    ing.add_argument("--bands", default=None,
                     help="spectra: band columns, a comma list or a regex whose first group is the centre frequency in Hz")
    ing.add_argument("--sensor-column", default=None, help="spectra: sensor id column (default: the file name)")
    ing.add_argument("--period", type=float, default=None, help="spectra: frame period in s (default 0.125)")
    ing.add_argument("--split-by-sensor", action="store_true",
                     help="spectra: assign whole sensors to train/valid/test (80/10/10 by a stable hash)")
    ing.add_argument("--split", choices=["train", "valid", "test"], default=None,
                     help="nsynth: the split of a single folder whose name does not tell it "
                          "(default: from nsynth-train/valid/test)")
    ing.add_argument("--allow-missing-lists", action="store_true",
                     help="speechcommands: accept a copy without validation_list.txt / "
                          "testing_list.txt (their clips then go to 'train', with a warning)")
    ing.set_defaults(func=_cmd_data_ingest)

    sh = dsub.add_parser("shard", help="manifest -> WebDataset tar shards (16 kHz FLAC) on Ray")
    sh.add_argument("manifest")
    sh.add_argument("--out", required=True, help="directory or s3:// prefix")
    sh.add_argument("--shard-size", type=int, default=256, help="clips per shard (default 256)")
    sh.add_argument("--frames-per-second", type=float, default=1.0,
                    help="JPEG frames kept per second of video (default 1)")
    sh.add_argument("--min-duration", type=float, default=0.1,
                    help="clips shorter than this many seconds are rejected (default 0.1)")
    sh.add_argument("--address", default=None, help="Ray address (default: embedded / RAY_ADDRESS)")
    sh.set_defaults(func=_cmd_data_shard)

    ins = dsub.add_parser("inspect", help="counts, hours, labels and rejects of a shard set")
    ins.add_argument("uri")
    ins.set_defaults(func=_cmd_data_inspect)

    off = dsub.add_parser("offline", help="build the offline real-audio corpora and tasks")
    off.add_argument("--out", required=True)
    off.add_argument("--scale", choices=["small", "full"], default="small")
    off.add_argument("--seed", type=int, default=0)
    off.add_argument("--cache", default=None,
                     help="Debian download/convert cache (default ~/.cache/tympan/debian or $TYMPAN_DEBIAN_CACHE)")
    off.add_argument("--table", default=None,
                     help="also write the generated task table here (e.g. docs/offline_tasks.md)")
    off.set_defaults(func=_cmd_data_offline)

    pre = sub.add_parser(
        "pretrain", help="Ray Train pretraining of one method",
        description="Data-parallel pretraining on Ray Train, fed by the Ray Data pipeline, tracked "
                    "in MLflow. Config keys (key=value): the training keys steps, batch_size "
                    "(global), grad_accum, warmup_steps, min_lr_ratio, checkpoint_every, "
                    "num_to_keep, val_every, val_batches, log_every, seed, max_failures, "
                    "precision, data_cpus_per_gpu, shuffle_buffer, slice_width, gap_policy, "
                    "fill_max_frames; any other key is the "
                    "method's (width=0.5, optim.lr=3e-4, frontend.n_mels=128 ...).")
    pre.add_argument("--method", default=None,
                     help="registry name: audio2vec-cbow, audio2vec-skipgram, temporal-gap, triplet, "
                          "cola, l3, soundnet, audio-word2vec, audio-text")
    pre.add_argument("--data", default=None,
                     help="shard directory or s3:// prefix; several with weights 'A=0.7,s3://b/x=0.3'; "
                          "offline:DIR (live mixer of an offline build); offline-av:DIR (its AV clips); "
                          "spectra:DIR (shards of sensor records; slice_width, gap_policy, "
                          "fill_max_frames keys)")
    pre.add_argument("--workers", default="2",
                     help="training workers: N, or MIN-MAX for elastic training (default 2)")
    pre.add_argument("--gpus-per-worker", type=float, default=0.0,
                     help="GPUs per worker (default 0: CPU training)")
    pre.add_argument("--address", default=None,
                     help="Ray cluster address (default: RAY_ADDRESS, else an embedded local cluster)")
    pre.add_argument("--name", default=None, help="run name (default: METHOD-TIME)")
    pre.add_argument("--out", default=None, help="run directory (default: runs/NAME)")
    pre.add_argument("--storage", default=None,
                     help="checkpoint storage, a directory or s3:// prefix shared by all nodes "
                          "(default: OUT/checkpoints)")
    pre.add_argument("--tracking-uri", default=None,
                     help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite in OUT)")
    pre.add_argument("--resume", action="store_true",
                     help="continue the run NAME from its latest checkpoint (same --storage)")
    pre.add_argument("--config", default=None, help="YAML file of config keys")
    pre.add_argument("--preset", choices=["sensor"], default=None,
                     help="sensor: the method's settings for 29 third-octave bands at 125 ms "
                          "(tympan.methods.sensor), for spectra:DIR data or audio through the "
                          "third-octave front end")
    pre.add_argument("overrides", nargs="*", help="key=value config overrides")
    pre.set_defaults(func=_cmd_pretrain)

    emb = sub.add_parser("embed", help="batch embedding export with Ray Data",
                         description="Clip (scene) embeddings of every clip of --data, written as "
                                     "Parquet parts under --out (clip_id, split, labels, embedding); "
                                     "resumable; bad clips skipped and listed in bad_clips.json.")
    emb.add_argument("--checkpoint", required=True,
                     help="checkpoint file, run directory, Ray Train checkpoint dir or runs:/ID/PATH")
    emb.add_argument("--data", required=True,
                     help="shard directory / s3:// prefix, manifest .parquet, HEAR task folder or a folder of them")
    emb.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    emb.add_argument("--timestamps", action="store_true",
                     help="also write frame embeddings and their centre times in ms")
    emb.add_argument("--backend", choices=["ray", "local"], default="ray",
                     help="ray: Ray Data actor pool (GPU when present); local: the same code in-process")
    emb.add_argument("--part-size", type=int, default=256, help="manifest rows per output part")
    emb.add_argument("--actors", type=int, default=None, help="embedding actors (default: one per GPU, else CPUs-1)")
    emb.set_defaults(func=_cmd_embed)

    ev = sub.add_parser("evaluate", help="linear probes on downstream tasks, with baselines",
                        description="Frozen-embedding linear probes for the checkpoint and the "
                                    "random-init, log-mel and supervised baselines, on HEAR task "
                                    "folders or ingested manifests (folds -> cross-validation).")
    ev.add_argument("--checkpoint", required=True,
                    help="checkpoint file, run directory, Ray Train checkpoint dir or runs:/ID/PATH")
    ev.add_argument("--tasks", required=True, nargs="+", metavar="PATH",
                    help="HEAR task folder, folder of them (offline corpus tasks/), or manifest .parquet")
    ev.add_argument("--out", default="runs/evaluate", help="results folder (default runs/evaluate)")
    ev.add_argument("--seeds", type=int, default=3, help="seeds per model (default 3)")
    ev.add_argument("--models", default=",".join(("pretrained", "random-init", "log-mel", "supervised")),
                    help="comma-separated subset of pretrained,random-init,log-mel,supervised")
    ev.add_argument("--supervised-steps", type=int, default=100,
                    help="training steps of the supervised baseline (default 100)")
    ev.add_argument("--max-clips-per-split", type=int, default=None)
    ev.add_argument("--backend", choices=["ray", "local"], default="ray")
    ev.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: "
                    "MLFLOW_TRACKING_URI, the checkpoint run's store, or OUT/mlflow.db)")
    ev.set_defaults(func=_cmd_evaluate)

    tune = sub.add_parser("tune", help="Ray Tune studies")
    tsub = tune.add_subparsers(dest="tune_command", metavar="STUDY", required=True)
    _add_tune_parsers(tsub)

    bench = sub.add_parser("bench", help="benchmarks written to docs/benchmarks.md")
    bsub = bench.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    bd = _bench_command(bsub, "data", "data path throughput: per-core limit, DataLoader, Ray Data, "
                        "sharding; memory of a 10x stream", _cmd_bench_data)
    bd.add_argument("--cpus", default=None, help="N values, e.g. '1,2' (default: 1,2; quick: 2)")
    bd.add_argument("--offline", default=None, metavar="DIR",
                    help="a built offline corpus: the 1x/10x memory stream is its live mixer "
                         "(default: more passes over the generated shards)")
    bd.add_argument("--work", default=None, metavar="DIR",
                    help="keep the generated WAVs and shards here (default: a temporary folder)")
    bd.add_argument("--repeats", type=int, default=0,
                    help="interleaved rounds, median kept (default 3; quick 1)")
    bd.add_argument("--only", default=None, choices=["spectra"],
                    help="one section alone: 'spectra' = the sensor CSV ingest vs plain pyarrow "
                         "(no Ray; its section of the report is rewritten, the rest kept)")
    bt = _bench_command(bsub, "train", "training throughput: Ray Train loop vs plain PyTorch per "
                        "method, data-wait fraction with the pipeline", _cmd_bench_train)
    bt.add_argument("--methods", nargs="*", default=None, help="methods (default: all nine)")
    bt.add_argument("--steps", type=int, default=0, help="steps per loop (default 40, quick 12)")
    bt.add_argument("--work", default=None, help="folder for shards and runs (default: temporary)")
    return p


def _bench_command(bsub, name: str, help: str, func: Callable[[argparse.Namespace], int]
                   ) -> argparse.ArgumentParser:
    """One ``tympan bench NAME`` with the options every benchmark takes."""
    b = bsub.add_parser(name, help=help)
    b.add_argument("--quick", action="store_true", help="a small version (under 2 minutes)")
    b.add_argument("--json", default=None, metavar="FILE", help="write every figure as JSON")
    b.add_argument("--out", default=None, metavar="MD",
                   help="markdown report (default: docs/benchmarks.md for a full run, none for --quick)")
    b.set_defaults(func=func)
    return b


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"tympan: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
