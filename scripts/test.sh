#!/usr/bin/env bash
# Run moai's test suite on a fresh machine: install what it needs, then pytest (integration tests start
# and stop their own servers on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check src tests benchmarks scripts
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
