"""``tympan bench data``: the data path against what the machine allows, side by side in one run.

Same shards, same work (read the WebDataset records, decode FLAC [+ JPEG frames], the
method's ``sample_views``: crops, augmentation, front end), measured four ways:

* **per-core limit**: one process, no framework, one thread: the ceiling for one core;
* **DataLoader**: a PyTorch DataLoader with N worker processes (shards split between them,
  one thread each), what a practitioner would write;
* **Ray Data**: tympan's pipeline (:func:`tympan.distributed.pipeline.build_pipeline`) on a
  local Ray cluster of N CPUs, consumed with ``iter_batches`` as a trainer would;
* **sharding** (issue 9 point 6): ``tympan data shard`` of ten-second 44.1 kHz stereo WAVs
  against a plain single-process loop doing the same work (soundfile read, downmix, soxr
  resample to 16 kHz, FLAC encode, tar write).

Throughputs are clips over the wall time of a whole pass (Ray's after a warm-up pass that
starts its workers, as a trainer's second epoch sees them; the DataLoader's include forking its
workers) and the median of ``repeats`` interleaved rounds, so that a neighbour's burst on a shared
machine hits every method alike. Peak memory is the summed proportional set size (PSS) of this
process and all its descendants (Ray's raylet, object store and workers), sampled every 0.2 s,
for a stream 1x and 10x as long; the object store's use is sampled alongside.

    results = run_bench_data(BenchDataConfig(quick=True))
    print(results["ray_clips_per_s"], results["limit_clips_per_s"])
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import statistics
import tarfile
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from tympan.config import check

# Methods whose records' JPEG frames are decoded (as the pipeline does); the others skip them.
AV_METHODS = ("l3", "soundnet")
# The keys every run writes (issue 9 point 7); the headline figures are COLA at N = max(cpus).
REQUIRED_KEYS = ("limit_clips_per_s", "dataloader_clips_per_s", "ray_clips_per_s", "cores",
                 "shard_clips_per_s", "shard_limit_clips_per_s", "peak_rss_mb_1x",
                 "peak_rss_mb_10x")


@dataclass(frozen=True)
class BenchDataConfig:
    quick: bool = False
    cpus: tuple[int, ...] = ()            # N values; () = (1, 2) full, (2,) quick (capped by the machine)
    methods: tuple[str, ...] = ("cola", "l3")
    audio_clips: int = 0                  # 10 s WAVs sharded, then streamed (0 = 200 full, 48 quick)
    av_clips: int = 0                     # 10 s clips with 1 fps frames for L3 (0 = 64 full, 32 quick)
    shards_per_worker: int = 4            # shards of each streamed set per worker at max N
    batch_size: int = 32                  # clips per sample_views call and per batch (the
                                          # pipeline's group_size is set to the same)
    epochs: int = 0                       # passes over the shards per measurement (0 = 2 full, 4 quick)
    repeats: int = 0                      # interleaved rounds; the median is kept (0 = 3 full, 1 quick)
    memory_clips: int = 0                 # the 1x stream, in clips (0 = 256 full, 64 quick)
    offline: str | None = None            # a built offline corpus: the 1x/10x stream is its live mixer
    work: str | None = None               # where the generated data goes (None: a temporary folder)
    seed: int = 0
    only: str | None = None               # "spectra": the sensor CSV ingest section alone (no Ray)

    def __post_init__(self):
        check(all(n >= 1 for n in self.cpus), "cpus", self.cpus, "must be >= 1")
        check(self.batch_size >= 2, "batch_size", self.batch_size,
              "must be >= 2 (L3 draws mismatched frames from other clips of a batch)")
        check(self.shards_per_worker >= 1, "shards_per_worker", self.shards_per_worker,
              "must be >= 1")
        for m in self.methods:
            check(m in ("cola", "l3"), "methods", self.methods, "benchmarked methods: cola, l3")
        check(self.only in (None, "spectra"), "only", self.only, "sections: spectra")

    def resolved(self) -> "BenchDataConfig":
        q = self.quick
        cores = os.cpu_count() or 1
        cpus = self.cpus or ((min(2, cores),) if q else tuple(sorted({1, min(2, cores)})))

        def pick(v, full, quick):
            return v or (quick if q else full)
        return BenchDataConfig(
            quick=q, cpus=cpus, methods=self.methods,
            audio_clips=pick(self.audio_clips, 200, 48), av_clips=pick(self.av_clips, 64, 32),
            shards_per_worker=self.shards_per_worker, batch_size=self.batch_size,
            epochs=pick(self.epochs, 2, 4), repeats=pick(self.repeats, 3, 1),
            memory_clips=pick(self.memory_clips, 256, 64), offline=self.offline, work=self.work,
            seed=self.seed, only=self.only)


# ---- machine and memory --------------------------------------------------------------------

def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (load average included: the machine may be shared)."""
    import ray
    import torch

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem_gb = round(kb / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    return {"cpu": model, "cpu_count": os.cpu_count(), "memory_gb": mem_gb,
            "load_avg": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "torch": torch.__version__, "ray": ray.__version__, "platform": platform.platform()}


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = defaultdict(list)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            kids[int(stat.rsplit(")", 1)[1].split()[1])].append(int(d))
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Ray's raylet, object store and workers for a local
    cluster started by this process)."""
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def tree_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process and its descendants, reaped
    children included: the work a run cost, whatever else the machine was doing meanwhile."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in process_tree(os.getpid()):
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in f[11:15])        # utime, stime, cutime, cstime
    return total / tick


def _pss_kb(pid: int) -> int:
    """Proportional set size: shared pages (the object store's, torch's libraries) split
    between the processes mapping them, so a sum over processes counts each page once."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _object_store_mb() -> float | None:
    """Bytes held in Ray's object store now, or None without a Ray cluster."""
    try:
        import ray
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        if not ray.is_initialized():
            return None
        reply = get_memory_info_reply(get_state_from_address(ray.get_runtime_context().gcs_address))
        return reply.store_stats.object_store_bytes_used / 2**20
    except Exception:  # noqa: BLE001 - an internal API: the figure is optional, never fatal
        return None


