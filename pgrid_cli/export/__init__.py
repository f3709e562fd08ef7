"""Export grids to the volumetric formats that viewers read (cube, DX, CHGCAR, MRC).

Each format is one module of this package that calls :func:`register` with a
:class:`Format` (name, file suffixes, writer); the package imports every such module when
it is first imported, so a new format is one new module. The writers themselves are
thin: each hands the data to a well-kept library writer (ASE, gridDataFormats, pymatgen,
mrcfile) after putting it in the format's conventions.

What every format shares (the rest is in each module's docstring and docs/export.md):

* **Where a value sits.** pgrid's voxel (i, j, k) is the parallelepiped
  ``origin + (i+u)/nx·a + (j+v)/ny·b + (k+w)/nz·c``, u, v, w ∈ [0, 1] (docs/kernel.md).
  Viewers read a grid as *samples at points*; every writer places point (i, j, k) at the
  voxel's centre, ``origin + (i+½)·a/nx + (j+½)·b/ny + (k+½)·c/nz``
  (:func:`first_point`), i.e. half a voxel from pgrid's corner origin.
* **What a value is.** A pgrid value is an *amount* (atoms in the voxel). ``quantity=
  "density"`` (the default) writes amount / voxel volume, a density per Å³ (per Bohr³
  in cube files), which is what viewers' iso-levels and other programs' files mean;
  ``"amount"`` writes the values unchanged. CHGCAR has its own fixed convention (ρ·V).

Use::

    from pgrid_cli.export import write, export_record
    write("benzene.cube", g[1], box, numbers=z, positions=xyz)   # carbon channel
    export_record(record, "g.cube", shard.channels, channel="all")  # g.C.cube, g.H.cube …
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..core.box import Box
from ..core.channels import CATCH_ALL, ChannelSpec

#: What a written value means: per-volume density (default) or the voxel's amount.
QUANTITIES = ("density", "amount")
#: ``channel=`` choices of :func:`export_record` besides channel names.
ALL = "all"
SUM = "sum"
ENERGY = "energy"  #: the energy channel, whatever its name


class ExportAtoms(NamedTuple):
    """The atoms to write with a grid: atomic numbers (M,) and positions (M, 3), Å."""

    numbers: np.ndarray
    positions: np.ndarray


#: ``writer(path, grid, box, atoms, quantity, comment)``: ``grid`` is (nx, ny, nz)
#: float64 amounts in pgrid's [i, j, k] order; ``atoms`` may be None.
Writer = Callable[[Path, np.ndarray, Box, "ExportAtoms | None", str, str], None]


@dataclass(frozen=True)
class Format:
    """One export format: its name, the file suffixes that select it, and its writer."""

    name: str
    suffixes: tuple[str, ...]  #: lower case, with the dot (".cube")
    writer: Writer
    summary: str  #: one line for --help and docs
    atoms: bool = False  #: whether the file carries the atoms
    file_names: tuple[str, ...] = ()  #: whole file names that select it (``CHGCAR``)


_FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add a format to the registry (called by each format module on import)."""
    if fmt.name in _FORMATS:
        raise ValueError(f"export format {fmt.name!r} is registered twice")
    _FORMATS[fmt.name] = fmt
    return fmt


def formats() -> tuple[Format, ...]:
    """Every registered format, by name."""
    return tuple(_FORMATS[k] for k in sorted(_FORMATS))


def get_format(name: str) -> Format:
    """The format called ``name`` (case-insensitive); ValueError naming the choices."""
    fmt = _FORMATS.get(name.strip().lower())
    if fmt is None:
        raise ValueError(f"unknown export format {name!r}: use {', '.join(sorted(_FORMATS))}")
    return fmt


