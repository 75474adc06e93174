"""tympan: self-supervised audio pretraining on Ray.

Subpackages: ``tympan.datasets`` (bytes -> arrays), ``tympan.methods`` (arrays -> loss),
``tympan.distributed`` (Ray Data / Train / MLflow), ``tympan.tuning`` (Ray Tune studies).
``tympan.config`` is a leaf module (stdlib + yaml) that every layer may import.
"""

__version__ = "0.1.0"

# With a source checkout's root first on sys.path (python -c in the repository, a Ray job's
# --working-dir .), `tympan` resolves to this folder instead of the installed package. The
# sibling folders are then the subpackages, so let the package search path include the root.
# (An installed tympan already holds datasets/, methods/... and skips this.)
import os as _os

_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if (_os.path.isfile(_os.path.join(_root, "pyproject.toml"))
        and _os.path.isdir(_os.path.join(_root, "methods"))
        and not _os.path.isdir(_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "methods"))):
    __path__.append(_root)  # noqa: F821 (module __path__)
del _os, _root
