"""Benchmarks for xmppim side by side with Prosody and ejabberd (issue 12).

``python -m bench.run --help`` runs them; ``bench/README.md`` explains the workloads.
"""
