"""Runs: the orchestrators behind ``pgrid grid``, ``pgrid invert`` and ``pgrid bench``."""
