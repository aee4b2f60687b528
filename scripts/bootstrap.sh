#!/usr/bin/env bash
# Install what backchannel needs on a Debian/Ubuntu machine, idempotently:
#   - system packages: prosody + lua-dbi-sqlite3 (the managed XMPP server); for the tests
#     also ejabberd (compatibility suite), chromium (dashboard browser test) and
#     docker-compose (validates the compose files offline);
#   - a virtualenv in .venv with backchannel and its dev tools;
#   - for the tests, xmpp.js (an XMPP client we did not write, for the interop check) in
#     tests/interop/node_modules, from tests/interop/package-lock.json (needs Node.js >= 20.10).
# Re-running it is cheap: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in prosody lua-dbi-sqlite3 ${BACKCHANNEL_EXTRA_APT:-}; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need_apt+=("$pkg")
done
if [ "${BACKCHANNEL_WITH_TEST_TOOLS:-0}" = 1 ]; then
  for pkg in ejabberd chromium docker-compose; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need_apt+=("$pkg")
  done
  # Node.js for the interop client; machines of this project come with Node.js 20.
  command -v npm >/dev/null || need_apt+=(nodejs npm)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing system packages: ${need_apt[*]}" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${need_apt[@]}" >/dev/null
  # The packages start system-wide daemons where an init system runs; backchannel starts
  # its own instances on free loopback ports, so those are not needed.
  for svc in prosody ejabberd; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
      $SUDO systemctl stop "$svc" || true
    fi
  done
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.backchannel-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing backchannel into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi

if [ "${BACKCHANNEL_WITH_TEST_TOOLS:-0}" = 1 ]; then
  interop=tests/interop
  if [ ! -f "$interop/node_modules/.backchannel-installed" ] \
      || [ "$interop/package-lock.json" -nt "$interop/node_modules/.backchannel-installed" ]; then
    echo "bootstrap: installing the interop client (xmpp.js) into $interop/node_modules" >&2
    (cd "$interop" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$interop/node_modules/.backchannel-installed"
  fi
fi
