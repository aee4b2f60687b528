#!/usr/bin/env bash
# The test suite: installs what it needs, runs lint, types and every test against a real
# Prosody, then the same suite against ejabberd.
# Extra arguments go to both pytest runs (e.g. -k pipeline, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
BACKCHANNEL_WITH_TEST_TOOLS=1 ./scripts/bootstrap.sh
mkdir -p test-artifacts
echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy --strict" >&2
.venv/bin/mypy
echo "== pytest (Prosody)" >&2
.venv/bin/pytest -q "$@"
if command -v ejabberdctl >/dev/null; then
  echo "== pytest (ejabberd)" >&2
  .venv/bin/pytest -q --xmpp-server=ejabberd "$@"
fi
