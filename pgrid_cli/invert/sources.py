"""Grids to invert, with what inverting them needs: box, σ, channel names (docs/format.md §6, §7).

Two kinds of input:

* a shard file or an output directory of ``pgrid grid`` (:class:`ShardGrids`), which
  carries everything, including the original atoms for scoring;
* a ``.npy`` array (``(C, nx, ny, nz)`` or ``(N, C, nx, ny, nz)``) plus a small JSON file
  (:class:`NpyGrids`)::

      {"sigma": 0.4,                         # Å
       "channels": ["H", "C", "N", "O", "*"],  # or "elements", "single", "C,H,N,O,*"
       "box": {"origin": [..], "axes": [[..], [..], [..]], "periodic": false},
       # or "boxes": [one per structure]; "shape" may be given, else the grid's
       "names": ["mol0", ...],                # optional
       "atoms": [{"numbers": [..], "positions": [[..], ..]}, ...]}  # optional, to score

A source is a sequence of :class:`GridItem` (random access, picklable, so worker
processes can read their own items). Problems that belong to one structure (a missing
σ, a grid whose shape does not match its box) are reported on the item, so the other
structures can still be inverted; a source that cannot be opened at all raises
ValueError.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..core.box import Box
from ..core.channels import ChannelSpec, atomic_number
from ..core.errors import ParameterError
from ..core.kernel import check_sigma
from ..readers import source_name
from ..store.layout import density_channels
from ..store.shard import Shard, ShardSet, plain

__all__ = [
    "GridItem",
    "GridSource",
    "NpyGrids",
    "ShardGrids",
    "open_grids",
    "parse_indices",
]


@dataclass
class GridItem:
    """One structure's grid and metadata (``error`` says why it cannot be inverted).

    Attributes
    ----------
    index : position in the source (0-based, over every shard of a directory)
    name, source, record : provenance (record: index in the original input file)
    grid : (C, nx, ny, nz) array, or None when it could not be read
    box : the grid's Box, or None
    sigma : Å, or None when missing
    channels : ChannelSpec, or None when missing
    ref_numbers, ref_positions : (M,), (M, 3) Å original atoms, when known
    ref_weights : (M,) their weights when the input stores them (site occupancies)
    error : one line, or None
    """

    index: int
    name: str
    source: str
    record: int
    grid: np.ndarray | None = None
    box: Box | None = None
    sigma: float | None = None
    channels: ChannelSpec | None = None
    ref_numbers: np.ndarray | None = None
    ref_positions: np.ndarray | None = None
    ref_weights: np.ndarray | None = None
    error: str | None = None


class GridSource(Protocol):
    """A sequence of structures to invert."""

    path: Path

    def __len__(self) -> int: ...

    def item(self, i: int) -> GridItem: ...


def open_grids(path: str | os.PathLike[str], meta: str | os.PathLike[str] | None = None) -> Any:
    """The grids at ``path``: a shard, a ``pgrid grid`` output directory, or a ``.npy``
    file (with ``meta``, default: the same name with ``.json``)."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        return NpyGrids(p, meta)
    if meta is not None:
        raise ParameterError("{meta} is for .npy grids; shards carry their own metadata")
    return ShardGrids(p)


def parse_indices(spec: str | None, n: int) -> list[int]:
    """Structure indices from ``"3"``, ``"0:10"``, ``"5,7,-1"``, ``"::2"`` (Python slice
    syntax, comma-separated; negative counts from the end). None means all ``n``.

    Returns indices in the order given, each once. Raises ValueError for bad syntax or
    an index out of range.
    """
    if spec is None or not spec.strip():
        return list(range(n))
    out: dict[int, None] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        try:
            if ":" in part:
                bits = [int(b) if b.strip() else None for b in part.split(":")]
                if len(bits) > 3:
                    raise ValueError
                picked = range(n)[slice(*bits)]
            else:
                i = int(part)
                if not -n <= i < n:
                    raise IndexError(i)
                picked = range(i % n, i % n + 1)
        except IndexError:
            raise ValueError(f"index {part} is out of range ({n} structures)") from None
        except ValueError:
            raise ValueError(
                f"bad index {part!r}: use e.g. 3, 0:10, 5,7,-1 or ::2 (Python slices)"
            ) from None
        out.update(dict.fromkeys(picked))
    return list(out)


