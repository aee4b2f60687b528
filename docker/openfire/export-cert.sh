#!/bin/bash
# One-shot for docker/compose.openfire.yml: export the certificate Openfire generated for
# the XMPP domain at setup (self-signed, naming the domain and *.domain) as PEM, so
# backchannel can trust it (xmpp.ca_file). Runs in the Openfire image, which has keytool.
# Waits (with a deadline) for the keystore entry, because setup writes it.
#
# Settings (environment): XMPP_DOMAIN (backchannel.local), OPENFIRE_KEYSTORE,
# OPENFIRE_KEYSTORE_PASSWORD (Openfire's default "changeit"), OPENFIRE_CERT_ALIAS
# (<domain>_rsa, Openfire's name for it), CERT_OUT (/certs/openfire.pem), WAIT_SECONDS.
set -euo pipefail

domain=${XMPP_DOMAIN:-backchannel.local}
keystore=${OPENFIRE_KEYSTORE:-/var/lib/openfire/conf/security/keystore}
storepass=${OPENFIRE_KEYSTORE_PASSWORD:-changeit}
alias_name=${OPENFIRE_CERT_ALIAS:-${domain,,}_rsa}
out=${CERT_OUT:-/certs/openfire.pem}
deadline=$((SECONDS + ${WAIT_SECONDS:-180}))

until keytool -list -keystore "$keystore" -storepass "$storepass" -alias "$alias_name" \
        >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
        echo "export-cert: no entry '$alias_name' in $keystore; entries:" >&2
        keytool -list -keystore "$keystore" -storepass "$storepass" 2>&1 | sed 's/^/  /' >&2 || true
        exit 1
    fi
    sleep 2
done

mkdir -p "$(dirname "$out")"
keytool -exportcert -rfc -keystore "$keystore" -storepass "$storepass" -alias "$alias_name" \
    -file "$out.tmp" >/dev/null
chmod 0644 "$out.tmp"
mv -f "$out.tmp" "$out"
echo "export-cert: wrote $out ($alias_name)"
