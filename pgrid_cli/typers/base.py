"""The typer interface and registry (docs/typing.md).

A typer puts each atom of a structure into channels, with a weight per channel (the
protocol, in outline):

    class Typer(Protocol):
        name: str                      # what --channels and get_typer() call it
        channels: tuple[str, ...]      # channel names, in channel order
        signed: bool                   # may a weight be negative (partial charges)?
        def memberships(self, structure) -> np.ndarray: ...
            # (M, C) float64: weight of atom m in channel c (0 = absent)

An atom may sit in several channels (an OH oxygen is a donor and an acceptor). Typers
register themselves by name (:func:`register`) and are found with :func:`get_typer`;
``single``, ``elements`` and element lists (``C,H,N,O,*``) are typers too
(:mod:`.elements`). A typer that cannot type a structure raises
:class:`~pgrid_cli.core.channels.TypingError` (the record is rejected as
``cannot type``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..core.channels import ChannelSpec, TypingError
from ..core.errors import ParameterError
from ..core.structure import Structure

__all__ = [
    "METALS",
    "CombinedTyper",
    "FunctionTyper",
    "Typer",
    "channel_typer",
    "combine",
    "get_typer",
    "rdkit_mol",
    "register",
    "typer_names",
]


@runtime_checkable
class Typer(Protocol):
    """Atoms → channel memberships (see the module docstring)."""

    name: str
    channels: tuple[str, ...]
    signed: bool

    def memberships(self, structure: Structure) -> np.ndarray: ...


_REGISTRY: dict[str, Callable[[], Typer]] = {}


def register(typer_factory: Callable[[], Typer] | Typer, name: str | None = None) -> None:
    """Make a typer available by ``name`` (default: its ``name``): ``typer_factory`` is a
    function of no arguments that returns the typer (a class works), or a typer itself."""
    if hasattr(typer_factory, "memberships") and not isinstance(typer_factory, type):
        typer = typer_factory
        factory: Callable[[], Typer] = lambda: typer  # noqa: E731
    else:
        factory = typer_factory  # type: ignore[assignment]
    key = name if name is not None else getattr(typer_factory, "name", None)
    if not isinstance(key, str):
        key = factory().name
    _REGISTRY[key.strip().lower()] = factory


def typer_names() -> tuple[str, ...]:
    """The registered typers' names."""
    return tuple(sorted(_REGISTRY))


def get_typer(name: str) -> Typer:
    """The typer called ``name``: a registered one (``pharmacophore``, ``xs``,
    ``gasteiger``, ``file``, yours), or ``single``, ``elements`` or an element list such
    as ``C,H,N,O,*`` (an :class:`~pgrid_cli.typers.elements.ElementsTyper`). Raises
    ParameterError naming ``channels`` for anything else."""
    key = str(name).strip().lower()
    if key in _REGISTRY:
        return _REGISTRY[key]()
    from .elements import ElementsTyper

    try:
        return ElementsTyper(ChannelSpec.parse(str(name)))
    except ValueError as exc:
        raise ParameterError(
            f"{{channels}}: {name!r} is neither a typer ({', '.join(typer_names())}) nor a "
            f"channel list ({exc})"
        ) from None


@dataclass(frozen=True)
class FunctionTyper:
    """A typer from a plain function ``function(structure) -> (M, C) array`` (weights of
    each atom in ``channels``). The function must be importable by name (defined at a
    module's top level) for ``pgrid grid --workers N`` to send it to worker processes."""

    name: str
    channels: tuple[str, ...]
    function: Callable[[Structure], Any]
    signed: bool = False

    def memberships(self, structure: Structure) -> np.ndarray:
        return np.asarray(self.function(structure), dtype=np.float64)


