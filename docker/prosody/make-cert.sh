#!/bin/bash
# One-shot for docker/compose.prosody.yml: a self-signed certificate for the XMPP domain
# (and *.domain, which covers pubsub. and conference.), unless one is already there.
# Runs in the Prosody image as the prosody user, so the key is readable by Prosody only;
# the certificate is world-readable and is what backchannel trusts (xmpp.ca_file).
# Settings (environment): XMPP_DOMAIN (backchannel.local), CERT_DIR (/certs), CERT_DAYS.
set -euo pipefail

domain=${XMPP_DOMAIN:-backchannel.local}
dir=${CERT_DIR:-/certs}
crt=$dir/$domain.crt
key=$dir/$domain.key

if [[ -s $crt && -s $key ]]; then
    echo "make-cert: $crt exists; keeping it"
    exit 0
fi
mkdir -p "$dir"
umask 077
openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days "${CERT_DAYS:-825}" \
    -subj "/CN=$domain" -addext "subjectAltName=DNS:$domain,DNS:*.$domain" \
    -keyout "$key.tmp" -out "$crt.tmp" 2>/dev/null
chmod 0644 "$crt.tmp"
mv -f "$key.tmp" "$key"
mv -f "$crt.tmp" "$crt"
echo "make-cert: wrote $crt and $key (self-signed, ${CERT_DAYS:-825} days)"
