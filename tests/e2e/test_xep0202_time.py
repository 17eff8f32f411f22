"""XEP-0202 Entity Time of the server, asked by slixmpp's own xep_0202 plugin."""

from __future__ import annotations

import datetime as dt

import pytest
from slixmpp.exceptions import IqError

from tests.helpers import disconnect, slix_client
from xmppim.modules.xep0202_time import TimeModule, tzo, utc_stamp
from xmppim.server import Server


@pytest.fixture
async def srv(server: Server) -> Server:
    await server.plugins.load(TimeModule)  # a no-op once the entry point is installed
    return server


async def test_slixmpp_reads_the_server_time(srv: Server) -> None:
    c = await slix_client(srv, "alice@localhost/t", "pw", plugins=("xep_0202",))
    before = dt.datetime.now(dt.UTC)
    iq = await c.plugin["xep_0202"].get_entity_time("localhost", timeout=5)
    after = dt.datetime.now(dt.UTC)
    # slixmpp 1.17's get_utc() appends a second 'Z' and get_tzo() parses '00:00:00+00:00' as a DateTime:
    # both fail on every XEP-0202 answer (slixmpp's own included), so read the elements it received.
    utc = iq.xml.findtext("{urn:xmpp:time}time/{urn:xmpp:time}utc")
    assert utc is not None and utc.endswith("Z")
    got = dt.datetime.fromisoformat(utc)
    assert before - dt.timedelta(seconds=1) <= got <= after + dt.timedelta(seconds=1)
    assert iq.xml.findtext("{urn:xmpp:time}time/{urn:xmpp:time}tzo") == tzo(dt.datetime.now().astimezone().utcoffset())
    info = await c.plugin["xep_0030"].get_info("localhost", timeout=5)
    assert "urn:xmpp:time" in info["disco_info"]["features"]
    await disconnect(c)


async def test_a_users_bare_jid_is_not_answered_by_the_server(srv: Server) -> None:
    c = await slix_client(srv, "alice@localhost/t", "pw", plugins=("xep_0202",))
    with pytest.raises(IqError) as e:
        await c.plugin["xep_0202"].get_entity_time("bob@localhost", timeout=5)
    assert e.value.condition == "service-unavailable"
    await disconnect(c)


def test_formats() -> None:
    assert tzo(dt.timedelta(hours=-6, minutes=-30)) == "-06:30"
    assert tzo(dt.timedelta(hours=5, minutes=45)) == "+05:45"
    assert tzo(None) == "+00:00"
    t = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert utc_stamp(t) == "2026-01-02T01:04:05.678Z"
