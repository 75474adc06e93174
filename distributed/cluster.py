"""Which Ray cluster a tympan process joins.

``--address`` when given, else ``RAY_ADDRESS`` (set by ``ray job submit``), else a new embedded
local cluster. Never a bare ``ray.init()``: that silently joins any cluster a ``ray start`` left
running on the machine (another user's, another test's), with its resources and its failures.
"""

from __future__ import annotations

import os


def ensure_ray(address: str | None = None, **local_kwargs):
    """Connect (once per process) as the module docstring says; returns the ``ray`` module.
    ``local_kwargs`` (``include_dashboard``, ``num_cpus`` ...) apply only to a new embedded
    cluster: Ray refuses most of them when joining an existing one."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, configure_logging=False,
                 **(local_kwargs if address == "local" else {}))
    return ray
