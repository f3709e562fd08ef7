"""The options of a ``pgrid grid`` run (:class:`GridOptions`), validated into
:class:`Settings`, and the constants the run works with."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.box import Box, ShapeLike, normalize_shape
from ..core.errors import ParameterError
from ..core.kernel import check_memory
from ..core.recipe import GridRecipe
from ..readers import (
    ReadOptions,
    detect_format,
)
from ..readers.properties import read_labels
from ..store.codec import GridCodec
from .elements import (
    AUTO,
    channels_without,
    element_symbol,
    excluded_numbers,
)

#: Shards aim at about this many bytes on disk when ``shard_size`` is not given.
TARGET_SHARD_BYTES = 250e6
#: Assumed compression of rounded, gzip'd grids when choosing the default shard size
#: (drug-like molecules at 32³ with element channels compress about 35×).
_ASSUMED_RATIO = {"gzip": 35.0, "zstd": 35.0, "lzf": 8.0, "none": 1.0}
# Plugin filters (docs/benchmarks.md, "Storage codecs"): 30x for shuffle + LZ4 or Zstd.
_ASSUMED_RATIO.update({"lz4": 30.0, "blosc2-lz4": 30.0, "blosc2-zstd": 40.0})
_ASSUMED_RATIO.update({"blosc2-lz4-bitshuffle": 15.0, "blosc2-zstd-bitshuffle": 30.0})
#: Grids per worker task: about this many bytes of raw float32 (bounded to 1..64).
_TASK_BYTES = 32 << 20
_MAX_NOTES = 50
#: What ``store`` can be: shards of grids, or of structures only (gridded later).
STORES = ("grids", "structures")
#: Records per shard of a structures run (``--store structures``) by default: about
#: 100 MB for drug-like molecules (~50 atoms: 34 bytes an atom, plus names).
STRUCTURES_SHARD_SIZE = 50_000
#: Records per worker task of a structures run (parsing only: cheap per record).
_PARSE_TASK = 256
#: A structure whose grid holds less than this share of its weight is counted (and
#: warned about) in the summary: its box cuts off part of its density.
CAPTURE_WARNING = 0.99
#: A structure whose largest voxel edge is above this many σ is counted and warned about:
#: its Gaussians are undersampled (a voxel wider than the atom's density).
COARSE_VOXELS = 2.0
COARSE_NOTE = (
    "voxel edge above 2σ: the density is undersampled (use a smaller --spacing, a larger "
    "--grid-size or a larger --sigma)"
)


def voxel_edge(box: Box) -> float:
    """The longest voxel edge of a box, Å (its edge vectors ÷ the voxels along them)."""
    return float(np.max(np.linalg.norm(box.axes, axis=1) / np.asarray(box.shape)))


# ---------------------------------------------------------------------- options
@dataclass(frozen=True)
class GridOptions:
    """The parameters of a ``pgrid grid`` run: the gridding recipe, storage and reading.

    Attributes
    ----------
    grid_size, sigma, channels, box, padding : the :class:`~pgrid_cli.core.GridRecipe`
    dtype : ``float32`` or ``float16`` storage
    compression : ``gzip`` (``gzip:1``…``gzip:9``), ``zstd``, ``lz4``, ``blosc2-lz4``,
        ``blosc2-zstd`` (and ``-bitshuffle``), ``lzf`` or ``none`` (:class:`GridCodec`)
    lossless : store the kernel's float32 values unrounded (see :mod:`pgrid_cli.store.codec`)
    disorder : CIF partial occupancy policy, ``error``, ``majority`` or ``weight``
    format : force an input format (``xyz``, ``sdf``, ``cif``) instead of the extension
    shard_size : input records per shard (default: see :func:`default_shard_size`)
    channels may also be ``auto``: one channel per element present in the inputs (found by
        a first pass over them, :func:`pgrid_cli.runs.elements.scan_elements`)
    exclude : elements whose atoms are not gridded (e.g. ``"H"``); they are kept with the
        structure's atoms and recorded in the shard attribute ``exclude``
    spacing : voxel edge (Å) for molecules: the box becomes a fixed cube of side
        grid_size × spacing (``cube:L``) centred on each molecule; crystals keep their cell
    cif_tags : CIF data items kept as properties (names, or one comma-separated string)
    labels, labels_key : a table (.csv or .parquet) of properties joined to the records
        by ``name`` or by ``source,record`` (docs/grid.md, "Properties")
    store : ``grids``, or ``structures``: shards of atoms, cells and provenance without
        grids (``content = "structures"``, docs/format.md §6), written at parser speed,
        to be gridded at training time (:class:`pgrid_cli.torch.StructureShardDataset`);
        the gridding options are then not used and not part of the run
    """

    grid_size: ShapeLike = 32
    sigma: float = 0.5
    channels: str = "elements"
    box: str = "fit"
    padding: float = 2.0
    dtype: str = "float32"
    compression: str = "gzip"
    lossless: bool = False
    disorder: str = "error"
    format: str | None = None
    shard_size: int | None = None
    spacing: float | None = None
    exclude: str | Sequence[str] = ()
    cif_tags: str | Sequence[str] = ()
    labels: str | os.PathLike[str] | None = None
    labels_key: str = "name"
    relax: bool = False
    embed_seed: int = 0
    embed: bool = False
    store: str = "grids"

    def resolve(self) -> Settings:
        """Validate every option (ValueError with a specific message) → :class:`Settings`."""
        box = self.box if self.spacing is None else self.spacing_box()
        exclude = excluded_numbers(self.exclude)
        # ``auto`` needs the inputs: grid_files resolves it; here a stand-in validates the rest
        channels = channels_without(self.channels, exclude)
        recipe = GridRecipe(self.grid_size, self.sigma, channels, box, self.padding)
        # Workers allocate at least one grid: refuse a size over the cap before any work.
        check_memory((recipe.n_channels, *recipe.shape), "one grid")
        codec = GridCodec.parse(self.compression, self.dtype, self.lossless)
        tags = self.cif_tags.split(",") if isinstance(self.cif_tags, str) else self.cif_tags
        read = ReadOptions(
            self.disorder,
            cif_tags=tuple(t.strip() for t in tags if t.strip()),
            embed_seed=int(self.embed_seed),
            relax=bool(self.relax),
            embed=bool(self.embed),
        )
        labels = None
        if self.labels is not None:
            table = read_labels(self.labels, self.labels_key)  # checked now, read again later
            labels = (str(Path(table.path).resolve()), ",".join(table.key))
        fmt = detect_format("", self.format) if self.format is not None else None
        if self.shard_size is not None and int(self.shard_size) < 1:
            raise ParameterError(f"{{shard_size}} must be at least 1, got {self.shard_size}")
        if self.store not in STORES:
            raise ParameterError(f"{{store}} must be grids or structures, got {self.store!r}")
        if self.shard_size is not None:
            size = int(self.shard_size)
        elif self.store == "structures":
            size = STRUCTURES_SHARD_SIZE
        else:
            size = default_shard_size(recipe.shape, recipe.n_channels, codec)
        return Settings(
            recipe=recipe,
            codec=codec,
            read=read,
            format=fmt,
            shard_size=size,
            labels=labels,
            spacing=None if self.spacing is None else float(self.spacing),
            exclude=exclude,
            auto_channels=self.channels.strip().lower() == AUTO,
            store=self.store,
        )

    def spacing_box(self) -> str:
        """The ``cube:L`` box that ``spacing`` makes with ``grid_size`` (L = N·H)."""
        h = self.spacing
        if h is None or not (isinstance(h, (int, float)) and math.isfinite(h) and h > 0):
            raise ParameterError(f"{{spacing}} must be a positive number of Å, got {h!r}")
        shape = normalize_shape(self.grid_size)
        if len(set(shape)) != 1:
            raise ParameterError(
                f"{{spacing}} makes a cube: it needs one {{grid_size}} N, not {shape}"
            )
        if self.box != "fit":
            raise ParameterError(
                f"{{spacing}} sets the box (a cube of grid_size × spacing Å); do not give "
                f"{{box}} {self.box} as well"
            )
        return f"cube:{shape[0] * float(h):.10g}"


@dataclass(frozen=True)
class Settings:
    """Validated run parameters (from :meth:`GridOptions.resolve`); picklable."""

    recipe: GridRecipe
    codec: GridCodec
    read: ReadOptions
    format: str | None
    shard_size: int
    threads: int = 1  #: kernel threads in the process that grids
    labels: tuple[str, str] | None = None  #: (labels table path, key), joined when writing
    spacing: float | None = None  #: the voxel edge asked for (Å), when it set the box
    exclude: tuple[int, ...] = ()  #: atomic numbers of the atoms not gridded
    auto_channels: bool = False  #: channels were chosen from the inputs (``auto``)
    store: str = "grids"  #: or ``structures``: no grids (see :class:`GridOptions`)

    @property
    def structures_only(self) -> bool:
        return self.store == "structures"

    def parameters(self) -> dict[str, Any]:
        """The parameters that determine shard contents (JSON-friendly)."""
        if self.structures_only:  # nothing of the recipe or codec is stored
            return {
                "content": "structures",
                "disorder": self.read.disorder,
                "format": self.format,
                "shard_size": self.shard_size,
                **self._smiles_parameters(),
            }
        c = self.codec
        return {
            **self.recipe.parameters(),
            "dtype": c.dtype,
            "compression": c.compression,
            "compression_level": c.level if c.compression == "gzip" else 0,
            "rounding_step": c.step,
            "disorder": self.read.disorder,
            "format": self.format,
            "shard_size": self.shard_size,
            # only when set, so that the run ids of runs without them do not change
            **({"cif_tags": list(self.read.cif_tags)} if self.read.cif_tags else {}),
            **({"exclude": [element_symbol(z) for z in self.exclude]} if self.exclude else {}),
            **({"labels": list(self.labels)} if self.labels else {}),
            **self._smiles_parameters(),
        }

    def _smiles_parameters(self) -> dict[str, Any]:
        """SMILES embedding options, only when not the defaults (run ids stay as they were)."""
        r = self.read
        return {
            **({"embed_seed": r.embed_seed} if r.embed_seed else {}),
            **({"relax": True} if r.relax else {}),
            **({"embed": True} if r.embed else {}),
        }


def default_shard_size(shape: ShapeLike, n_channels: int, codec: GridCodec) -> int:
    """Records per shard so that a shard is about :data:`TARGET_SHARD_BYTES` on disk.

    Assumes typical compression for the codec and rounds down to 1, 2 or 5 × 10ⁿ.
    """
    raw = n_channels * int(np.prod(normalize_shape(shape))) * codec.np_dtype.itemsize
    ratio = (
        _ASSUMED_RATIO[codec.compression]
        if codec.step
        else min(_ASSUMED_RATIO[codec.compression], 10.0)
    )
    n = max(1.0, TARGET_SHARD_BYTES / (raw / ratio))
    exp = 10 ** math.floor(math.log10(n))
    for m in (5, 2, 1):
        if n >= m * exp:
            return int(min(m * exp, 100_000))
    return 1
