#!/bin/bash
# Openfire with unattended setup, for docker/compose.openfire.yml.
#
# The compose file runs this as the *command* of the official image, whose entrypoint
# (/sbin/entrypoint.sh) first prepares /var/lib/openfire (conf, plugins, keystore) and
# then executes "$@" as root. Here we:
#   1. on the first start only (no <setup>true</setup> yet), write the openfire.xml
#      template into the data volume with its ${BACKCHANNEL_...} placeholders replaced
#      by the environment (XML-escaped); refuse to start if any is unset or empty;
#   2. start Openfire exactly as the image's entrypoint does by default.
# Openfire reads <autosetup>, creates the accounts, generates a self-signed certificate
# for the domain, marks itself set up and deletes the section (and its passwords).
#
#   start.sh                       seed (first start) and run Openfire
#   start.sh render TEMPLATE DEST  only render the template (used by the tests)
set -euo pipefail

TEMPLATE=${BACKCHANNEL_OPENFIRE_TEMPLATE:-/opt/backchannel/openfire.xml}

xml_escape() {
    local v=$1
    v=${v//"&"/"&amp;"}
    v=${v//"<"/"&lt;"}
    v=${v//">"/"&gt;"}
    v=${v//'"'/"&quot;"}
    printf '%s' "$v"
}

render() {
    # One pass over the template: a value is never scanned again for placeholders.
    local template=$1 dest=$2 rest out="" match name value
    local -a missing=()
    rest=$(<"$template")
    while [[ $rest =~ \$\{(BACKCHANNEL_[A-Z0-9_]+)\} ]]; do
        match=${BASH_REMATCH[0]}
        name=${BASH_REMATCH[1]}
        value=${!name-}
        [[ -n $value ]] || missing+=("$name")
        out+=${rest%%"$match"*}$(xml_escape "$value")
        rest=${rest#*"$match"}
    done
    out+=$rest
    if ((${#missing[@]})); then
        echo "openfire setup: set ${missing[*]} (see docker/.env.example)" >&2
        return 1
    fi
    (umask 077 && printf '%s\n' "$out" >"$dest.tmp")
    mv -f "$dest.tmp" "$dest"
}

seed() {
    local data=${OPENFIRE_DATA_DIR:-/var/lib/openfire}
    local conf=$data/conf/openfire.xml
    if grep -qs '<setup>true</setup>' "$conf"; then
        echo "openfire setup: $conf says setup is done; leaving it alone"
        return 0
    fi
    mkdir -p "$data/conf"
    render "$TEMPLATE" "$conf"
    if [[ $(id -u) == 0 ]]; then
        chown "${OPENFIRE_USER:-openfire}:${OPENFIRE_USER:-openfire}" "$conf"
    fi
    echo "openfire setup: wrote $conf from $TEMPLATE; Openfire will run its autosetup"
}

case ${1:-} in
    render)
        render "$2" "$3"
        ;;
    "")
        seed
        user=${OPENFIRE_USER:-openfire}
        exec start-stop-daemon --start --chuid "$user:$user" \
            --exec "${OPENFIRE_DIR:-/usr/local/openfire}/bin/openfire.sh"
        ;;
    *)
        echo "usage: start.sh [render TEMPLATE DEST]" >&2
        exit 2
        ;;
esac
