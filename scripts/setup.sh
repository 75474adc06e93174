#!/usr/bin/env bash
# Create .venv and install tympan with its pinned dependencies (requirements.lock).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-debian-deps.sh
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv

# pip, quiet, without the local index's "location is ignored" noise; fails when pip fails.
pip_install() { .venv/bin/python -m pip install -q "$@" 2>&1 | { grep -v "is ignored" || true; }; }

pip_install --upgrade "pip>=23.2"
# torch first, from the exact pins: a later resolver pass must not pick another build.
pip_install -c requirements.lock torch==2.14.1 torchaudio==2.11.0 torchvision==0.29.1
# strict editable mode: the namespace subpackages (datasets/, methods/, ...) resolve only so.
pip_install -c requirements.lock -e ".[test]" --config-settings editable_mode=strict
.venv/bin/python -c "import tympan.datasets.frontend, tympan.methods.base, torch, torchaudio, ray" \
  || { echo "setup failed: tympan does not import; see pip output above" >&2; exit 1; }
