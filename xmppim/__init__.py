"""xmppim: a federated XMPP chat backend with a plugin API for value-added services."""

__version__ = "0.1.0"
