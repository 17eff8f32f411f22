"""An example xmppim plugin: an echo bot at ``echo.<domain>`` with one ad-hoc command, "Greet me".

In-process: ``pip install -e examples/echo_plugin`` and ``[plugins] enabled = ["echo"]``. The same code
runs as an external XEP-0114 component of any server:
``xmppim component run echo --server 127.0.0.1:5347 --secret S --domain echo.example.org``.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from xmppim.plugins.api import CommandRequest, CommandResponse, Field, Form, Plugin


@dataclass
class EchoConfig:
    greeting: str = "Hello"
    """``[plugins.echo] greeting = "Hi"`` (unknown keys are refused at start)."""


class EchoPlugin(Plugin):
    name = "echo"
    description = "Echoes chat messages sent to echo.<domain> (or any bot@echo.<domain>)"
    Config = EchoConfig

    async def start(self) -> None:
        self.component = self.ctx.add_component("echo", "Echo bot", type_="echo")  # listed in disco#items
        self.component.on_message = self.echo
        self.component.command("greet", "Greet me", self.greet)  # XEP-0050 command with a XEP-0004 form

    def echo(self, msg: Element) -> None:
        body = msg.findtext("{jabber:client}body")
        kind = msg.get("type", "normal")
        if body and kind in ("chat", "normal"):  # never answer errors or headlines (no loops)
            # Answer from the address the user wrote to, so bot@echo.<domain> stays one contact.
            self.component.message(msg.get("from", ""), body, kind, from_=msg.get("to"))

    async def greet(self, req: CommandRequest) -> CommandResponse:
        if req.stage == 0:  # the first step shows a form; submitting it completes the command
            name = Field("name", label="Your name", required=True)
            return CommandResponse("executing", Form("Greeting", fields=[name]))
        return CommandResponse(note=f"{self.ctx.config.greeting}, {req.value('name')}!")
