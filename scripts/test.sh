#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: fast tiny-model tier and the real-model tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
HF_HUB_OFFLINE=1 exec "${FORGETCTL_VENV:-.venv}/bin/python" -m pytest -q -p no:cacheprovider "$@"
