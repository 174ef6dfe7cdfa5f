#!/usr/bin/env bash
# Set up (idempotent) and run the end-to-end deletion demo on the embedded SmolLM2 model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
HF_HUB_OFFLINE=1 exec "${FORGETCTL_VENV:-.venv}/bin/forgetctl" demo "$@"
