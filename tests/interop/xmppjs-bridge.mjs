// A thin line-JSON bridge around xmpp.js (@xmpp/client), an XMPP client library we did
// not write, so tests can check that a standard client interoperates with backchannel.
//
// Usage: node xmppjs-bridge.mjs  (connection settings in the environment:
//   XMPP_SERVICE=xmpp://127.0.0.1:5222 XMPP_DOMAIN=localhost XMPP_USERNAME=operator
//   XMPP_PASSWORD=... XMPP_RESOURCE=interop)
//
// Every XMPP stanza is built and parsed by xmpp.js here; the test only says what to do.
// stdin, one JSON command per line:
//   {"op": "send", "to": JID, "body": TEXT, "type": "chat",      a message; optional:
//    "chatstate": "active", "receipt": true, "origin_id": true}  XEP-0085/0184/0359
//   {"op": "subscribe", "service": JID, "node": NAME}           XEP-0060 subscribe (bare JID)
//   {"op": "unsubscribe", "service": JID, "node": NAME}
//   {"op": "join", "room": ROOM_JID, "nick": NICK}              XEP-0045 join, no history
//   {"op": "quit"}
// stdout, one JSON event per line:
//   {"event": "online", "jid", "mechanism", "secure", "stream_management"}
//                                                    after login, presence sent
//   {"event": "message", "from", "type", "body"}     a message with a body
//   {"event": "item", "from", "node", "id", "json", "xml"}  a PubSub notification item
//   {"event": "subscribed", "node", "subscription", "subid"}
//   {"event": "unsubscribed", "node"}
//   {"event": "error", "op", "message", "condition"}
//   {"event": "joined", "room", "nick"}              our own presence came back (status 110)
//   {"event": "closed"}
import { randomUUID } from "node:crypto";
import { createInterface } from "node:readline";
import { client, xml } from "@xmpp/client";

const NS_PUBSUB = "http://jabber.org/protocol/pubsub";
const NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event";
const NS_JSON = "urn:xmpp:json:0";
const NS_CHATSTATES = "http://jabber.org/protocol/chatstates";
const NS_RECEIPTS = "urn:xmpp:receipts";
const NS_SID = "urn:xmpp:sid:0";
const NS_MUC = "http://jabber.org/protocol/muc";
const NS_MUC_USER = "http://jabber.org/protocol/muc#user";

