"""``tympan data offline``: build the offline real-audio corpus family in one directory.

    OUT/tasks/<task>/...          HEAR task folders (recorded: recorded_tasks,
                                  synthesized: synth_tasks)
    OUT/manifests/<task>.parquet  tympan manifests of the tasks (+ av.parquet)
    OUT/av/...                    the audio-visual corpus and image set (offline_av)
    OUT/sensors/...               a simulated acoustic sensor network: third-octave CSVs with
                                  faults, their runs, the task sensor_sources (sensors.py)
    OUT/pretrain/                 sources.json + WebDataset shards of the pretraining mix
    OUT/tasks.md                  the generated table of tasks (classes, sizes, chance, baseline)
    OUT/report.json               what was built, how long each part took
    OUT/.completed/<part>         markers: a rerun skips finished parts (lhotse-style)

Parts run in dependency order; the Debian download (network + xz, mostly waiting) overlaps the
synthesized tasks (CPU). ``language_id`` is built after the download as its own part: its extra
test split ``test_human`` is real human speech from the Debian packages. The pretraining corpus
comes last because it must read every task's manifest to keep test-side sources out.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from tympan.datasets.offline.scales import RecordedScale, scale_named
from tympan.datasets.offline.tasks import TaskInfo, read_task_info, write_tasks_table

log = logging.getLogger(__name__)
# Version of the set of parts and what each writes. Markers from another layout would skip parts
# whose output changed (layout 1 had a separate task language_id_human), so they are dropped.
LAYOUT = 3          # 3: + sensors
STALE_TASKS = ("language_id_human",)


def _marker(out: Path, part: str) -> Path:
    return out / ".completed" / part


def _run_part(out: Path, part: str, fn: Callable[[], Any], report: dict) -> Any:
    """Run ``fn`` unless its marker exists; record seconds and its JSON result in ``report``."""
    m = _marker(out, part)
    if m.exists():
        result = json.loads(m.read_text())
        report["parts"][part] = {"seconds": 0.0, "skipped": True, **result.get("_timing", {})}
        print(f"[offline] {part}: already built, skipped", flush=True)
        return result["value"]
    t0 = time.perf_counter()
    value = fn()
    dt = round(time.perf_counter() - t0, 1)
    m.parent.mkdir(parents=True, exist_ok=True)
    tmp = m.with_name(f".{m.name}.tmp")
    tmp.write_text(json.dumps({"value": value, "_timing": {"built_seconds": dt}}, default=str))
    os.replace(tmp, m)
    report["parts"][part] = {"seconds": dt, "skipped": False}
    print(f"[offline] {part}: {dt:.1f} s", flush=True)
    return value


def _check_layout(out: Path) -> None:
    """Drop the markers (and stale task folders) of a build written with another ``LAYOUT``."""
    import shutil
    done, tag = out / ".completed", out / ".completed" / "_layout"
    if done.exists() and (not tag.exists() or tag.read_text().strip() != str(LAYOUT)):
        print(f"[offline] {out}: built with another layout, rebuilding every part", flush=True)
        shutil.rmtree(done)
        for name in STALE_TASKS:
            shutil.rmtree(out / "tasks" / name, ignore_errors=True)
            (out / "manifests" / f"{name}.parquet").unlink(missing_ok=True)
    done.mkdir(parents=True, exist_ok=True)
    tag.write_text(f"{LAYOUT}\n")


def _task_names(infos: list[TaskInfo]) -> list[str]:
    return [i.name for i in infos]


def _recorded_pools(cache: Path | None, s: RecordedScale) -> dict[str, list]:
    """Candidate recordings per role for the pretraining mix (test-side ones are removed later)."""
    from tympan.datasets.offline import recorded_tasks as rt
    from tympan.datasets.offline.debian import recordings
    music = recordings(cache, "hedgewars-data", [f"{rt.HW}/Music/*"], limit=s.music_files)
    music += recordings(cache, "wesnoth-1.16-music", ["*"], limit=s.music_files)
    return {"speech": recordings(cache, "hedgewars-data", [f"{rt.HW}/Sounds/voices/*"]),
            "music": music,
            "scene": [r for beds in rt.scene_beds(cache).values() for r in beds]}


def build_offline(out: str | os.PathLike, scale: str = "small", seed: int = 0,
                  cache_dir: str | os.PathLike | None = None, *, with_av: bool = True,
                  table_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Build everything of issue 4 under ``out``; returns (and writes) the report.

    ``cache_dir``: Debian download/convert cache (default ``~/.cache/tympan/debian``).
    ``table_path``: also write/update the task table there (e.g. ``docs/offline_tasks.md``).
    """
    from tympan.datasets.offline import recorded_tasks as rt
    from tympan.datasets.offline.debian import ensure_packages
    sizes = scale_named(scale)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_layout(out)
    cache = Path(cache_dir) if cache_dir else None
    report: dict[str, Any] = {"scale": scale, "seed": seed, "out": str(out.resolve()), "parts": {}}
    t0 = time.perf_counter()

    def fetch() -> dict[str, str]:
        return {k: str(v) for k, v in ensure_packages(sizes.recorded.packages, cache).items()}

    def synth() -> list[str]:
        from tympan.datasets.offline.synth_tasks import SYNTH_TASKS, build_synth_tasks
        only = tuple(n for n in SYNTH_TASKS if n != "language_id")
        return _task_names(build_synth_tasks(out, sizes.synth, seed, cache, only=only))

    def language_id() -> list[str]:
        # espeak-ng train/valid/test + real human speech as the extra split test_human (issue 4)
        from tympan.datasets.offline.synth_tasks import LANGUAGES, build_synth_tasks
        human = rt.human_language_examples(cache, tuple(LANGUAGES), sizes.recorded, seed)
        return _task_names(build_synth_tasks(out, sizes.synth, seed, cache, only=("language_id",),
                                             language_extra={"test_human": human}))

    # The download + unpack waits on the network and xz; synthesis keeps the CPU busy meanwhile.
    with ThreadPoolExecutor(max_workers=1) as pool:
        fetching = pool.submit(_run_part, out, "debian", fetch, report)
        synth_names = _run_part(out, "synth_tasks", synth, report)
        fetching.result()
    synth_names = list(synth_names) + list(_run_part(out, "language_id", language_id, report))
    rec_names = _run_part(out, "recorded_tasks",
                          lambda: _task_names(rt.build_recorded_tasks(out, sizes.recorded, seed, cache)), report)
    if with_av:
        def av() -> dict:
            from tympan.datasets.offline.av import build_av_corpus
            return build_av_corpus(out, sizes.av, seed, cache)
        report["av"] = _run_part(out, "av", av, report)

    def sensors() -> dict:
        from tympan.datasets.offline.sensors import build_sensor_network
        return build_sensor_network(out, sizes.sensors, seed, cache)
    report["sensors"] = _run_part(out, "sensors", sensors, report)

    def pretrain() -> dict:
        from tympan.datasets.offline.pretrain import (PretrainMixer, collect_sources, write_pretrain_shards,
                                                      write_sources)
        sources = collect_sources(out, _recorded_pools(cache, sizes.recorded))
        write_sources(sources, out / "pretrain" / "sources.json")
        mixer = PretrainMixer.from_build(out)
        res = write_pretrain_shards(mixer, str(out / "pretrain" / "shards"), seed=seed,
                                    n_clips=sizes.pretrain.clips, shard_size=sizes.pretrain.shard_size)
        res["pools"] = {k: len(v) for k, v in sources["recordings"].items()}
        res["espeak_voices"], res["programs"] = len(sources["espeak"]), len(sources["programs"])
        return res
    report["pretrain"] = _run_part(out, "pretrain", pretrain, report)

    infos = [read_task_info(out / "tasks" / n) for n in list(synth_names) + list(rec_names)]
    report["tasks"] = [i.to_dict() for i in infos]
    write_tasks_table(infos, out / "tasks.md", scale=scale)
    if table_path:
        write_tasks_table(infos, table_path, scale=scale)
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    report["size_mb"] = round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6, 1)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"[offline] {scale}: {len(infos)} tasks, {report['size_mb']} MB, {report['total_seconds']} s "
          f"-> {out}", flush=True)
    return report
