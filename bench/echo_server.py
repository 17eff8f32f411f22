"""A trivial XMPP-shaped echo server: the load generator's ceiling (issue 12).

It speaks just enough c2s to run the same workloads as the real servers — stream headers, STARTTLS,
SASL SCRAM-SHA-1 (any user, one fixed password), XEP-0077 registration that always succeeds, bind —
and then routes each <message/> to the session bound to the ``to`` bare JID, or bounces it back to
its sender. No roster, no presence, no storage. A real server must do strictly more work per stanza,
so the generator's figures against this server bound what it can measure.

Run: ``python -m bench.echo_server --port 17522 --cert C --key K``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ssl
from xml.parsers import expat

from scramp import ScramMechanism

from bench.xmpp import NS_BIND, NS_SASL, NS_STREAMS, NS_TLS, Element, StreamParser, serialize

PASSWORD = "benchpw"
_MECH = ScramMechanism("SCRAM-SHA-1")
_AUTH_INFO = _MECH.make_auth_info(PASSWORD, iteration_count=4096)


class EchoSession(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: EchoServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.tls = False
        self.authed_user = ""
        self.jid = ""
        self.bare = ""
        self._scram: object | None = None
        self._pending_user = ""
        self._held: list[str] | None = None
        self._parser = self._new_parser()

    def _new_parser(self) -> StreamParser:
        return StreamParser(self._on_header, self._on_stanza, self._on_close)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed(data)
        except expat.ExpatError:
            self._abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.bare and self.server.sessions.get(self.bare) is self:
            del self.server.sessions[self.bare]

    def _write(self, s: str) -> None:
        if self._held is not None:  # TLS handshake in progress: the TLS transport is not ours yet
            self._held.append(s)
            return
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(s.encode())

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _on_close(self) -> None:
        self._write("</stream:stream>")
        if self.transport is not None:
            self.transport.close()

    def _on_header(self, attrs: dict[str, str]) -> None:
        domain = self.server.domain
        self._write(
            f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{NS_STREAMS}' "
            f"from='{domain}' id='e{id(self):x}' version='1.0'>"
        )
        if self.authed_user:
            feats = f"<bind xmlns='{NS_BIND}'/>"
        else:
            feats = (f"<mechanisms xmlns='{NS_SASL}'><mechanism>SCRAM-SHA-1</mechanism></mechanisms>"
                     "<register xmlns='http://jabber.org/features/iq-register'/>")
            if not self.tls:
                feats = f"<starttls xmlns='{NS_TLS}'/>" + feats
        self._write(f"<stream:features>{feats}</stream:features>")

    def _on_stanza(self, el: Element) -> None:
        tag = el.tag
        if tag == "message":
            target = self.server.sessions.get(el.attrs.get("to", "").split("/", 1)[0])
            el.attrs["from"] = self.jid
            (target or self)._write(serialize(el))
        elif tag == "iq":
            self._iq(el)
        elif tag == "starttls":
            if self.transport is not None:
                self.transport.pause_reading()  # the ClientHello must not reach the XML parser
            self._write(f"<proceed xmlns='{NS_TLS}'/>")
            asyncio.get_running_loop().create_task(self._starttls())
        elif tag == "auth":
            user = ""
            try:
                server = _MECH.make_server(lambda _u: _AUTH_INFO)
                client_first = base64.b64decode(el.text).decode()
                server.set_client_first(client_first)
                user = client_first.split("n=", 2)[-1].split(",", 1)[0]
                self._scram = server
                self._write(f"<challenge xmlns='{NS_SASL}'>"
                            f"{base64.b64encode(server.get_server_first().encode()).decode()}</challenge>")
            except Exception:
                self._write(f"<failure xmlns='{NS_SASL}'><not-authorized/></failure>")
            self.authed_user = ""
            self._pending_user = user
        elif tag == "response":
            server = self._scram
            try:
                server.set_client_final(base64.b64decode(el.text).decode())  # type: ignore[attr-defined]
                final = server.get_server_final()  # type: ignore[attr-defined]
            except Exception:
                self._write(f"<failure xmlns='{NS_SASL}'><not-authorized/></failure>")
                return
            self.authed_user = self._pending_user
            self._parser = self._new_parser()
            self._write(f"<success xmlns='{NS_SASL}'>{base64.b64encode(final.encode()).decode()}</success>")
        # presence and anything else: dropped

    def _iq(self, el: Element) -> None:
        iq_id = el.attrs.get("id", "")
        bind = el.find("bind")
        if bind is not None and self.authed_user:
            res = bind.find("resource")
            self.bare = f"{self.authed_user}@{self.server.domain}"
            self.jid = f"{self.bare}/{res.text if res is not None else 'r'}"
            self.server.sessions[self.bare] = self
            self._write(f"<iq type='result' id='{iq_id}'>"
                        f"<bind xmlns='{NS_BIND}'><jid>{self.jid}</jid></bind></iq>")
            return
        self._write(f"<iq type='result' id='{iq_id}'/>")

    async def _starttls(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.transport is not None
        self._parser = self._new_parser()
        self._held = []
        self.tls = True
        try:
            new = await loop.start_tls(self.transport, self, self.server.ssl_ctx, server_side=True)
        except (OSError, ssl.SSLError):
            self._abort()
            return
        if new is None:
            self._abort()
            return
        self.transport = new
        held, self._held = self._held, None
        for chunk in held:
            self._write(chunk)


class EchoServer:
    """Holds bound sessions by bare JID."""

    def __init__(self, domain: str, ssl_ctx: ssl.SSLContext) -> None:
        self.domain = domain
        self.ssl_ctx = ssl_ctx
        self.sessions: dict[str, EchoSession] = {}


async def serve(host: str, port: int, domain: str, cert: str, key: str) -> None:
    """Serve until cancelled."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    state = EchoServer(domain, ctx)
    srv = await asyncio.get_running_loop().create_server(lambda: EchoSession(state), host, port, backlog=1024)
    async with srv:
        await srv.serve_forever()


def main() -> None:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--domain", default="bench.localhost")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--uvloop", action="store_true")
    args = ap.parse_args()
    coro = serve(args.host, args.port, args.domain, args.cert, args.key)
    if args.uvloop:
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
