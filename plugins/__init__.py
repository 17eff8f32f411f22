"""Value-added service plugins shipped with xmppim (each has its own tables, migrations and routes)."""
