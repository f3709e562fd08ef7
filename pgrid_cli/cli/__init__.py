"""The ``pgrid`` command line. Each command lives in its own module and registers itself
on :data:`app`; every ``*_cli`` function only parses options and calls a library function."""

from __future__ import annotations

from . import bench, export, grid, info, invert, show  # noqa: F401  (each registers its commands on app)
from ._app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``pgrid`` console script."""
    app()
