"""XEP-0202 Entity Time for the server itself.

Only the server answers: an IQ to a user's bare JID is theirs to answer from a resource (full JID), so it
gets ``service-unavailable`` like every unhandled IQ to a bare JID (RFC 6121 §8.5.1). The reply carries
the server's local UTC offset (``<tzo/>``) and the UTC time in XEP-0082 form, to the millisecond.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from xml.etree.ElementTree import Element, SubElement

from ..plugins.api import Plugin, StanzaEvent, Xep, iq_result

NS = "urn:xmpp:time"


def tzo(offset: dt.timedelta | None) -> str:
    """XEP-0082 time zone offset, e.g. ``+00:00`` or ``-06:30``."""
    minutes = int((offset or dt.timedelta()).total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    h, m = divmod(abs(minutes), 60)
    return f"{sign}{h:02d}:{m:02d}"


def utc_stamp(now: dt.datetime) -> str:
    """XEP-0082 DateTime in UTC with milliseconds, e.g. ``2026-11-29T03:54:38.123Z``."""
    u = now.astimezone(dt.UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z"


class TimeModule(Plugin):
    name = "time"
    builtin = True
    xeps = (Xep(202, "2.0"),)
    description = "XEP-0202 entity time of the server"

    async def start(self) -> None:
        self.ctx.add_feature(NS)
        self.ctx.iq_handler("get", NS, self.answer)

    def answer(self, ev: StanzaEvent) -> Any:
        if ev.node:
            return None  # a user's bare JID: their clients answer on full JIDs
        now = dt.datetime.now().astimezone()
        t = Element(f"{{{NS}}}time")
        SubElement(t, f"{{{NS}}}tzo").text = tzo(now.utcoffset())
        SubElement(t, f"{{{NS}}}utc").text = utc_stamp(now)
        return iq_result(ev.stanza, t)
