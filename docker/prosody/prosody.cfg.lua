-- Prosody 0.12 for docker/compose.prosody.yml (image: docker/prosody/Dockerfile).
--
-- The same server backchannel/localserver/prosody.py generates for the managed
-- development server: SQL storage on SQLite (Prosody's file storage rewrites a whole
-- node on every publish, ~10x slower), a PubSub component with a large
-- pubsub_max_items, a MUC component with public JIDs (the bot must see real JIDs),
-- XEP-0198 stream management, WebSocket and BOSH. Differences, because this one is on a
-- network: TLS is on and required, passwords are stored hashed (SCRAM), it listens on
-- all interfaces of the container, and it runs as the prosody user.
-- tests/test_docker_files.py starts this file on the local Prosody (paths and ports
-- rewritten) and connects backchannel to it over TLS.

daemonize = false
pidfile = "/var/lib/prosody/prosody.pid"
data_path = "/var/lib/prosody"
log = { { levels = { min = "info" }, to = "console" } }

-- Only admins may create PubSub nodes on Prosody: `backchannel nodes bootstrap` logs in
-- as this account.
admins = { "admin@backchannel.local" }

modules_enabled = {
  "roster"; "saslauth"; "tls"; "disco"; "ping"; "posix"; "pep"; "smacks";
  "websocket"; "bosh"; "time"; "version"; "uptime";
}
-- No federation: backchannel needs none. Remove "s2s" here (and publish 5269) to federate.
modules_disabled = { "s2s" }

interfaces = { "*" }
c2s_ports = { 5222 }
http_ports = { 5280 }
http_interfaces = { "*" }
https_ports = { 5281 }
https_interfaces = { "*" }

-- TLS. The prosody-cert one-shot writes a self-signed pair here on the first start
-- (docker/prosody/make-cert.sh); replace the two files with a real certificate
-- (full chain) and key for the domain to drop backchannel's xmpp.ca_file.
certificates = "/certs"
ssl = {
  certificate = "/certs/backchannel.local.crt";
  key = "/certs/backchannel.local.key";
}
c2s_require_encryption = true
allow_unencrypted_plain_auth = false
authentication = "internal_hashed"
-- WebSocket and BOSH over plain http (5280) count as unencrypted, so logins there are
-- refused: browsers use wss://<host>:5281/xmpp-websocket, or a TLS proxy in front with
-- consider_websocket_secure = true / consider_bosh_secure = true.

storage = "sql"
sql = { driver = "SQLite3", database = "prosody.sqlite" }  -- in data_path
smacks_hibernation_time = 120
-- Ask clients for an XEP-0198 ack once more than 10 stanzas are unacknowledged, not after
-- every stanza (the default): saves each chat command and notification a round of <r/>/<a/>.
smacks_max_unacked_stanzas = 10

VirtualHost "backchannel.local"

Component "pubsub.backchannel.local" "pubsub"
  -- Caps every node's max_items; backchannel asks for nodes.max_items (10000).
  pubsub_max_items = 100000

Component "conference.backchannel.local" "muc"
  muc_room_default_public_jids = true
  muc_room_default_persistent = true
  muc_room_locking = false
