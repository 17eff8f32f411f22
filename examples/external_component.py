"""A small external component written with slixmpp's ``ComponentXMPP`` (XEP-0114): a "reverse" bot.

Any XMPP server that accepts components can host it. For xmppim, declare it in the config::

    [components."reverse.localhost"]
    secret = "change-me"

then run ``python examples/external_component.py --jid reverse.localhost --secret change-me
--host 127.0.0.1 --port 5347`` and send a chat message to ``reverse.localhost`` (or any
``name@reverse.localhost``): the answer is your text reversed. It prints ``ready`` once the server
has accepted the handshake, and stops cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import slixmpp


class ReverseBot(slixmpp.ComponentXMPP):
    def __init__(self, jid: str, secret: str, host: str, port: int) -> None:
        super().__init__(jid, secret, host, port)  # type: ignore[no-untyped-call]
        self.register_plugin("xep_0030")  # disco#info, so clients (and servers' disco#items) see what it is
        self.register_plugin("xep_0199")  # answers pings
        self.plugin["xep_0030"].add_identity(category="component", itype="generic", name="Reverse bot")
        self.add_event_handler("message", self.on_message)

    def on_message(self, msg: Any) -> None:
        if msg["type"] in ("chat", "normal") and msg["body"]:
            # reply() swaps the addresses, so name@reverse.<domain> answers as itself.
            msg.reply(msg["body"][::-1]).send()


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jid", required=True, help="the component's domain, e.g. reverse.localhost")
    p.add_argument("--secret", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5347)
    args = p.parse_args(argv)

    bot = ReverseBot(args.jid, args.secret, args.host, args.port)
    stop = asyncio.Event()
    failure: list[str] = []
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bot.add_event_handler("session_start", lambda _e: print("ready", flush=True))

    def refused(error: Any) -> None:
        failure.append(str(error["condition"]))
        stop.set()

    bot.add_event_handler("stream_error", refused)
    bot.connect()
    await stop.wait()
    await bot.disconnect(wait=1.0)
    if failure:
        print(f"the server refused the component: {failure[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