def format_for_path(path: str | os.PathLike[str]) -> Format:
    """The format a file name asks for: by suffix (``.cube``), or by name (``CHGCAR``)."""
    p = Path(path)
    suffix = p.suffix.lower()
    for fmt in _FORMATS.values():
        if suffix in fmt.suffixes or p.name.upper() in fmt.file_names:
            return fmt
    raise ValueError(
        f"cannot tell the export format of {p.name!r} from its suffix: give a format "
        f"({', '.join(sorted(_FORMATS))}) or one of the suffixes "
        f"{', '.join(s for f in formats() for s in f.suffixes)}"
    )


# ---------------------------------------------------------------------- shared helpers
def first_point(box: Box) -> np.ndarray:
    """(3,) Å: the centre of voxel (0, 0, 0), the first sample point of an exported grid."""
    return box.origin + 0.5 * box.voxel_axes.sum(axis=0)


def scaled(grid: np.ndarray, box: Box, quantity: str, length_unit: float = 1.0) -> np.ndarray:
    """The values to write: ``grid`` (amounts) divided by the voxel volume in
    ``length_unit``³ (``length_unit`` in Å, e.g. ``ase.units.Bohr``) for ``density``,
    unchanged for ``amount``."""
    if quantity == "amount":
        return grid
    if quantity == "density":
        return grid / (box.voxel_volume / length_unit**3)
    raise ValueError(f"unknown quantity {quantity!r}: use {' or '.join(QUANTITIES)}")


def write(
    path: str | os.PathLike[str],
    grid3d: Any,
    box: Box,
    fmt: str | None = None,
    numbers: Any = None,
    positions: Any = None,
    quantity: str = "density",
    comment: str = "",
) -> Path:
    """Write one 3D grid (nx, ny, nz) of pgrid amounts in ``box`` to ``path``.

    ``fmt`` names the format (default: from the suffix of ``path``); ``numbers`` and
    ``positions`` (Å) are the atoms, written by the formats that carry them (cube,
    CHGCAR). ``quantity``: ``density`` (amount / voxel volume, the default) or ``amount``.
    Returns ``path``.
    """
    out = Path(path)
    f = get_format(fmt) if fmt else format_for_path(out)
    g = np.asarray(grid3d, dtype=np.float64)
    if g.shape != box.shape:
        raise ValueError(f"grid of shape {g.shape} does not match the box's {box.shape}")
    if not np.all(np.isfinite(g)):
        raise ValueError("the grid holds NaN or infinite values")
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}: use {' or '.join(QUANTITIES)}")
    f.writer(out, g, box, _atoms(numbers, positions), quantity, " ".join(comment.split()))
    return out


def _atoms(numbers: Any, positions: Any) -> ExportAtoms | None:
    if numbers is None and positions is None:
        return None
    if numbers is None or positions is None:
        raise ValueError("give both numbers and positions, or neither")
    z = np.asarray(numbers, dtype=np.int64).reshape(-1)
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape != (len(z), 3):
        raise ValueError(f"positions must have shape ({len(z)}, 3), got {pos.shape}")
    return ExportAtoms(z, pos)


def channel_label(name: str) -> str:
    """A channel's name as it goes into a file name (``*`` becomes ``other``, the ``:`` of
    ``receptor:C`` a ``-``)."""
    return "other" if name == CATCH_ALL else name.replace(":", "-")


def channel_path(path: Path, label: str) -> Path:
    """``g.cube`` → ``g.C.cube``: the channel's label inserted before the suffix."""
    if path.suffix:
        return path.with_name(f"{path.stem}.{label}{path.suffix}")
    return path.with_name(f"{path.name}.{label}")


