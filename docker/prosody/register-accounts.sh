#!/bin/bash
# One-shot for docker/compose.prosody.yml: create the backchannel accounts with
# prosodyctl, passwords from the environment (BACKCHANNEL_ACCOUNTS_<NAME>_PASSWORD, the
# same variables backchannel reads). Running it again sets the passwords again, so a
# rotation is: edit docker/.env, then `docker compose ... up prosody-accounts`.
# "admin" is listed in prosody.cfg.lua's admins: it owns the PubSub nodes.
# Settings (environment): XMPP_DOMAIN (backchannel.local), PROSODY_CONFIG.
set -euo pipefail

domain=${XMPP_DOMAIN:-backchannel.local}
config=${PROSODY_CONFIG:-/etc/prosody/prosody.cfg.lua}
accounts=(admin worker gateway bot operator site)

missing=()
for name in "${accounts[@]}"; do
    var=BACKCHANNEL_ACCOUNTS_${name^^}_PASSWORD
    [[ -n ${!var-} ]] || missing+=("$var")
done
if ((${#missing[@]})); then
    echo "register-accounts: set ${missing[*]} (see docker/.env.example)" >&2
    exit 1
fi

for name in "${accounts[@]}"; do
    var=BACKCHANNEL_ACCOUNTS_${name^^}_PASSWORD
    prosodyctl --config "$config" register "$name" "$domain" "${!var}"
    echo "register-accounts: $name@$domain"
done
