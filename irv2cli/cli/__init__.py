"""The ``irv2`` command: click and rich only; the one place that knows flags, exit codes
and consoles."""
