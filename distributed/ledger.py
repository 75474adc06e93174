"""Where the pipeline's read tasks report bad clips, example counts and stage times: one small
Ray actor per driver session, shared by every pipeline it builds (keyed by pipeline id).

Kept apart from :mod:`tympan.distributed.pipeline` so the actor's process starts without
importing torch: it only stores tuples.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray


@dataclass(frozen=True)
class BadClip:
    clip_id: str
    reason: str
    where: str
    epoch: int


@ray.remote(num_cpus=0)
class Ledger:
    """Per pipeline: bad clips keyed by (unit, clip, reason, where), so a retried read task does
    not count twice; examples and (read + decode, views) seconds per unit."""

    def __init__(self):
        self.bad: dict[str, dict[tuple, BadClip]] = {}
        self.examples: dict[str, dict[int, int]] = {}
        self.seconds: dict[str, dict[int, tuple[float, float]]] = {}
        self.tallies: dict[str, dict[int, dict[str, int]]] = {}

    def report(self, pipeline: str, unit: int, epoch: int, examples: int,
               bad: list[tuple[str, str, str]], seconds: tuple[float, float],
               counts: dict[str, int] | None = None) -> None:
        if counts:                     # per unit, so a retried read task does not count twice
            self.tallies.setdefault(pipeline, {})[unit] = dict(counts)
        self.examples.setdefault(pipeline, {})[unit] = examples
        self.seconds.setdefault(pipeline, {})[unit] = seconds
        mine = self.bad.setdefault(pipeline, {})
        for clip_id, reason, where in bad:
            mine[(unit, clip_id, reason, where)] = BadClip(clip_id, reason, where, epoch)

    def snapshot(self, pipeline: str) -> tuple[list[BadClip], dict[int, int]]:
        return list(self.bad.get(pipeline, {}).values()), dict(self.examples.get(pipeline, {}))

    def counts(self, pipeline: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.tallies.get(pipeline, {}).values():
            for k, v in c.items():
                out[k] = out.get(k, 0) + v
        return out

    def stage_seconds(self, pipeline: str) -> dict[str, float]:
        seconds = self.seconds.get(pipeline, {})
        return {"units": len(seconds), "examples": sum(self.examples.get(pipeline, {}).values()),
                "read_decode_s": sum(r for r, _ in seconds.values()),
                "views_s": sum(v for _, v in seconds.values())}


_SESSION: tuple[tuple[str, str], object] | None = None     # ((job id, node id), ledger handle)


def session_ledger():
    """This driver's ledger actor, started on first use (and again after a Ray restart).

    Keyed by job id AND node id: a new local cluster in the same process (ray.shutdown(), then
    ray.init()) numbers its jobs from 01000000 again, and reusing the old handle there aborts
    the driver inside Ray (actor_manager.cc "Cannot find actor handle")."""
    global _SESSION
    ctx = ray.get_runtime_context()
    key = (ctx.get_job_id(), ctx.get_node_id())
    if _SESSION is None or _SESSION[0] != key:
        # On the caller's node, strictly (the driver's, or tympan pretrain's stream registry,
        # itself pinned to the head node): a 0-CPU actor may otherwise land on any node, and a
        # training run that loses that node loses every pipeline's ledger with it (seen in the
        # node-removal check with a soft affinity on a loaded machine).
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(key[1], soft=False)
        _SESSION = (key, Ledger.options(scheduling_strategy=here).remote())
    return _SESSION[1]
