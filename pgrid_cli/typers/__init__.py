"""Channel typers: which channels each atom goes into, with what weight (docs/typing.md).

``pharmacophore`` (RDKit's feature definitions), ``xs`` (smina/gnina's XS atom types),
``gasteiger`` and ``file`` (a signed ``charge`` channel of partial charges), ``elements``,
``single`` and element lists; add your own with :func:`register`. Each lives in its own
module, which registers itself.
"""

from __future__ import annotations

from . import charges, elements, pharmacophore, xs  # noqa: F401  (each registers itself)
from .base import (
    CHARGE_CHANNELS,
    METALS,
    CombinedTyper,
    FunctionTyper,
    Typer,
    channel_typer,
    combine,
    get_typer,
    rdkit_mol,
    register,
    typer_names,
)
from .elements import ElementsTyper

__all__ = [
    "CHARGE_CHANNELS",
    "METALS",
    "CombinedTyper",
    "ElementsTyper",
    "FunctionTyper",
    "Typer",
    "channel_typer",
    "combine",
    "get_typer",
    "rdkit_mol",
    "register",
    "typer_names",
]