# ---------------------------------------------------------------------- shards
class ShardGrids:
    """The structures of a shard file or of every shard of an output directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.set = ShardSet(self.path)
        self._meta: dict[Path, tuple[float | None, ChannelSpec | None, str | None]] = {}

    def __len__(self) -> int:
        return len(self.set)

    def _shard_meta(self, shard: Shard) -> tuple[float | None, ChannelSpec | None, str | None]:
        """(σ, channels, problem) of a shard, read once."""
        if shard.path not in self._meta:
            attrs = shard.attrs
            problems = []
            sigma = attrs.get("sigma")
            if sigma is None:
                problems.append("no sigma attribute")
            channels = None
            names = attrs.get("channels")
            if names is None or len(names) == 0:
                problems.append("no channels attribute")
            else:
                try:
                    channels = ChannelSpec(density_channels(attrs))
                except ValueError as exc:
                    problems.append(f"bad channel list ({exc})")
            problem = f"{shard.path.name}: {', '.join(problems)}" if problems else None
            self._meta[shard.path] = (sigma, channels, problem)
        return self._meta[shard.path]

    def item(self, i: int) -> GridItem:
        shard, j = self.set.locate(i)
        f = shard.file
        name = _text(f["name"][j]) if "name" in f else f"#{i}"
        item = GridItem(
            index=i,
            name=name,
            source=_text(f["source"][j]) if "source" in f else source_name(shard.path),
            record=int(f["record"][j]) if "record" in f else j,
        )
        sigma, channels, problem = self._shard_meta(shard)
        item.sigma, item.channels = sigma, channels
        try:
            item.ref_numbers, item.ref_positions = shard.atoms(j)
            item.ref_weights = shard.weights(j)  # site occupancies (`--disorder`)
            excluded = plain(f.attrs.get("exclude", []))
            if excluded:  # atoms `pgrid grid --exclude` left out of the grid: not to be found
                keep = ~np.isin(item.ref_numbers, [atomic_number(e) for e in excluded])
                item.ref_numbers, item.ref_positions = (
                    item.ref_numbers[keep],
                    item.ref_positions[keep],
                )
                if item.ref_weights is not None:
                    item.ref_weights = item.ref_weights[keep]
            item.box = shard.box(j)
            item.grid = shard.grid(j)
            if channels is not None:  # the density channels only
                item.grid = item.grid[: channels.n_channels]
        except (KeyError, ValueError) as exc:
            item.error = f"{shard.path.name}: cannot read structure {j} ({exc})"
            return item
        item.error = problem
        return item

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "set": self.set}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.set = state["set"]
        self._meta = {}


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


# ---------------------------------------------------------------------- .npy + JSON
class NpyGrids:
    """Grids in a ``.npy`` file described by a JSON file (see the module doc)."""

    def __init__(
        self, path: str | os.PathLike[str], meta: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path)
        self.meta_path = Path(meta) if meta is not None else self.path.with_suffix(".json")
        if not self.path.is_file():
            raise ValueError(f"{self.path}: no such file")
        try:
            arr = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: not a readable .npy array ({exc})") from None
        if arr.ndim not in (4, 5):
            raise ValueError(
                f"{self.path}: grids must have shape (C, nx, ny, nz) or (N, C, nx, ny, nz), "
                f"got {arr.shape}"
            )
        self._batched = arr.ndim == 5
        self._n = arr.shape[0] if self._batched else 1
        if not self.meta_path.is_file():
            raise ParameterError(
                f"{self.meta_path}: no metadata file for {self.path.name} (a JSON file with "
                f"sigma, channels and box; pass it with {{meta}})"
            )
        try:
            self.meta = json.loads(self.meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.meta_path}: not valid JSON ({exc})") from None
        if not isinstance(self.meta, dict):
            raise ValueError(f"{self.meta_path}: expected a JSON object")
        self._arr: np.ndarray | None = None

    def __len__(self) -> int:
        return self._n

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arr"] = None  # memory maps are reopened in each process
        return state

    def _grids(self) -> np.ndarray:
        if self._arr is None:
            self._arr = np.load(self.path, mmap_mode="r")
        return self._arr

    def _per_structure(self, key: str, i: int) -> Any:
        values = self.meta.get(key)
        if values is None:
            return None
        if not isinstance(values, list) or len(values) != self._n:
            raise ValueError(f"{key!r} must list one entry per structure ({self._n})")
        return values[i]

    def item(self, i: int) -> GridItem:
        names = self.meta.get("names")
        name = str(names[i]) if isinstance(names, list) and i < len(names) else f"#{i}"
        item = GridItem(index=i, name=name, source=source_name(self.path), record=i)
        arr = self._grids()
        grid = np.asarray(arr[i] if self._batched else arr)
        item.grid = grid
        try:
            item.sigma = _sigma(self.meta.get("sigma"))
            item.channels = _channels(self.meta.get("channels"))
            box_d = self._per_structure("boxes", i) if "boxes" in self.meta else None
            box_d = box_d if box_d is not None else self.meta.get("box")
            if not isinstance(box_d, dict):
                raise ValueError("no box (a 'box' object, or 'boxes' with one per structure)")
            box_d = dict(box_d)
            box_d.setdefault("shape", list(grid.shape[1:]))
            item.box = Box.from_dict(box_d)
            atoms = self._per_structure("atoms", i)
            if atoms is not None:
                item.ref_numbers = np.asarray(atoms["numbers"], dtype=np.int64)
                item.ref_positions = np.asarray(atoms["positions"], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as exc:
            item.error = f"{self.meta_path.name}: {_message(exc)}"
        return item


def _sigma(v: Any) -> float | None:
    return None if v is None else check_sigma(v)  # None: reported as a missing σ


def _channels(v: Any) -> ChannelSpec | None:
    if v is None:
        return None
    if isinstance(v, str):
        return ChannelSpec.parse(v)
    if isinstance(v, list) and v:
        return ChannelSpec([str(c) for c in v])
    raise ValueError(f"channels must be a list of names or a string, got {v!r}")


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]!r}"
    return str(exc)