@dataclass(frozen=True)
class CombinedTyper:
    """Several typers side by side: their channels one after the other (e.g. the
    pharmacophore channels and a ``charge`` channel)."""

    parts: tuple[Any, ...]
    name: str = field(init=False)
    channels: tuple[str, ...] = field(init=False)
    signed: bool = field(init=False)
    signed_channels: tuple[bool, ...] = field(init=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "name", "+".join(str(p.name) for p in self.parts))
        names = tuple(c for p in self.parts for c in p.channels)
        dupes = sorted({c for c in names if names.count(c) > 1})
        if dupes:
            raise ParameterError(f"{{channels}}: channel(s) {', '.join(dupes)} given twice")
        set_(self, "channels", names)
        per = tuple(
            s
            for p in self.parts
            for s in getattr(p, "signed_channels", (bool(p.signed),) * len(p.channels))
        )
        set_(self, "signed_channels", per)
        set_(self, "signed", any(per))

    def memberships(self, structure: Structure) -> np.ndarray:
        return np.hstack(
            [
                np.asarray(p.memberships(structure), dtype=np.float64).reshape(
                    len(structure), len(p.channels)
                )
                for p in self.parts
            ]
        )


#: What ``charge_channel`` may name (``--charge-channel``).
CHARGE_CHANNELS = ("gasteiger", "file")


def channel_typer(channels: str, charge_channel: str | None = None) -> Any:
    """The typer of ``--channels`` text and ``--charge-channel``, or None when plain
    element channels (``single``, ``elements``, ``C,H,*``) without charges need none (the
    recipe's element path, faster). Raises ParameterError for unknown names."""
    key = channels.strip().lower()
    element_channels = key not in _REGISTRY or key in ("elements", "single")
    if charge_channel is None or not str(charge_channel).strip():
        return None if element_channels else get_typer(key)
    charge = str(charge_channel).strip().lower()
    if charge not in CHARGE_CHANNELS:
        raise ParameterError(
            f"{{charge_channel}} must be {' or '.join(CHARGE_CHANNELS)}, got {charge_channel!r}"
        )
    return combine([get_typer(channels), get_typer(charge)])


def combine(typers: Sequence[Any]) -> Any:
    """One typer of ``typers`` side by side (the typer itself when there is one)."""
    return typers[0] if len(typers) == 1 else CombinedTyper(tuple(typers))


#: Metals (atomic numbers): alkali and alkaline-earth metals (Li–Fr, Be–Ra), Al, Ga, In,
#: Sn, Tl, Pb, Bi, Po, and every transition metal, lanthanide and actinide.
METALS: frozenset[int] = frozenset(
    [
        *(3, 4, 11, 12, 13, 19, 20, 31, 37, 38, 49, 50, 55, 56, 81, 82, 83, 84, 87, 88),
        *range(21, 31),
        *range(39, 49),
        *range(57, 81),
        *range(89, 113),
    ]
)

_last: tuple[Any, Any] | None = None  # (the structure's mol, its sanitised copy)


def rdkit_mol(structure: Structure) -> Any:
    """A sanitised copy of ``structure.mol`` (bonds, rings, aromaticity perceived) with
    every hydrogen explicit, for chemistry typers: atoms 0 … M-1 are the structure's, any
    implicit hydrogens are added after them (RDKit's features count explicit neighbours, so
    a molecule is typed the same with or without its hydrogens). Raises TypingError when
    the structure has no molecule (XYZ, CIF, POSCAR records carry no bonds: pgrid does not
    guess them) or RDKit cannot sanitise it. The last one is cached, so that typers side by
    side sanitise once."""
    global _last
    mol = structure.mol
    if mol is None:
        raise TypingError(
            "the record has no bonds (chemistry typers need SDF, SMILES or other inputs read "
            "with RDKit; XYZ, CIF and POSCAR records are not typed)"
        )
    if _last is not None and _last[0] is mol:
        return _last[1]
    from rdkit import Chem

    if mol.GetNumAtoms() != len(structure):  # type: ignore[attr-defined]
        raise TypingError(
            f"the molecule has {mol.GetNumAtoms()} atoms but the structure "  # type: ignore[attr-defined]
            f"{len(structure)}"
        )
    copy = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(copy)
    except Exception as exc:  # RDKit raises its own exception types
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TypingError(f"RDKit cannot sanitise the molecule ({text})") from None
    if any(a.GetTotalNumHs() for a in copy.GetAtoms()):
        copy = Chem.AddHs(copy)  # appended after the structure's atoms
    _last = (mol, copy)
    return copy
