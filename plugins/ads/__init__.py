"""Ads plugin: paid ad delivery on the messaging bus (issue 6). See ``plugin.py`` for the contract and config."""