function emit(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

const env = process.env;
for (const name of ["XMPP_SERVICE", "XMPP_DOMAIN", "XMPP_USERNAME", "XMPP_PASSWORD"]) {
  if (!env[name]) {
    emit({ event: "error", op: "start", message: `${name} is not set` });
    process.exit(2);
  }
}

const xmpp = client({
  service: env.XMPP_SERVICE,
  domain: env.XMPP_DOMAIN,
  username: env.XMPP_USERNAME,
  password: env.XMPP_PASSWORD,
  resource: env.XMPP_RESOURCE || "interop",
});
// A test wants to see a failure, not a client quietly reconnecting behind its back.
xmpp.reconnect.stop();

let quitting = false;
let mechanism = null;

// The conversation, to stderr for a failing test's report; SASL payloads left out.
const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_SASL2 = "urn:xmpp:sasl:2";
const NS_SM = "urn:xmpp:sm:3";
function trace(direction, element) {
  if (element.attrs.xmlns === NS_SASL || element.attrs.xmlns === NS_SASL2) {
    if (element.attrs.mechanism) mechanism = element.attrs.mechanism ?? null;
    process.stderr.write(`${direction} <${element.name} xmlns sasl mechanism=${
      element.attrs.mechanism ?? ""}>\n`);
    return;
  }
  process.stderr.write(`${direction} ${element.toString()}\n`);
}
let smOffered = false;
xmpp.on("element", (element) => {
  if (element.is("features", "http://etherx.jabber.org/streams")) {
    smOffered = element.getChild("sm", NS_SM) !== undefined;
  }
  trace("<-", element);
});
xmpp.on("send", (element) => trace("->", element));

xmpp.on("error", (err) => {
  emit({ event: "error", op: "connection", message: String(err?.message ?? err),
         condition: err?.condition ?? null });
});

xmpp.on("offline", () => {
  emit({ event: "closed" });
  process.exit(quitting ? 0 : 1);
});

function onPresence(stanza) {
  const [room, nick] = (stanza.attrs.from ?? "").split(/\/(.*)/s);
  if (stanza.attrs.type === "error") {
    const error = stanza.getChild("error");
    const condition = error?.children.find((c) => typeof c !== "string")?.name ?? null;
    emit({ event: "error", op: "join", message: `presence error from ${stanza.attrs.from}`,
           condition });
    return;
  }
  const x = stanza.getChild("x", NS_MUC_USER);
  if (x?.getChildren("status").some((s) => s.attrs.code === "110")) {
    emit({ event: "joined", room, nick });
  }
}

xmpp.on("stanza", (stanza) => {
  if (stanza.is("presence")) {
    onPresence(stanza);
    return;
  }
  if (!stanza.is("message")) return;
  const from = stanza.attrs.from ?? "";
  const type = stanza.attrs.type ?? "normal";
  const event = stanza.getChild("event", NS_PUBSUB_EVENT);
  if (event) {
    const items = event.getChild("items");
    for (const item of items?.getChildren("item") ?? []) {
      const payload = item.children.find((c) => typeof c !== "string");
      const json = item.getChild("json", NS_JSON);
      emit({ event: "item", from, node: items.attrs.node, id: item.attrs.id ?? null,
             json: json ? json.text() : null, xml: payload ? payload.toString() : null });
    }
    return;
  }
  const body = stanza.getChildText("body");
  if (body !== null) emit({ event: "message", from, type, body });
});

async function handle(cmd) {
  switch (cmd.op) {
    case "send": {
      // What Jabber clients put around a line (Conversations, Gajim, Dino...): a chat
      // state, a delivery receipt request, an origin-id. A chat state alone has no body.
      const children = [];
      if (cmd.body) children.push(xml("body", {}, cmd.body));
      if (cmd.chatstate) children.push(xml(cmd.chatstate, { xmlns: NS_CHATSTATES }));
      if (cmd.receipt) children.push(xml("request", { xmlns: NS_RECEIPTS }));
      if (cmd.origin_id) children.push(xml("origin-id", { xmlns: NS_SID, id: randomUUID() }));
      await xmpp.send(xml("message", { to: cmd.to, type: cmd.type ?? "chat", id: randomUUID() },
                          ...children));
      return;
    }
    case "subscribe": {
      const reply = await xmpp.iqCaller.set(
        xml("pubsub", { xmlns: NS_PUBSUB },
            xml("subscribe", { node: cmd.node, jid: xmpp.jid.bare().toString() })),
        cmd.service);
      const sub = reply?.getChild("subscription");
      emit({ event: "subscribed", node: cmd.node,
             subscription: sub?.attrs.subscription ?? null, subid: sub?.attrs.subid ?? null });
      return;
    }
    case "unsubscribe":
      await xmpp.iqCaller.set(
        xml("pubsub", { xmlns: NS_PUBSUB },
            xml("unsubscribe", { node: cmd.node, jid: xmpp.jid.bare().toString() })),
        cmd.service);
      emit({ event: "unsubscribed", node: cmd.node });
      return;
    case "join":
      await xmpp.send(xml("presence", { to: `${cmd.room}/${cmd.nick}` },
                          xml("x", { xmlns: NS_MUC },
                              xml("history", { maxstanzas: "0" }))));
      return;
    case "quit":
      quitting = true;
      await xmpp.stop();
      return;
    default:
      throw new Error(`unknown op ${JSON.stringify(cmd.op)}`);
  }
}

try {
  await xmpp.start();
} catch (err) {
  emit({ event: "error", op: "start", message: String(err?.message ?? err),
         condition: err?.condition ?? null });
  process.exit(1);
}
// xmpp.js 0.14.0 enables stream management (XEP-0198) right after binding, without
// waiting, and a stanza the server sends before <enabled/> can be counted after its reset
// of the inbound counter: it then acknowledges one stanza too many, which ejabberd answers
// with a stream error ("Client acknowledged more stanzas than sent by server"; Prosody
// tolerates it). A race in the client, not in backchannel: send nothing that draws a
// reply until <enabled/> is in.
if (smOffered) {
  const deadline = Date.now() + 5000;
  while (!xmpp.streamManagement.enabled && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
// Presence with the default priority 0: PubSub notifications to our bare JID reach us.
await xmpp.send(xml("presence"));
emit({ event: "online", jid: xmpp.jid.toString(), mechanism, secure: xmpp.isSecure(),
       stream_management: xmpp.streamManagement.enabled });

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let cmd;
  try {
    cmd = JSON.parse(line);
    await handle(cmd);
  } catch (err) {
    emit({ event: "error", op: cmd?.op ?? null, message: String(err?.message ?? err),
           condition: err?.condition ?? null });
  }
}
// stdin closed: leave cleanly.
if (!quitting) {
  quitting = true;
  await xmpp.stop();
}