def select_channels(
    grid: np.ndarray, channels: ChannelSpec | Sequence[str], channel: str = ALL
) -> list[tuple[str | None, np.ndarray]]:
    """The 3D grids that ``channel`` asks for, as ``(label, grid)``; label None means
    "write to the path as given".

    ``all``: every channel that is not empty (a single-channel set: its one channel, at
    the path as given); ``sum``: the sum over channels; ``C`` or ``C,N,O``: those channels
    (one name: at the path as given).
    """
    names = list(channels.names if isinstance(channels, ChannelSpec) else channels)
    g = np.asarray(grid)
    if g.ndim != 4 or g.shape[0] != len(names):
        raise ValueError(f"grid of shape {g.shape} does not have the {len(names)} channels")
    choice = channel.strip()
    if choice.lower() == SUM:
        return [(None, g.astype(np.float64).sum(axis=0))]
    if len(names) == 1 and choice.lower() in (ALL, names[0].lower()):
        return [(None, g[0])]
    if choice.lower() == ALL:
        picked = [c for c in range(len(names)) if np.any(g[c])]
        if not picked:
            raise ValueError("every channel of this grid is empty: nothing to export")
        return [(channel_label(names[c]), g[c]) for c in picked]
    wanted = [w.strip() for w in choice.split(",") if w.strip()]
    missing = [w for w in wanted if w not in names and not (w == "other" and CATCH_ALL in names)]
    if missing or not wanted:
        raise ValueError(
            f"no channel {', '.join(missing) or repr(channel)} (channels: {', '.join(names)}; "
            f"or {ALL}, {SUM})"
        )
    idx = [names.index(CATCH_ALL if w == "other" and w not in names else w) for w in wanted]
    if len(idx) == 1:
        return [(None, g[idx[0]])]
    return [(channel_label(names[c]), g[c]) for c in idx]


def export_record(
    record: Any,
    path: str | os.PathLike[str],
    channels: ChannelSpec | Sequence[str],
    *,
    fmt: str | None = None,
    channel: str = ALL,
    quantity: str = "density",
    energy: str | None = None,
) -> list[Path]:
    """Write one structure of a shard (a :class:`~pgrid_cli.store.shard.ShardRecord`) with its
    atoms; returns the files written.

    ``channel``: ``all`` (one file per non-empty channel, named ``path`` with the channel
    inserted before the suffix: ``g.C.cube``, ``g.other.cube`` for ``*``), ``sum`` (the
    channels summed into ``path``), a channel name (into ``path``) or a comma list.
    ``energy``: the name of the record's energy channel (``lj:CH4``, stored after the
    density channels; docs/energy.md), written when ``channel`` is that name or
    ``energy``: its values (K, or exp(−E/kT)) as stored, whatever ``quantity`` says —
    they are values at the voxel centres, not amounts — and not to CHGCAR (ρ·V).
    """
    out = Path(path)
    f = get_format(fmt) if fmt else format_for_path(out)
    names = list(channels.names if isinstance(channels, ChannelSpec) else channels)
    grid = np.asarray(record.grid)
    # (file, 3D grid, what it is, quantity written)
    files: list[tuple[Path, np.ndarray, str, str]] = []
    if energy is not None and channel.strip() in (energy, ENERGY):
        if f.name == "chgcar":
            raise ValueError(
                "CHGCAR stores ρ·V of a density: write the energy channel to cube, dx or mrc"
            )
        # the energy channel follows the density ones; its values are not amounts
        files.append((out, grid[len(names)], f"energy channel {energy}", "amount"))
    else:
        summed = channel.strip().lower() == SUM
        for label, g in select_channels(grid[: len(names)], names, channel):
            what = "sum of channels" if summed else f"channel {label or channel}"
            target = out if label is None else channel_path(out, label)
            files.append((target, g, what, quantity))
    where = f"pgrid {record.name or 'structure'} ({record.source}#{record.record})"
    return [
        write(
            target,
            g,
            record.box,
            fmt=f.name,
            numbers=record.numbers,
            positions=record.positions,
            quantity=q,
            comment=f"{where} {what}",
        )
        for target, g, what, q in files
    ]


def _load_formats() -> None:
    """Import every format module of this package (each registers itself)."""
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


_load_formats()

__all__ = [
    "ALL",
    "ENERGY",
    "QUANTITIES",
    "SUM",
    "ExportAtoms",
    "Format",
    "channel_path",
    "export_record",
    "first_point",
    "format_for_path",
    "formats",
    "get_format",
    "register",
    "scaled",
    "select_channels",
    "write",
]
