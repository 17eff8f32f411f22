"""XML namespace names used across xmppim.

Plain string constants so that hot paths compare tags with ``==`` against precomputed Clark names
(``"{" + ns + "}" + local``) instead of splitting tags at run time.  The parser tags every element of
the stream's content namespace with :data:`CLIENT`, whatever the stream kind (RFC 6120 §4.8.2), so
handlers only ever need the ``jabber:client`` spelling.
"""

from __future__ import annotations

from typing import Final

# RFC 6120 §4.8: stream and content namespaces.
CLIENT: Final = "jabber:client"
SERVER: Final = "jabber:server"
COMPONENT: Final = "jabber:component:accept"  # XEP-0114
STREAMS: Final = "http://etherx.jabber.org/streams"
XML: Final = "http://www.w3.org/XML/1998/namespace"  # bound to the reserved ``xml`` prefix

# RFC 6120 errors, STARTTLS, SASL, resource binding; RFC 3921 session (kept by RFC 6121 as optional).
STREAM_ERRORS: Final = "urn:ietf:params:xml:ns:xmpp-streams"
STANZA_ERRORS: Final = "urn:ietf:params:xml:ns:xmpp-stanzas"
TLS: Final = "urn:ietf:params:xml:ns:xmpp-tls"
SASL: Final = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND: Final = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION: Final = "urn:ietf:params:xml:ns:xmpp-session"
FRAMING: Final = "urn:ietf:params:xml:ns:xmpp-framing"  # RFC 7395 WebSocket <open/>/<close/>

# Server-to-server (XEP-0220 dialback and its stream feature, XEP-0288 bidi).
DIALBACK: Final = "jabber:server:dialback"
DIALBACK_FEATURE: Final = "urn:xmpp:features:dialback"
BIDI: Final = "urn:xmpp:bidi"
BIDI_FEATURE: Final = "urn:xmpp:features:bidi"

# IM and common extensions.
ROSTER: Final = "jabber:iq:roster"  # RFC 6121 §2
ROSTER_VER: Final = "urn:xmpp:features:rosterver"  # RFC 6121 §2.6
PRE_APPROVAL: Final = "urn:xmpp:features:pre-approval"  # RFC 6121 §3.4
DISCO_INFO: Final = "http://jabber.org/protocol/disco#info"  # XEP-0030
DISCO_ITEMS: Final = "http://jabber.org/protocol/disco#items"
CAPS: Final = "http://jabber.org/protocol/caps"  # XEP-0115
DATA_FORMS: Final = "jabber:x:data"  # XEP-0004
COMMANDS: Final = "http://jabber.org/protocol/commands"  # XEP-0050
RSM: Final = "http://jabber.org/protocol/rsm"  # XEP-0059
REGISTER: Final = "jabber:iq:register"  # XEP-0077
REGISTER_FEATURE: Final = "http://jabber.org/features/iq-register"
VERSION: Final = "jabber:iq:version"  # XEP-0092
LAST: Final = "jabber:iq:last"  # XEP-0012
PRIVATE: Final = "jabber:iq:private"  # XEP-0049
VCARD: Final = "vcard-temp"  # XEP-0054
PING: Final = "urn:xmpp:ping"  # XEP-0199
TIME: Final = "urn:xmpp:time"  # XEP-0202
DELAY: Final = "urn:xmpp:delay"  # XEP-0203
BLOCKING: Final = "urn:xmpp:blocking"  # XEP-0191
BLOCKING_ERRORS: Final = "urn:xmpp:blocking:errors"
SM: Final = "urn:xmpp:sm:3"  # XEP-0198
CSI: Final = "urn:xmpp:csi:0"  # XEP-0352
CARBONS: Final = "urn:xmpp:carbons:2"  # XEP-0280
FORWARD: Final = "urn:xmpp:forward:0"  # XEP-0297
MAM: Final = "urn:xmpp:mam:2"  # XEP-0313
STANZA_ID: Final = "urn:xmpp:sid:0"  # XEP-0359
HINTS: Final = "urn:xmpp:hints"  # XEP-0334
RECEIPTS: Final = "urn:xmpp:receipts"  # XEP-0184
CHAT_STATES: Final = "http://jabber.org/protocol/chatstates"  # XEP-0085
MUC: Final = "http://jabber.org/protocol/muc"  # XEP-0045
MUC_USER: Final = "http://jabber.org/protocol/muc#user"
PUBSUB: Final = "http://jabber.org/protocol/pubsub"  # XEP-0060
PUBSUB_EVENT: Final = "http://jabber.org/protocol/pubsub#event"
OOB: Final = "jabber:x:oob"  # XEP-0066
HTTP_UPLOAD: Final = "urn:xmpp:http:upload:0"  # XEP-0363
BOSH: Final = "http://jabber.org/protocol/httpbind"  # XEP-0124
XBOSH: Final = "urn:xmpp:xbosh"  # XEP-0206

# End-to-end encryption markers (XEP-0380 EME and the common schemes it names): anything carrying
# one of these must be treated as opaque by server-side services such as the ads plugin.
EME: Final = "urn:xmpp:eme:0"
OMEMO: Final = "eu.siacs.conversations.axolotl"  # XEP-0384 (legacy 0.3 namespace, still most deployed)
OMEMO2: Final = "urn:xmpp:omemo:2"
OPENPGP: Final = "urn:xmpp:openpgp:0"  # XEP-0373
LEGACY_PGP_ENCRYPTED: Final = "jabber:x:encrypted"  # XEP-0027
OTR_ENCRYPTION: Final = "urn:xmpp:otr:0"  # XEP-0364 hint namespace

# Clark-notation attribute names.
XML_LANG: Final = "{http://www.w3.org/XML/1998/namespace}lang"


def clark(ns: str, local: str) -> str:
    """Return the ElementTree (Clark notation) name ``{ns}local``; ``local`` alone for no namespace."""
    return f"{{{ns}}}{local}" if ns else local