class PeakMemory:
    """Context manager sampling the summed PSS of this process tree (and the object store)."""

    def __init__(self, interval_s: float = 0.2):
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.peak_object_store_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        total = sum(_pss_kb(p) for p in process_tree(os.getpid())) / 1024
        self.peak_mb = max(self.peak_mb, total)
        store = _object_store_mb()
        if store is not None:
            self.peak_object_store_mb = max(self.peak_object_store_mb, store)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


class _pinned_threads:
    """One BLAS/torch thread in this process for the block: a data worker's share of a core."""

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


# ---- data ----------------------------------------------------------------------------------

def _sound(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """A few drifting partials over a quiet noise floor, float32 [n]: FLAC keeps about half of
    the PCM bytes, as for real recordings (pure tones would compress far more, loud white noise
    hardly at all)."""
    t = np.arange(n, dtype=np.float32) / rate
    x = np.float32(0.01) * rng.standard_normal(n, dtype=np.float32)
    for _ in range(3):
        f = rng.uniform(80, 2000)
        am = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 3) * t + rng.uniform(0, 6.3))
        x += (rng.uniform(0.05, 0.2) * am * np.sin(2 * np.pi * f * t + 30 * np.sin(0.3 * t)))
    return x


def make_wav_folder(root: str | Path, n: int, *, seconds: float = 10.0, rate: int = 44100,
                    seed: int = 0) -> Path:
    """``n`` stereo 16-bit WAVs at ``rate`` in 4 label sub-folders (``tympan data ingest folder``)."""
    import soundfile as sf

    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(n):
        path = root / f"class{i % 4}" / f"clip{i:05d}.wav"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        left = _sound(rng, int(seconds * rate), rate)
        right = 0.7 * left + 0.3 * _sound(rng, len(left), rate)
        sf.write(str(path), np.stack([left, right], 1), rate, subtype="PCM_16")
    return root


