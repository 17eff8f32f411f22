// Drive a real xmpp.js (@xmpp/client) session for tests/interop/test_xmppjs.py.
//
// Usage: node --experimental-websocket xmppjs-driver.js '{"service": "xmpp://127.0.0.1:5222" | "ws://...",
//          "domain": "localhost", "username": "alice", "password": "pw", "resource": "xmppjs"}'
//
// Protocol (JSON lines): the test writes commands to stdin, {"id": 1, "cmd": "roster_get"}; this script
// writes events to stdout: {"event": "online", ...}, {"event": "message", ...}, {"event": "presence", ...},
// {"event": "roster_push", ...}, {"event": "result", "id": 1, "ok": true, ...}, {"event": "error", ...}.
// Only the XMPP work is done by xmpp.js; the test decides what to do and checks what came back.
import { client, xml } from "@xmpp/client";

const NS_ROSTER = "jabber:iq:roster"; // RFC 6121 §2

const options = JSON.parse(process.argv[2] ?? "{}");
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const xmpp = client({
  service: options.service,
  domain: options.domain,
  username: options.username,
  password: options.password,
  resource: options.resource ?? "xmppjs",
  timeout: options.timeout ?? 10000,
});
xmpp.reconnect.stop(); // a failed login must fail the scenario, not loop

const items = (query) =>
  (query?.getChildren("item") ?? []).map((i) => ({
    jid: i.attrs.jid,
    name: i.attrs.name ?? null,
    subscription: i.attrs.subscription ?? "none",
    ask: i.attrs.ask ?? null,
  }));

// RFC 6121 §2.1.6: a roster push must be acknowledged with an empty result.
xmpp.iqCallee.set(NS_ROSTER, "query", (ctx) => {
  const from = ctx.stanza.attrs.from;
  if (from && from !== xmpp.jid.bare().toString() && from !== options.domain) return undefined; // spoofed
  out({ event: "roster_push", items: items(ctx.element) });
  return true; // empty <iq type="result"/>
});

xmpp.on("error", (err) => out({ event: "error", message: String(err?.message ?? err) }));
xmpp.on("offline", () => out({ event: "offline" }));
xmpp.on("stanza", (st) => {
  if (st.is("message")) {
    const body = st.getChildText("body");
    if (body !== null) out({ event: "message", from: st.attrs.from, type: st.attrs.type ?? "normal", body });
  } else if (st.is("presence")) {
    out({
      event: "presence",
      from: st.attrs.from,
      type: st.attrs.type ?? "available",
      status: st.getChildText("status"),
      show: st.getChildText("show"),
    });
  }
});

xmpp.on("online", (address) => {
  const raw = xmpp.socket?.socket;
  out({
    event: "online",
    jid: address.toString(),
    secure: xmpp.isSecure(),
    tls: typeof raw?.getProtocol === "function" ? raw.getProtocol() : null,
    transport: options.service.startsWith("ws") ? "websocket" : "tcp",
  });
});

const commands = {
  async roster_get() {
    const res = await xmpp.iqCaller.request(xml("iq", { type: "get" }, xml("query", { xmlns: NS_ROSTER })));
    return { items: items(res.getChild("query", NS_ROSTER)) };
  },
  async roster_set({ jid, name }) {
    await xmpp.iqCaller.request(
      xml("iq", { type: "set" }, xml("query", { xmlns: NS_ROSTER }, xml("item", { jid, name: name ?? "" }))),
    );
    return {};
  },
  async roster_remove({ jid }) {
    await xmpp.iqCaller.request(
      xml("iq", { type: "set" }, xml("query", { xmlns: NS_ROSTER }, xml("item", { jid, subscription: "remove" }))),
    );
    return {};
  },
  async presence({ to, type, status, show }) {
    const children = [];
    if (show) children.push(xml("show", {}, show));
    if (status) children.push(xml("status", {}, status));
    const attrs = {};
    if (to) attrs.to = to;
    if (type) attrs.type = type;
    await xmpp.send(xml("presence", attrs, ...children));
    return {};
  },
  async message({ to, body, type }) {
    await xmpp.send(xml("message", { to, type: type ?? "chat" }, xml("body", {}, body)));
    return {};
  },
  async stop() {
    await xmpp.stop();
    setTimeout(() => process.exit(0), 50);
    return {};
  },
};

let buffer = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  buffer += chunk;
  let nl;
  while ((nl = buffer.indexOf("\n")) >= 0) {
    const line = buffer.slice(0, nl).trim();
    buffer = buffer.slice(nl + 1);
    if (!line) continue;
    const req = JSON.parse(line);
    const fn = commands[req.cmd];
    if (!fn) {
      out({ event: "result", id: req.id, ok: false, error: `unknown command ${req.cmd}` });
      continue;
    }
    fn(req)
      .then((res) => out({ event: "result", id: req.id, ok: true, ...res }))
      .catch((err) => out({ event: "result", id: req.id, ok: false, error: String(err?.message ?? err) }));
  }
});
process.stdin.on("end", () => {
  xmpp.stop().finally(() => process.exit(0));
});

xmpp.start().catch((err) => {
  out({ event: "login_failed", message: String(err?.message ?? err), condition: err?.condition ?? null });
  setTimeout(() => process.exit(2), 50);
});
