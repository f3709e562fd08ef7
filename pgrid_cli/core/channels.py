"""Channels: which atoms go into which grid channel (docs/format.md §5).

``single`` puts every atom in one channel; ``elements`` gives H, C, N, O, F, P, S, Cl, Br
and I a channel each plus a catch-all ``*``; an explicit list such as ``C,H,N,O,*`` names
its channels, with ``*`` taking every element not named. An element with no channel (and
no ``*``) is an error, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from ase.data import atomic_numbers as _SYMBOL_TO_Z
from ase.data import chemical_symbols as _Z_TO_SYMBOL

#: Elements of the default ``elements`` channel set (a catch-all ``*`` follows them).
DEFAULT_ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I")
#: Name of the catch-all channel.
CATCH_ALL = "*"
#: Name of the only channel of ``single``.
SINGLE = "all"


class UnknownElementError(ValueError):
    """Atoms whose element has no channel in the chosen channel set."""

    def __init__(self, symbols: Iterable[str], spec: ChannelSpec) -> None:
        self.symbols = sorted(set(symbols))
        super().__init__(
            f"element{'s' if len(self.symbols) > 1 else ''} {', '.join(self.symbols)} "
            f"ha{'ve' if len(self.symbols) > 1 else 's'} no channel in {spec.describe()} "
            f"(add them, or '*' for a catch-all channel)"
        )


class TypingError(ValueError):
    """A structure that a channel typer cannot type (rejected as ``cannot type``)."""


def element_symbol(z: int) -> str:
    """Chemical symbol of atomic number ``z`` (``X`` for 0 / unknown)."""
    return _Z_TO_SYMBOL[z] if 0 < z < len(_Z_TO_SYMBOL) else "X"


def atomic_number(symbol: str) -> int:
    """Atomic number of a chemical symbol (case-insensitive); ValueError if unknown."""
    canon = symbol.strip().capitalize()
    z = _SYMBOL_TO_Z.get(canon, 0)
    if z == 0:
        raise ValueError(f"{symbol!r} is not a chemical element symbol")
    return z


class ChannelSpec:
    """An assignment of elements to channels.

    Parameters
    ----------
    names : sequence of str
        Channel names in order: element symbols, optionally ``"*"`` (catch-all, at most
        once), or the single name ``"all"`` for one channel holding every atom.
    """

    __slots__ = ("_lookup", "_names", "_typed")

    def __init__(self, names: Sequence[str]) -> None:
        names = [str(n).strip() for n in names]
        if not names:
            raise ValueError("a channel set needs at least one channel")
        self._typed = False
        self._lookup = np.full(len(_Z_TO_SYMBOL), -1, dtype=np.int32)
        if names == [SINGLE]:
            self._lookup[:] = 0
            self._names: tuple[str, ...] = (SINGLE,)
            return
        canon: list[str] = []
        for name in names:
            if name == CATCH_ALL:
                canon.append(CATCH_ALL)
                continue
            if name.lower() == SINGLE:
                raise ValueError("'all' (a single channel) cannot be combined with others")
            canon.append(element_symbol(atomic_number(name)))
        dupes = sorted({n for n in canon if canon.count(n) > 1})
        if dupes:
            plural = "s" if len(dupes) > 1 else ""
            raise ValueError(f"channel{plural} listed twice: {', '.join(dupes)}")
        if CATCH_ALL in canon:
            self._lookup[1:] = canon.index(CATCH_ALL)
        for c, name in enumerate(canon):
            if name != CATCH_ALL:
                self._lookup[atomic_number(name)] = c
        self._names = tuple(canon)

    @classmethod
    def parse(cls, text: str) -> ChannelSpec:
        """``single``, ``elements`` or a comma-separated list like ``C,H,N,O,*``."""
        key = text.strip()
        if key.lower() == "single":
            return cls([SINGLE])
        if key.lower() == "elements":
            return cls([*DEFAULT_ELEMENTS, CATCH_ALL])
        parts = [p for p in (s.strip() for s in key.split(",")) if p]
        if not parts:
            raise ValueError(f"no channels in {text!r}: use single, elements or e.g. C,H,N,O,*")
        return cls(parts)

    @classmethod
    def named(cls, names: Sequence[str]) -> ChannelSpec:
        """The channels of a typer (``donor``, ``C_H``, ``charge`` …): names only, no
        element assignment (a typer, :mod:`pgrid_cli.typers`, puts atoms in them), so
        :meth:`assign` raises. Shards of typed channels read back as such a spec."""
        spec = cls([SINGLE])
        names = tuple(str(n) for n in names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"typed channel names must be distinct and not empty: {names}")
        spec._names = names
        spec._lookup = np.full(len(_Z_TO_SYMBOL), -1, dtype=np.int32)
        spec._typed = True
        return spec

    @classmethod
    def from_names(cls, names: Sequence[str]) -> ChannelSpec:
        """The spec of stored channel names: element channels when they are, else
        :meth:`named` (typed channels)."""
        try:
            return cls([str(n) for n in names])
        except ValueError:
            return cls.named(names)

    @property
    def typed(self) -> bool:
        """Channels filled by a typer (:meth:`named`), not by element."""
        return self._typed

    @property
    def names(self) -> tuple[str, ...]:
        """Channel names, in channel order."""
        return self._names

    @property
    def n_channels(self) -> int:
        return len(self._names)

    @property
    def is_single(self) -> bool:
        return self._names == (SINGLE,) and not self._typed

    def describe(self) -> str:
        return "the single channel" if self.is_single else f"channels {','.join(self._names)}"

    def assign(self, numbers: Any) -> np.ndarray:
        """(M,) int32 channel of each atom, from atomic numbers (M,).

        Raises :class:`UnknownElementError` naming the elements that have no channel, and
        ValueError for typed channels (:meth:`named`).
        """
        if self._typed:
            raise ValueError(f"typed channels {','.join(self._names)} are not assigned by element")
        z = np.asarray(numbers, dtype=np.int64).reshape(-1)
        bad = (z < 1) | (z >= len(self._lookup))
        chans = np.full(z.shape, -1, dtype=np.int32)
        chans[~bad] = self._lookup[z[~bad]]
        missing = chans < 0
        if np.any(missing):
            raise UnknownElementError((element_symbol(int(v)) for v in z[missing]), self)
        return chans

    def element_of_channel(self, c: int, default: str = "X") -> str:
        """Element symbol a channel stands for (``default`` for ``all`` and ``*``)."""
        name = self._names[c]
        return default if self._typed or name in (SINGLE, CATCH_ALL) else name

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ChannelSpec)
            and self._names == other._names
            and self._typed == other._typed
        )

    def __hash__(self) -> int:
        return hash(self._names)

    def __repr__(self) -> str:
        return f"ChannelSpec({list(self._names)!r})"