def _picture(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: smooth colour blocks plus grain (JPEG sizes like video frames)."""
    coarse = rng.uniform(0, 255, size=(8, 8, 3))
    img = np.kron(coarse, np.ones((size // 8 + 1, size // 8 + 1, 1)))[:size, :size]
    img += rng.normal(0, 10, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_av_shards(out: str | Path, n: int, *, seconds: float = 10.0, fps: float = 1.0,
                   frame_size: int = 256, shard_size: int = 25, seed: int = 1) -> list[str]:
    """Audio-visual shards as ``tympan data shard`` writes them from videos: 16 kHz FLAC plus
    ``fps`` JPEG frames per second (``frame_size`` square) with their times."""
    from tympan.datasets.manifest import make_row
    from tympan.datasets.shards import encode_record, list_shards, shard_name, write_shard

    out = Path(out)
    if not list_shards(str(out), missing_ok=True):
        rng = np.random.default_rng(seed)
        k = max(1, int(seconds * fps))
        for s, start in enumerate(range(0, n, shard_size)):
            records = []
            for i in range(start, min(n, start + shard_size)):
                row = make_row(f"av{i:05d}", f"bench://av/{i}", labels=[f"class{i % 4}"])
                frames = np.stack([_picture(rng, frame_size) for _ in range(k)])
                records.append(encode_record(row, _sound(rng, int(seconds * 16000), 16000),
                                             frames=frames, frame_times=(np.arange(k) + 0.5) / fps))
            write_shard(str(out / shard_name(s)), records)
    return list_shards(str(out))


# ---- sharding (issue 9 point 6) ----------------------------------------------------------

def shard_limit(rows: Sequence[dict], out_tar: str | Path) -> dict[str, Any]:
    """The plain loop: soundfile read, channel mean, ``soxr.resample`` to 16 kHz, FLAC encode,
    tar write; one process, one thread, no tympan code. clips/s and ms per clip per stage."""
    import soundfile as sf
    import soxr

    stages = dict.fromkeys(("read", "downmix", "resample", "encode", "write"), 0.0)
    t0, cpu0 = time.perf_counter(), time.process_time()
    with tarfile.open(out_tar, "w") as tar:
        for r in rows:
            a = time.perf_counter()
            x, sr = sf.read(r["source"], dtype="float32", always_2d=True)
            b = time.perf_counter()
            mono = x.sum(axis=1, dtype=np.float32) if x.shape[1] > 2 else (
                (x[:, 0] + x[:, -1]) * np.float32(0.5))
            c = time.perf_counter()
            y = soxr.resample(mono, sr, 16000)
            d = time.perf_counter()
            buf = io.BytesIO()
            sf.write(buf, np.clip(y, -1, 1), 16000, format="FLAC", subtype="PCM_16")
            e = time.perf_counter()
            for name, data in ((f"{r['clip_id']}.flac", buf.getvalue()),
                               (f"{r['clip_id']}.json", json.dumps(r, default=str).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            f = time.perf_counter()
            for k, dt in zip(stages, (b - a, c - b, d - c, e - d, f - e)):
                stages[k] += dt
    wall = time.perf_counter() - t0
    return {"clips_per_s": len(rows) / wall, "seconds": wall,
            "cpu_ms_per_clip": 1e3 * (time.process_time() - cpu0) / len(rows),
            "ms_per_clip": {k: 1e3 * v / len(rows) for k, v in stages.items()}}


def shard_job(manifest: str, out: str, cpus: int) -> dict[str, Any]:
    """``tympan data shard`` (:func:`~tympan.distributed.sharding.shard_manifest`) on a fresh
    local Ray cluster of ``cpus`` CPUs: the job's own clips/s (what the command prints, from
    after Ray's start) and the wall time with Ray's start."""
    import shutil

    import ray

    from tympan.distributed.sharding import shard_manifest

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    _ray_init(cpus)
    try:
        init_s = time.perf_counter() - t0
        cpu0 = tree_cpu_s()
        s = shard_manifest(manifest, out, shard_size=50, progress=False)
        cpu = tree_cpu_s() - cpu0
    finally:
        ray.shutdown()
    return {"clips_per_s": s.clips_per_s, "seconds": s.seconds, "ray_init_s": init_s,
            "end_to_end_clips_per_s": s.clips_this_run / (s.seconds + init_s),
            "cpu_ms_per_clip": 1e3 * cpu / max(s.clips_this_run, 1)}


# ---- streaming -----------------------------------------------------------------------------

def _sampler(method: str) -> tuple[Callable, Any]:
    from tympan.methods.registry import get_method

    cls = get_method(method)
    return cls.sample_views, cls.config_cls()


def _rows(batch: dict[str, Any]) -> int:
    return len(next(iter(batch.values())))


class _Meter:
    """Clips over the wall time and the process tree's CPU time of a whole pass (a local
    shuffle buffer holds batches back until it fills, so a rate counted from the first batch
    would flatter a buffered stream). The time to the first batch is reported on its own."""

    def __init__(self):
        self.t_start, self.cpu_start = time.perf_counter(), tree_cpu_s()
        self.t_first: float | None = None
        self.clips = 0

    def add(self, n: int) -> None:
        if self.t_first is None:
            self.t_first = time.perf_counter()
        self.clips += n

    def result(self, nbytes: float) -> dict[str, Any]:
        end, cpu = time.perf_counter(), tree_cpu_s()
        wall = max(end - self.t_start, 1e-9)
        return {"clips_per_s": self.clips / wall, "clips": self.clips, "seconds": wall,
                "first_batch_s": (self.t_first or end) - self.t_start,
                "mb_per_s": nbytes / 2**20 / wall,
                "cpu_ms_per_clip": 1e3 * (cpu - self.cpu_start) / max(self.clips, 1)}


def stream_limit(shards: Sequence[str], method: str, batch: int, epochs: int,
                 seed: int = 0) -> dict[str, Any]:
    """One process, one thread: records read, decoded, grouped into batches of ``batch``
    clips, ``sample_views``. clips/s, MB/s of shard bytes, ms per clip per stage."""
    from tympan.datasets.shards import decode_record, iter_records

    views, cfg = _sampler(method)
    frames = method in AV_METHODS
    rng = np.random.default_rng(seed)
    stages = dict.fromkeys(("read", "decode", "views"), 0.0)
    nbytes = sum(os.path.getsize(p) for p in shards) * epochs
    buf: list = []
    with _pinned_threads():
        meter = _Meter()
        for _ in range(epochs):
            for path in shards:
                with open(path, "rb") as f:
                    records = iter_records(f, path)
                    while True:
                        a = time.perf_counter()
                        rec = next(records, None)
                        b = time.perf_counter()
                        stages["read"] += b - a
                        if rec is None:
                            break
                        buf.append(decode_record(rec[0], rec[1], path, frames=frames))
                        c = time.perf_counter()
                        stages["decode"] += c - b
                        if len(buf) == batch:
                            views(cfg, buf, rng)
                            stages["views"] += time.perf_counter() - c
                            meter.add(len(buf))
                            buf = []
        res = meter.result(nbytes)
    res["ms_per_clip"] = {k: 1e3 * v / max(res["clips"], 1) for k, v in stages.items()}
    return res


class ShardViews(torch.utils.data.IterableDataset):
    """Each DataLoader worker takes every N-th shard, one thread, its own RNG."""

    def __init__(self, shards: Sequence[str], method: str, batch: int, epochs: int, seed: int):
        self.shards, self.method, self.batch, self.epochs, self.seed = (
            list(shards), method, batch, epochs, seed)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        from tympan.datasets.shards import decode_record, iter_records

        frames = self.method in AV_METHODS
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        torch.set_num_threads(1)
        views, cfg = _sampler(self.method)
        rng = np.random.default_rng([self.seed, wid])
        buf: list = []
        for _ in range(self.epochs):
            for path in self.shards[wid::nw]:
                with open(path, "rb") as f:
                    clips = [decode_record(k, m, path, frames=frames) for k, m in iter_records(f, path)]
                for clip in clips:
                    buf.append(clip)
                    if len(buf) == self.batch:
                        yield views(cfg, buf, rng)
                        buf = []


def stream_dataloader(shards: Sequence[str], method: str, workers: int, batch: int, epochs: int,
                      seed: int = 0) -> dict[str, Any]:
    """A PyTorch DataLoader with ``workers`` (forked) processes doing the same work; call it
    while this process holds no Ray connection (a fork would copy Ray's threads mid-flight)."""
    dl = torch.utils.data.DataLoader(ShardViews(shards, method, batch, epochs, seed),
                                     batch_size=None, num_workers=workers, prefetch_factor=4)
    nbytes = sum(os.path.getsize(p) for p in shards) * epochs
    meter = _Meter()
    for b in dl:
        meter.add(_rows(b))
    return meter.result(nbytes)


def stream_ray(source: str, method: str, batch: int, epochs: int | None, seed: int = 0, *,
               nbytes: float = 0.0, max_clips: int | None = None, warmup: bool = True
               ) -> dict[str, Any]:
    """tympan's Ray Data pipeline on the running Ray cluster, read with ``iter_batches``.
    ``warmup``: one pass first (its workers started and imports done), as a trainer's second
    epoch sees it. ``max_clips`` stops an endless source (the live mixer)."""
    from tympan.distributed.pipeline import PipelineConfig, build_pipeline

    cfg = PipelineConfig(batch_size=batch, seed=seed, group_size=batch)

    def one_pass(limit: int | None, epochs: int | None) -> tuple[_Meter, Any]:
        p = build_pipeline(source, method, cfg=cfg, epochs=epochs)
        meter = _Meter()
        for b in p.iter_batches():
            meter.add(_rows(b))
            if limit is not None and meter.clips >= limit:
                break
        return meter, p

    if warmup:
        one_pass(4 * batch, 1)
    meter, p = one_pass(max_clips, epochs)
    res = meter.result(nbytes)
    try:
        res["stats"] = p.dataset.stats()
        st = p.stage_seconds()
        n = max(st.get("examples", 0), 1)
        res["ms_per_clip"] = {"read+decode": 1e3 * st["read_decode_s"] / n,
                              "views": 1e3 * st["views_s"] / n}
    except Exception:  # noqa: BLE001 - diagnostics, never a reason to fail
        res.setdefault("stats", "")
    return res


# ---- feeding a GPU -------------------------------------------------------------------------

# NVIDIA DeepLearningExamples, PyTorch EfficientNet-B0, 1x A100 80GB, mixed precision, 224x224x3
# ImageNet training: 2489 img/s (README "Training performance results", PyTorch 21.03 NGC).
A100_EFFNET_B0_IMG_PER_S = 2489.0
# H100 SXM over A100 80GB for EfficientNet training: depthwise convolutions, BatchNorm and
# squeeze-excite are memory-bound, so the HBM bandwidth ratio (3.35 / 2.04 TB/s), not the
# tensor-core ratio (~3x), is the assumption used.
H100_OVER_A100 = 1.64


def _encoder_gflops(make: Callable[[], torch.nn.Module], shape: tuple[int, ...]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = make().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(shape))
    return fc.get_total_flops() / 1e9


def h100_cola_estimate(ray_clips_per_s_per_core: float, limit_clips_per_s: float) -> dict[str, Any]:
    """Clips/s one H100 would consume training COLA's encoder (EfficientNet-B0 on [96, 64]
    log-mel crops, two per clip) and the CPU cores that takes at the measured per-core rates.

    The GPU rate is scaled from NVIDIA's measured 224x224 ImageNet training throughput by the
    forward FLOPs ratio of the two inputs (counted here with torch's FlopCounterMode) and the
    bandwidth ratio above: an estimate to size a cluster, not a measurement."""
    import timm

    from tympan.methods.cola import COLAConfig
    from tympan.methods.encoders import EfficientNetEncoder

    cfg = COLAConfig()
    view = _encoder_gflops(lambda: EfficientNetEncoder(cfg.width, cfg.depth),
                           (1, cfg.crop_frames, cfg.frontend.n_mels))
    imagenet = _encoder_gflops(lambda: timm.create_model("efficientnet_b0", pretrained=False),
                               (1, 3, 224, 224))
    views_per_s = A100_EFFNET_B0_IMG_PER_S * H100_OVER_A100 * imagenet / view
    clips_per_s = views_per_s / 2                                # anchor + positive per clip
    return {"gflops_per_view": view, "gflops_imagenet_224": imagenet,
            "h100_clips_per_s": clips_per_s,
            "cores_at_ray_rate": clips_per_s / max(ray_clips_per_s_per_core, 1e-9),
            "cores_at_limit_rate": clips_per_s / max(limit_clips_per_s, 1e-9)}


# ---- the benchmark -------------------------------------------------------------------------

def make_sensor_csvs(root: str | Path, sensors: int, frames: int, seed: int = 0) -> list[str]:
    """``sensors`` CSVs of ``frames`` fast third-octave frames each (ISO 8601 times, 29 band
    columns, 0.1 dB), as CENSE-like sensors write them."""
    from tympan.datasets.thirdoctave import NOMINAL_HZ

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.datetime64("2025-01-01T00:00:00.000") + (np.arange(frames) * 125).astype("timedelta64[ms]")
    times = np.datetime_as_string(t, unit="ms")
    out = []
    for k in range(sensors):
        lv = np.round(rng.normal(55, 8, (frames, len(NOMINAL_HZ))), 1)
        body = np.column_stack([times.astype(object)] + [lv[:, j].astype(str) for j in range(lv.shape[1])])
        path = root / f"sensor-{k:02d}.csv"
        with open(path, "w") as f:
            f.write("time," + ",".join(f"{c:g}" for c in NOMINAL_HZ) + "\n")
            f.write("\n".join(",".join(r) for r in body) + "\n")
        out.append(str(path))
    return out


def spectra_ingest_bench(root: str | Path, sensors: int = 2, frames: int = 200_000,
                         repeats: int = 1) -> dict[str, Any]:
    """``tympan data ingest spectra`` (parse, validate every row, cut runs) against a plain
    ``pyarrow.csv.read_csv`` of the same files, frames/s (median of ``repeats`` interleaved
    rounds, after one untimed round of each)."""
    import pyarrow.csv as pacsv

    from tympan.datasets.formats.spectra import ingest_spectra

    files = make_sensor_csvs(root, sensors, frames)
    mb = sum(os.path.getsize(f) for f in files) / 1e6
    ing, plain, n_ingest, n_plain = [], [], 0, 0
    ingest_spectra(str(root))               # warm-up, untimed: imports (pandas), page cache
    for f in files:
        pacsv.read_csv(f)
    for _ in range(repeats):
        t = time.perf_counter()
        rows, rep = ingest_spectra(str(root))
        ing.append(time.perf_counter() - t)
        n_ingest = rep.frames
        t = time.perf_counter()
        n_plain = sum(pacsv.read_csv(f).num_rows for f in files)
        plain.append(time.perf_counter() - t)
    ti, tp = statistics.median(ing), statistics.median(plain)
    return {"files": len(files), "frames": n_ingest, "plain_rows": n_plain, "mb": round(mb, 1),
            "ingest_frames_per_s": n_ingest / ti, "pyarrow_frames_per_s": n_plain / tp,
            "ingest_over_pyarrow": (n_ingest / ti) / (n_plain / tp)}


def _median(runs: list[dict[str, Any]], key: str = "clips_per_s") -> float:
    return float(statistics.median(r[key] for r in runs)) if runs else 0.0


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _ray_init(cpus: int) -> None:
    import ray

    # address="local": always a new cluster of exactly ``cpus`` CPUs, never one that a
    # `ray start` on this machine left running. Workers at nice 0 like the limit and the
    # DataLoader (Ray's default, 15, hands the CPU to any neighbour on a shared machine).
    for attempt in range(3):
        try:
            ray.init(address="local", num_cpus=cpus, include_dashboard=False,
                     configure_logging=False, log_to_driver=False,
                     _system_config={"worker_niceness": 0})
            return
        except Exception as e:  # noqa: BLE001 - an overloaded machine can time Ray's start out
            if attempt == 2 or "timed out during startup" not in str(e):
                raise
            _log(f"Ray did not start ({e}); retrying")
            ray.shutdown()
            time.sleep(10)


def run_bench_data(cfg: BenchDataConfig = BenchDataConfig()) -> dict[str, Any]:
    """Every measurement of ``tympan bench data``; returns the results dict (JSON-able), with
    :data:`REQUIRED_KEYS` at the top level (COLA at N = max(cpus))."""
    import ray

    cfg = cfg.resolved()
    if cfg.only == "spectra":
        with tempfile.TemporaryDirectory(prefix="tympan-bench-") as tmp:
            return run_spectra_section(cfg, Path(cfg.work or tmp))
    if ray.is_initialized():
        raise RuntimeError("tympan bench data starts its own local Ray clusters; "
                           "call it without a connected Ray session")
    if cfg.work:
        Path(cfg.work).mkdir(parents=True, exist_ok=True)
        return _run(cfg, Path(cfg.work))
    with tempfile.TemporaryDirectory(prefix="tympan-bench-") as tmp:
        return _run(cfg, Path(tmp))


def run_spectra_section(cfg: BenchDataConfig, work: Path) -> dict[str, Any]:
    """``tympan bench data --only spectra``: the sensor CSV ingest against plain pyarrow, alone
    (a minute, no Ray), for re-measuring the ingest without the whole data benchmark."""
    t_start = time.perf_counter()
    res: dict[str, Any] = {"config": asdict(cfg), "machine": machine_info(), "work": str(work),
                           "load_avg_during": [round(os.getloadavg()[0], 2)]}
    res["spectra_ingest"] = spectra_ingest_bench(work / "sensors", frames=20_000 if cfg.quick
                                                 else 200_000, repeats=cfg.repeats)
    res["load_avg_during"].append(round(os.getloadavg()[0], 2))
    res["seconds"] = time.perf_counter() - t_start
    return res


def _run(cfg: BenchDataConfig, work: Path) -> dict[str, Any]:
    import ray

    from tympan.datasets.formats.registry import ingest
    from tympan.datasets.manifest import read_manifest
    from tympan.datasets.shards import list_shards

    t_start = time.perf_counter()
    res: dict[str, Any] = {"config": asdict(cfg), "machine": machine_info(), "work": str(work),
                           "load_avg_during": []}
    top = max(cfg.cpus)

    def load() -> None:
        res["load_avg_during"].append(round(os.getloadavg()[0], 2))

    # -- sensor CSV ingest against a plain pyarrow read of the same files ------------------
    load()
    res["spectra_ingest"] = spectra_ingest_bench(work / "sensors", frames=20_000 if cfg.quick
                                                 else 200_000, repeats=cfg.repeats)
    _log(f"spectra ingest: {res['spectra_ingest']['ingest_frames_per_s']:.0f} frames/s "
         f"({res['spectra_ingest']['ingest_over_pyarrow']:.2f} x pyarrow)")

    # -- sharding: 10 s 44.1 kHz stereo WAVs -> shards, against the plain loop -------------
    _log(f"writing {cfg.audio_clips} WAVs (10 s, 44.1 kHz, stereo) in {work / 'wav'}")
    make_wav_folder(work / "wav", cfg.audio_clips, seed=cfg.seed)
    manifest = str(work / "wav.parquet")
    ingest("folder", str(work / "wav"), manifest)
    rows = read_manifest(manifest)
    shard: dict[str, Any] = {"limit": [], "job": {n: [] for n in cfg.cpus}}
    for r in range(cfg.repeats):
        load()
        shard["limit"].append(shard_limit(rows, work / "limit.tar"))
        _log(f"shard limit: {shard['limit'][-1]['clips_per_s']:.1f} clips/s")
        for n in cfg.cpus:
            shard["job"][n].append(shard_job(manifest, str(work / f"shards-{n}"), n))
            _log(f"tympan data shard on {n} CPU(s): {shard['job'][n][-1]['clips_per_s']:.1f} clips/s")
    res["shard"] = shard

    # -- streaming: same shards, same work, limit / DataLoader / Ray at each N --------------
    # The sharding job's output (50 clips per shard, as in issue 9), regrouped so that every
    # worker has several shards at the largest N.
    parts = cfg.shards_per_worker * top
    sources = {"cola": _reshard(list_shards(str(work / f"shards-{top}")), work / "audio", parts)}
    if "l3" in cfg.methods:
        sources["l3"] = make_av_shards(work / "av", cfg.av_clips,
                                       shard_size=-(-cfg.av_clips // parts), seed=cfg.seed + 1)
    stream: dict[str, Any] = {m: {"limit": [], "dataloader": defaultdict(list),
                                  "ray": defaultdict(list)} for m in cfg.methods}
    # Interleaved: each round runs every method and N once, limit -> DataLoader -> Ray, so a
    # neighbour's burst on a shared machine hits all of them. Ray starts afresh for each N
    # (its warm-up pass is left out); the DataLoader forks its workers while Ray is down.
    for r in range(cfg.repeats):
        for n in cfg.cpus:
            for m in cfg.methods:
                load()
                if n == cfg.cpus[0]:
                    stream[m]["limit"].append(
                        stream_limit(sources[m], m, cfg.batch_size, cfg.epochs, cfg.seed))
                stream[m]["dataloader"][n].append(
                    stream_dataloader(sources[m], m, n, cfg.batch_size, cfg.epochs, cfg.seed))
            _ray_init(n)
            try:
                for m in cfg.methods:
                    src = sources[m]
                    nbytes = sum(os.path.getsize(p) for p in src) * cfg.epochs
                    run = stream_ray(str(Path(src[0]).parent), m, cfg.batch_size, cfg.epochs,
                                     cfg.seed, nbytes=nbytes)
                    stream[m]["ray"][n].append(run)
                    _log(f"{m} N={n}: limit {stream[m]['limit'][-1]['clips_per_s']:.0f}, "
                         f"DataLoader {stream[m]['dataloader'][n][-1]['clips_per_s']:.0f}, "
                         f"Ray {run['clips_per_s']:.0f} clips/s")
                if r == cfg.repeats - 1 and n == top:       # same warm cluster, one start less
                    res["memory"] = _memory_runs(cfg, sources["cola"], load)
            finally:
                ray.shutdown()
    res["stream"] = {m: {"limit": v["limit"], "dataloader": dict(v["dataloader"]),
                         "ray": dict(v["ray"])} for m, v in stream.items()}

    # -- headline figures --------------------------------------------------------------------
    cola = stream["cola"]
    res.update(
        cores=top,
        limit_clips_per_s=_median(cola["limit"]),
        dataloader_clips_per_s=_median(cola["dataloader"][top]),
        ray_clips_per_s=_median(cola["ray"][top]),
        shard_clips_per_s=_median(shard["job"][top]),
        shard_limit_clips_per_s=_median(shard["limit"]),
        peak_rss_mb_1x=res["memory"]["1x"]["peak_mb"],
        peak_rss_mb_10x=res["memory"]["10x"]["peak_mb"],
        object_store_mb_1x=res["memory"]["1x"]["object_store_mb"],
        object_store_mb_10x=res["memory"]["10x"]["object_store_mb"])
    res["ratios"] = _ratios(res, cfg)
    res["h100_cola"] = h100_cola_estimate(res["ray_clips_per_s"] / top, res["limit_clips_per_s"])
    res["seconds"] = time.perf_counter() - t_start
    return res


def _reshard(shards: Sequence[str], out: Path, parts: int) -> list[str]:
    """The same records regrouped into ``parts`` shards (bytes copied, nothing re-encoded)."""
    from tympan.datasets.shards import iter_records, list_shards, shard_name, write_shard

    if len(list_shards(str(out), missing_ok=True)) != parts:
        records = []
        for path in shards:
            with open(path, "rb") as f:
                records += [list(members.items()) for _, members in iter_records(f, path)]
        for i in range(parts):
            write_shard(str(out / shard_name(i)), records[i::parts])
    return list_shards(str(out))


def _memory_runs(cfg: BenchDataConfig, shards: Sequence[str], load: Callable[[], None]
                 ) -> dict[str, Any]:
    """Peak PSS of the whole process tree and peak object-store use while the Ray pipeline
    streams ``memory_clips`` clips, then 10x as many (the live mixer when ``cfg.offline`` is
    set, else more passes over the shards)."""
    out: dict[str, Any] = {}
    if cfg.offline:
        source = f"offline:{cfg.offline}"
    else:
        source = str(Path(shards[0]).parent)
    per_pass = None if cfg.offline else sum(1 for _ in _count_records(shards))
    for tag, clips in (("1x", cfg.memory_clips), ("10x", 10 * cfg.memory_clips)):
        epochs = None if per_pass is None else -(-clips // per_pass)
        load()
        with PeakMemory() as mem:
            run = stream_ray(source, "cola", cfg.batch_size, epochs, cfg.seed, max_clips=clips,
                             warmup=False)
        out[tag] = {"source": source, "clips": run["clips"], "clips_per_s": run["clips_per_s"],
                    "peak_mb": mem.peak_mb, "object_store_mb": mem.peak_object_store_mb}
        _log(f"memory {tag}: {run['clips']} clips, peak PSS {mem.peak_mb:.0f} MB, "
             f"object store {mem.peak_object_store_mb:.0f} MB")
    return out


def _count_records(shards: Sequence[str]) -> Iterator[str]:
    from tympan.datasets.shards import read_docs

    for path in shards:
        for doc in read_docs(path):
            yield doc["clip_id"]


def _ratios(res: dict[str, Any], cfg: BenchDataConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m, v in res["stream"].items():
        lim = _median(v["limit"])
        for n in cfg.cpus:
            ray_, dl = _median(v["ray"].get(n, [])), _median(v["dataloader"].get(n, []))
            out[f"{m}_n{n}_ray_vs_limit_x_cores"] = ray_ / (lim * n) if lim else 0.0
            out[f"{m}_n{n}_ray_vs_dataloader"] = ray_ / dl if dl else 0.0
            out[f"{m}_n{n}_dataloader_vs_limit_x_cores"] = dl / (lim * n) if lim else 0.0
    slim = _median(res["shard"]["limit"])
    for n in cfg.cpus:
        out[f"shard_n{n}_vs_limit_x_cores"] = _median(res["shard"]["job"][n]) / (slim * n)
    out["memory_10x_over_1x"] = res["peak_rss_mb_10x"] / res["peak_rss_mb_1x"]
    return out


# ---- report --------------------------------------------------------------------------------

NOTES_BEGIN, NOTES_END = "<!-- notes: kept across reruns -->", "<!-- /notes -->"


def _f(x: float, nd: int = 0) -> str:
    return f"{x:,.{nd}f}"


def _ms(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in d.items())


def _task_cpu_ms_per_clip(run: dict[str, Any]) -> float:
    """CPU ms per clip spent inside the pipeline's Ray Data tasks (read + decode + views), from
    the dataset's stats; the rest of the tree's CPU is the framework around them."""
    m = re.search(r"Remote cpu time: .*?, ([\d.]+)(ms|s|us) total", run.get("stats") or "")
    if not m or not run.get("clips"):
        return 0.0
    ms = float(m.group(1)) * {"s": 1e3, "ms": 1.0, "us": 1e-3}[m.group(2)]
    return ms / run["clips"]


def load_results(path: str | Path) -> dict[str, Any]:
    """A results JSON back as :func:`run_bench_data` returned it (N keys as ints again)."""
    res = json.loads(Path(path).read_text())
    res["config"]["cpus"] = tuple(res["config"]["cpus"])
    for v in res["stream"].values():
        for k in ("dataloader", "ray"):
            v[k] = {int(n): runs for n, runs in v[k].items()}
    res["shard"]["job"] = {int(n): runs for n, runs in res["shard"]["job"].items()}
    return res


def _stage_median(runs: list[dict[str, Any]]) -> dict[str, float]:
    if not runs:
        return {}
    return {k: statistics.median(r["ms_per_clip"][k] for r in runs) for k in runs[0]["ms_per_clip"]}


def format_markdown(res: dict[str, Any], command: str, notes: str = "") -> str:
    """docs/benchmarks.md from a results dict (``notes``: the hand-written analysis to keep)."""
    cfg, mach = res["config"], res["machine"]
    cpus = cfg["cpus"]
    L = ["# Benchmarks", "",
         "Written by `tympan bench data` (distributed/bench.py); the notes section is written by",
         "hand and kept when the file is regenerated.", "",
         "## Machine and command", "",
         f"- CPU: {mach['cpu']}, {mach['cpu_count']} cores visible, {mach['memory_gb']} GB RAM",
         f"- Python {mach['python']}, torch {mach['torch']}, Ray {mach['ray']}, {mach['platform']}",
         f"- load average at start {mach['load_avg']}; during the run (1 min, per measurement): "
         f"{res['load_avg_during']}",
         f"- command: `{command}` ({res['seconds']:.0f} s)",
         f"- data: {cfg['audio_clips']} WAVs of 10 s, 44.1 kHz stereo -> 16 kHz FLAC shards (COLA); "
         f"{cfg['av_clips']} 10 s clips with 1 fps 256x256 JPEG frames (L3); batch {cfg['batch_size']}, "
         f"{cfg['epochs']} pass(es) per measurement, median of {cfg['repeats']} interleaved round(s)",
         "", "## Streaming: clips/s (whole pass; Ray after a warm-up pass)", "",
         "| method | N | per-core limit x N | DataLoader (N workers) | Ray Data (N CPUs) | "
         "Ray / (limit x N) | Ray / DataLoader | DataLoader / (limit x N) | Ray MB/s | "
         "Ray first batch s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m, v in res["stream"].items():
        lim = _median(v["limit"])
        for n in cpus:
            dl, ray_ = v["dataloader"].get(n, []), v["ray"].get(n, [])
            r, d = _median(ray_), _median(dl)
            L.append(f"| {m} | {n} | {_f(lim * n)} | {_f(d)} | {_f(r)} | {r / (lim * n):.2f} | "
                     f"{(r / d if d else 0):.2f} | {d / (lim * n):.2f} | "
                     f"{_median(ray_, 'mb_per_s'):.1f} | {_median(ray_, 'first_batch_s'):.1f} |")
    L += ["", "CPU cost per clip (ms of CPU time of all processes involved: workers, driver, "
          "Ray's raylet/GCS). Unlike clips/s this hardly moves with the machine's "
          "load, so it shows what each framework adds to the work itself:", "",
          "| method | N | limit | DataLoader | Ray Data, all processes | of which in its read "
          "tasks | limit / Ray (CPU efficiency) |", "|---|---|---|---|---|---|---|"]
    for m, v in res["stream"].items():
        lim = _median(v["limit"], "cpu_ms_per_clip")
        for n in cpus:
            d = _median(v["dataloader"].get(n, []), "cpu_ms_per_clip")
            rr = v["ray"].get(n, [])
            r = _median(rr, "cpu_ms_per_clip")
            t = statistics.median(_task_cpu_ms_per_clip(x) for x in rr) if rr else 0.0
            L.append(f"| {m} | {n} | {lim:.1f} | {d:.1f} | {r:.1f} | {t:.1f} | "
                     f"{(lim / r if r else 0):.2f} |")
    L += ["", "Per-stage wall time, ms per clip: the per-core limit (one process, one thread) and "
          "inside the Ray pipeline's tasks (`Pipeline.stage_seconds`, wall time of each task, so "
          "waiting for a CPU on a loaded machine counts):", ""]
    for m, v in res["stream"].items():
        L.append(f"- {m}, limit: {_ms(_stage_median(v['limit']))} "
                 f"(= {_f(_median(v['limit']))} clips/s, {_median(v['limit'], 'mb_per_s'):.1f} MB/s)")
        for n in cpus:
            rr = [x for x in v["ray"].get(n, []) if x.get("ms_per_clip")]
            if rr:
                L.append(f"- {m}, Ray tasks at N={n}: {_ms(_stage_median(rr))}")
    sh = res["shard"]
    slim = _median(sh["limit"])
    L += ["", "## Sharding: `tympan data shard` vs its per-core limit", "",
          "| N | plain loop x N | `tympan data shard` (job) | job / (limit x N) | "
          "with Ray's start-up | Ray start s | CPU ms/clip: loop / job |",
          "|---|---|---|---|---|---|---|"]
    for n in cpus:
        jobs = sh["job"][n]
        j = _median(jobs)
        L.append(f"| {n} | {_f(slim * n, 1)} | {_f(j, 1)} | {j / (slim * n):.2f} | "
                 f"{_f(_median(jobs, 'end_to_end_clips_per_s'), 1)} | {_median(jobs, 'ray_init_s'):.1f} | "
                 f"{_median(sh['limit'], 'cpu_ms_per_clip'):.1f} / {_median(jobs, 'cpu_ms_per_clip'):.1f} |")
    L += ["", f"Plain loop, ms per clip by stage: {_ms(_stage_median(sh['limit']))} "
          f"(= {_f(slim, 1)} clips/s on one core).", ""]
    if res.get("spectra_ingest"):       # sensor CSVs (issue 12): the ingest against a plain pyarrow read
        L += spectra_section(res)
    mem = res["memory"]
    L += ["## Memory: the stream 10x longer", "",
          "| stream | source | clips | peak PSS, all processes (MB) | peak object store (MB) | clips/s |",
          "|---|---|---|---|---|---|"]
    for tag in ("1x", "10x"):
        x = mem[tag]
        L.append(f"| {tag} | `{x['source'] if not x['source'].startswith('/') else 'shards'}` | "
                 f"{x['clips']} | {_f(x['peak_mb'])} | {_f(x['object_store_mb'])} | {_f(x['clips_per_s'])} |")
    L += ["", f"10x / 1x peak PSS: {res['ratios']['memory_10x_over_1x']:.2f}.", ""]
    h = res["h100_cola"]
    per_core = res["ray_clips_per_s"] / res["cores"]
    L += ["## Feeding one H100 running COLA", "",
          f"- COLA's encoder (EfficientNet-B0, one [96, 64] log-mel crop): {h['gflops_per_view']:.3f} "
          f"GFLOP forward, against {h['gflops_imagenet_224']:.3f} for a 224x224x3 image.",
          f"- NVIDIA measures {A100_EFFNET_B0_IMG_PER_S:.0f} img/s for EfficientNet-B0 mixed-precision "
          f"training on one A100 80GB (DeepLearningExamples); x {H100_OVER_A100} for an H100 "
          "(HBM bandwidth ratio: the network is memory-bound), x the FLOP ratio, / 2 crops per clip:",
          f"  **about {_f(round(h['h100_clips_per_s'], -2))} clips/s** "
          "for one H100 (an estimate for sizing, not a measurement).",
          f"- At this run's Ray rate ({_f(per_core)} clips/s per core) that is "
          f"**~{_f(h['cores_at_ray_rate'])} CPU cores** of data workers; at the per-core limit "
          f"({_f(res['limit_clips_per_s'])} clips/s) ~{_f(h['cores_at_limit_rate'])} cores.", ""]
    L += ["## Targets", ""]
    t = res["ratios"]
    for m in res["stream"]:
        for n in cpus:
            a, b = t[f"{m}_n{n}_ray_vs_limit_x_cores"], t[f"{m}_n{n}_ray_vs_dataloader"]
            L.append(f"- {m}, N={n}: Ray {a:.2f}x (limit x N) (target >= 0.8: "
                     f"{'met' if a >= 0.8 else 'missed'}), {b:.2f}x DataLoader (target >= 1.0: "
                     f"{'met' if b >= 1.0 else 'missed'})")
    for n in cpus:
        a = t[f"shard_n{n}_vs_limit_x_cores"]
        L.append(f"- sharding, N={n}: {a:.2f}x (limit x N) (target >= 0.7: {'met' if a >= 0.7 else 'missed'})")
    mm = t["memory_10x_over_1x"]
    L.append(f"- memory 10x / 1x: {mm:.2f} (target within 10 %: {'met' if abs(mm - 1) <= 0.1 else 'missed'})")
    L += ["", "## Notes", "", NOTES_BEGIN, notes.strip() or "(none yet)", NOTES_END, ""]
    return "\n".join(L)


SPECTRA_HEADING = "## Sensor CSV ingest"


def spectra_section(res: dict[str, Any], command: str | None = None) -> list[str]:
    """The sensor CSV ingest section's lines (``command``: when measured by a run of its own)."""
    si, cfg = res["spectra_ingest"], res["config"]
    year_h = 252e6 / si["ingest_frames_per_s"] / 3600
    L = [SPECTRA_HEADING, ""]
    if command:
        mach = res["machine"]
        L += [f"Measured by `{command}` ({res['seconds']:.0f} s) on {mach['cpu']}, "
              f"{mach['cpu_count']} cores visible, load average {res['load_avg_during']} "
              "(start, end).", ""]
    L += [f"{si['files']} files, {si['frames']} frames of 29 bands ({si['mb']} MB), median of "
          f"{cfg['repeats']} interleaved round(s): `tympan data ingest spectra` (every row "
          f"validated, runs cut) {si['ingest_frames_per_s']:.0f} frames/s vs a plain "
          f"`pyarrow.csv.read_csv` {si['pyarrow_frames_per_s']:.0f} frames/s: ratio "
          f"{si['ingest_over_pyarrow']:.2f} (target >= 0.5: "
          f"{'met' if si['ingest_over_pyarrow'] >= 0.5 else 'missed'}). A year of one sensor "
          f"(252 M frames) at this rate: {year_h * 60:.0f} min.", ""]
    return L


def write_spectra_section(res: dict[str, Any], path: str | Path, command: str) -> Path:
    """Replace (or add, before the memory section) the sensor CSV ingest section of ``path``,
    keeping everything else: ``tympan bench data --only spectra`` measures only that."""
    path = Path(path)
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    new = "\n".join(spectra_section(res, command))
    if SPECTRA_HEADING + "\n" in old:
        head, rest = old.split(SPECTRA_HEADING + "\n", 1)
        i = rest.find("\n## ")
        text = head + new + ("\n" + rest[i + 1:] if i >= 0 else "")
    elif "\n## Memory" in old:
        head, tail = old.split("\n## Memory", 1)
        text = head.rstrip("\n") + "\n\n" + new + "\n## Memory" + tail
    else:
        text = old.rstrip("\n") + "\n\n" + new
    path.write_text(text)
    return path


def write_markdown(res: dict[str, Any], path: str | Path, command: str) -> Path:
    """Write ``path``, keeping the hand-written notes block of the file it replaces and the
    sections other benchmarks keep there (``## `tympan bench train```, ...)."""
    path = Path(path)
    notes, others = "", ""
    if path.exists():
        old = path.read_text()
        if NOTES_BEGIN in old and NOTES_END in old:
            notes = old.split(NOTES_BEGIN, 1)[1].split(NOTES_END, 1)[0]
        parts = old.split("\n## `tympan bench ")
        others = "".join("\n## `tympan bench " + p for p in parts[1:]
                         if not p.startswith("data`"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_markdown(res, command, notes).rstrip("\n") + "\n" + others.rstrip("\n")
                    + ("\n" if others else ""))
    return path


def to_json(res: dict[str, Any]) -> str:
    """The results as JSON (Ray's stats strings included; int dict keys become strings)."""
    return json.dumps(res, indent=1, default=str)
