"""The installed version of pgrid (``0.0.0`` when run from an uninstalled source tree)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("pgrid-cli")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
