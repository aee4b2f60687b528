#!/usr/bin/env bash
# The demo: installs what it needs, then runs everything on this machine.
# Extra arguments go to `backchannel demo` (e.g. --check, --port 8081).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/backchannel demo "$@"
