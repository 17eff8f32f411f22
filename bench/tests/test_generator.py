"""Tests of the load generator itself (run: ``.venv/bin/python -m pytest bench/tests -q``).

They check what the figures depend on: stanzas are split correctly whatever the TCP chunking, SCRAM
is computed right (a wrong proof or server signature is caught), a full TLS login and a message round
trip work against the echo server, and the results table divides the right numbers.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from scramp import ScramMechanism

from bench import run, xmpp
from bench.certs import make_cert
from bench.echo_server import serve

STREAM = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" from='d' version='1.0'><stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
    b"</stream:features>"
    b"<message from='a@d/r' id='1'><body>x &amp; y</body></message><presence/></stream:stream>"
)


def test_parser_splits_stanzas_at_every_chunk_boundary() -> None:
    for cut in range(1, len(STREAM)):
        got: list[xmpp.Element] = []
        header: list[dict[str, str]] = []
        closed: list[bool] = []
        p = xmpp.StreamParser(header.append, got.append, lambda c=closed: c.append(True))  # type: ignore[misc]
        p.feed(STREAM[:cut])
        p.feed(STREAM[cut:])
        assert [e.tag for e in got] == ["features", "message", "presence"], cut
        assert header[0]["from"] == "d"
        body = got[1].find("body")
        assert body is not None and body.text == "x & y"
        assert closed == [True]


def test_scram_client_against_scramp_server() -> None:
    mech = ScramMechanism("SCRAM-SHA-1")
    info = mech.make_auth_info("pw", iteration_count=4096)
    server = mech.make_server(lambda _u: info)
    client = xmpp.ScramSha1Client("user", "pw")
    server.set_client_first(client.first().decode())
    final = client.final(server.get_server_first().encode())
    server.set_client_final(final.decode())  # raises if the proof is wrong
    client.verify(server.get_server_final().encode())
    with pytest.raises(xmpp.XMPPError):
        client.verify(b"v=" + base64.b64encode(b"\0" * 20))


def test_scram_wrong_password_is_refused_by_server() -> None:
    mech = ScramMechanism("SCRAM-SHA-1")
    info = mech.make_auth_info("pw", iteration_count=4096)
    server = mech.make_server(lambda _u: info)
    client = xmpp.ScramSha1Client("user", "other")
    server.set_client_first(client.first().decode())
    final = client.final(server.get_server_first().encode())
    with pytest.raises(Exception):  # noqa: B017 - scramp raises its own error type
        server.set_client_final(final.decode())


async def test_tls_login_and_message_round_trip_against_echo(tmp_path: Path) -> None:
    cert, key, _ = make_cert(tmp_path, "bench.localhost")
    port = 17199
    task = asyncio.create_task(serve("127.0.0.1", port, "bench.localhost", str(cert), str(key)))
    try:
        for _ in range(50):
            try:
                a = await xmpp.login("127.0.0.1", port, "bench.localhost", "alice", "benchpw", True)
                break
            except OSError:
                await asyncio.sleep(0.05)
        b = await xmpp.login("127.0.0.1", port, "bench.localhost", "bob", "benchpw", False)
        assert a.jid == "alice@bench.localhost/bench"
        got: asyncio.Future[xmpp.Element] = asyncio.get_running_loop().create_future()
        b.handler = got.set_result
        a.send("<message to='bob@bench.localhost' id='42'><body>hi</body></message>")
        msg = await asyncio.wait_for(got, 5)
        assert msg.attrs["id"] == "42" and msg.attrs["from"] == a.jid
        with pytest.raises(xmpp.XMPPError):
            await xmpp.login("127.0.0.1", port, "bench.localhost", "carol", "wrong", True)
        a.close()
        b.close()
    finally:
        task.cancel()


def test_table_ratio_is_xmppim_over_reference() -> None:
    results = {
        "xmppim": {"workloads": {"messages_100": {"per_s": 300.0, "gen_capacity_per_core": 1.0}}},
        "prosody": {"workloads": {"messages_100": {"per_s": 100.0, "gen_capacity_per_core": 2.0}}},
        "ejabberd": {"error": "could not start"},
    }
    header, rows = run.table(results, ["xmppim", "prosody", "ejabberd"])
    # ejabberd did not run: it keeps its column ("—") but gets no ratio column
    assert header == ["figure", "xmppim", "prosody", "ejabberd", "xmppim ÷ prosody"]
    by_label = {r[0]: r for r in rows}
    msgs = by_label["msgs/s, 100 pairs (↑)"]
    assert msgs[1:] == ["300", "100", "—", "3.00×"]
    assert by_label["generator ceiling, msgs/s per core (↑)"][-1] == ""
