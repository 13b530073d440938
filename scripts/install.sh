#!/usr/bin/env bash
# Installs tokgen (editable) and what it needs.
#   bash scripts/install.sh          # the suite
#   bash scripts/install.sh --dev    # the suite and the test tools (pytest)
#
# torch goes in first, on its own: with no torch installed, `pip install tokgen` would resolve
# torch from the index and pull a multi-GB CUDA build.  So: no torch -> torch==2.13.0 (the CPU
# wheel this project's machines carry on disk); any torch already installed (say a CUDA build on
# a GPU box) is left exactly as it is.  Set PYTHON to pick the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=("$PY" -m pip install --disable-pip-version-check --progress-bar off)

if "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[install] keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  echo "[install] no torch found: installing torch==2.13.0 first"
  "${PIP[@]}" "torch==2.13.0"
fi

extra=""
if [ "${1:-}" = "--dev" ]; then extra="[dev]"; fi
echo "[install] installing tokgen$extra (editable) and its dependencies"
"${PIP[@]}" -q -e ".$extra"
# pyenv only sees a new console script after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
echo "[install] done: $(command -v tokgen || echo "tokgen not on PATH; use: $PY -m tokgen")"
