"""The options of a ``pgrid grid`` run (:class:`GridOptions`), validated into
:class:`Settings`, and the constants the run works with."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.box import Box, ShapeLike, normalize_shape
from ..core.complexes import CENTERS, ComplexRecipe
from ..core.energy import DEFAULT_CUTOFF, DEFAULT_MAX_ENERGY, DEFAULT_TEMPERATURE, EnergySpec
from ..core.errors import ParameterError
from ..core.kernel import check_memory
from ..core.recipe import GridRecipe
from ..core.tiles import check_tiles
from ..readers import (
    ReadOptions,
    detect_format,
)
from ..readers.properties import read_labels
from ..readers.records import PDB_POLICIES
from ..store.codec import GridCodec
from ..typers import channel_typer, typer_names
from .elements import (
    AUTO,
    channels_without,
    element_symbol,
    excluded_numbers,
)

#: A complex's default cube (Å) and voxels per edge (0.5 Å voxels: the field's choice).
COMPLEX_CUBE = 24.0
COMPLEX_GRID_SIZE = 48
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
    tiles, context : cut each structure, gridded at ``spacing``, into tiles of N³ focus
        voxels with M voxels of context on every side, one record each (docs/grid.md,
        "Tiles"); ``grid_size`` is then not used (a tile is N + 2M voxels)
    crystal_view : crystals: ``cell`` (one periodic unit cell, the default), ``cube:L`` (an
        axis-aligned cube of side L Å of the infinite periodic density, centred on the
        cell centre) or ``cube`` with ``spacing`` (L = grid_size × spacing)
    channels may also name a typer (``pharmacophore``, ``xs``, docs/typing.md);
    charge_channel : ``gasteiger`` or ``file``: a signed channel ``charge`` of partial
        charges after the others (docs/typing.md)
    conformers : SMILES (and SDF/mol with ``embed``): conformers per molecule (ETKDG v3,
        each seeded), each one record with the property ``conformer`` 0 … K-1
    energy, probe, energy_cutoff, energy_max, energy_transform, temperature : an energy
        channel (``energy="lj"``) appended after the density channels, see
        :class:`pgrid_cli.core.energy.EnergySpec` (probe, cutoff Å, clip K, ``none`` or
        ``boltzmann``, T in K); ``energy=None``: none
    store : ``grids``, or ``structures``: shards of atoms, cells and provenance without
        grids (``content = "structures"``, docs/format.md §6), written at parser speed,
        to be gridded at training time (:class:`pgrid_cli.torch.StructureShardDataset`);
        the gridding options are then not used and not part of the run
    waters, altlocs, hydrogens, hetatm, models : PDB/mol2 reading policies
        (:data:`~pgrid_cli.readers.records.PDB_POLICIES`, :mod:`pgrid_cli.readers.pdb`)
    receptor : a receptor file: every input record is a ligand gridded with it
    data_root : the directory relative paths of ``.types`` lists are resolved against
    center : ``ligand`` grids receptor + ligand complexes (:mod:`pgrid_cli.core.complexes`);
        implied by ``receptor`` or ``.types`` inputs. A complex's box defaults to
        ``cube:24`` and ``grid_size`` (None: the default) to 48 (0.5 Å voxels); others' to 32
    """

    grid_size: ShapeLike | None = 32
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
    crystal_view: str = "cell"
    tiles: int | None = None
    context: int = 0
    # PDB / mol2 policies and receptor + ligand complexes
    waters: str = "drop"
    altlocs: str = "highest-occupancy"
    hydrogens: str = "keep"
    hetatm: str = "keep"
    models: str = "first"
    receptor: str | os.PathLike[str] | None = None
    data_root: str | os.PathLike[str] | None = None
    center: str | None = None

    @property
    def complex(self) -> bool:
        """Whether records are receptor + ligand complexes."""
        return self.receptor is not None or self.center == "ligand"

    charge_channel: str | None = None
    conformers: int = 1
    # the energy channel (docs/energy.md); None: no energy channel
    energy: str | None = None
    probe: str = "CH4"
    energy_cutoff: float = DEFAULT_CUTOFF
    energy_max: float = DEFAULT_MAX_ENERGY
    energy_transform: str = "none"
    temperature: float = DEFAULT_TEMPERATURE

    def energy_spec(self) -> EnergySpec | None:
        """The validated energy channel of the options (None without ``energy``)."""
        if self.energy is None or str(self.energy).strip().lower() in ("", "none"):
            return None
        return EnergySpec(
            self.energy,
            self.probe,
            self.energy_cutoff,
            self.energy_max,
            self.energy_transform,
            self.temperature,
        )

    def resolve(self) -> Settings:
        """Validate every option (ValueError with a specific message) → :class:`Settings`."""
        if self.center is not None and self.center not in CENTERS:
            raise ParameterError(f"{{center}} must be one of {', '.join(CENTERS)}")
        grid_size = self.grid_size
        if grid_size is None:
            grid_size = COMPLEX_GRID_SIZE if self.complex else 32
        sized = replace(self, grid_size=grid_size)
        tiles = sized.tile_choice()
        if tiles is not None:  # the tile's grid; the spacing sets the parent grid (core/tiles.py)
            if self.complex:
                raise ParameterError("{tiles} cannot be combined with receptor + ligand complexes")
            box, view, size = self.box, self.crystal_view, tiles[0] + 2 * tiles[1]
        elif self.complex and self.box == "fit" and self.spacing is None:
            box, view, size = f"cube:{COMPLEX_CUBE:g}", None, grid_size
        else:
            box = self.box if self.spacing is None else sized.spacing_box()
            view, size = None, grid_size
        exclude = excluded_numbers(self.exclude)
        # ``auto`` needs the inputs: grid_files resolves it; here a stand-in validates the rest
        key = self.channels.strip().lower()
        typed = key in typer_names() and key not in ("elements", "single")
        channels = self.channels if typed else channels_without(self.channels, exclude)
        typer = channel_typer(channels, self.charge_channel)
        if typer is not None and self.store == "structures" and self.complex:
            raise ParameterError(
                "typed channels and charges ({channels}, {charge_channel}) of complexes need "
                "{store} grids"
            )
        if typer is not None and (tiles is not None or view or sized.view_choice() != "cell"):
            raise ParameterError(
                "typed channels and charges ({channels}, {charge_channel}) cannot yet be combined "
                "with {tiles} or a cube {crystal_view}"
            )
        energy = self.energy_spec()
        if energy is not None and tiles is not None:
            raise ParameterError("{energy} cannot yet be combined with {tiles}")
        if self.complex:
            recipe: GridRecipe = ComplexRecipe(
                size,
                self.sigma,
                "single" if typer else channels,
                box,
                self.padding,
                typer=typer,
                energy=energy,
            )
        else:
            recipe = GridRecipe(
                size,
                self.sigma,
                "single" if typer else channels,
                box,
                self.padding,
                view or sized.view_choice(),
                typer=typer,
                energy=energy,
            )
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
            waters=self.waters,
            altlocs=self.altlocs,
            hydrogens=self.hydrogens,
            hetatm=self.hetatm,
            models=self.models,
            receptor=None if self.receptor is None else str(Path(self.receptor).resolve()),
            data_root=None if self.data_root is None else str(Path(self.data_root).resolve()),
            conformers=_conformers(self.conformers),
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
            tiles=tiles,
        )

    def spacing_box(self) -> str:
        """The ``cube:L`` box that ``spacing`` makes with ``grid_size`` (L = N·H)."""
        h = self.spacing
        if h is None or not (isinstance(h, (int, float)) and math.isfinite(h) and h > 0):
            raise ParameterError(f"{{spacing}} must be a positive number of Å, got {h!r}")
        shape = normalize_shape(32 if self.grid_size is None else self.grid_size)
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

    def tile_choice(self) -> tuple[int, int] | None:
        """(N, M) of ``tiles`` and ``context``, checked (they need ``spacing``), or None."""
        if self.tiles is None:
            return None
        n, m = check_tiles(self.tiles, self.context)
        if self.spacing is None:
            raise ParameterError("{tiles} needs {spacing}: the voxel edge of the tiled grid, Å")
        h = self.spacing
        if not (isinstance(h, (int, float)) and math.isfinite(h) and h > 0):
            raise ParameterError(f"{{spacing}} must be a positive number of Å, got {h!r}")
        if str(self.crystal_view).strip().lower() == "cube":
            raise ParameterError("with {tiles}, give the cube's side: {crystal_view} cube:L")
        return n, m

    def view_choice(self) -> str:
        """The recipe's crystal view: ``crystal_view``, with ``cube`` made ``cube:N·H``
        by ``spacing`` (and ``cube:L`` refused beside ``spacing``: one sets the side)."""
        text = str(self.crystal_view).strip().lower()
        if text == "cube":
            if self.spacing is None:
                raise ParameterError(
                    "{crystal_view} cube needs {spacing} (side grid_size × spacing Å), or "
                    "give the side: cube:L"
                )
            return self.spacing_box()  # the same cube:N·H as molecules get
        if self.spacing is not None and text.startswith("cube:"):
            raise ParameterError(
                "{spacing} sets the cube's side (grid_size × spacing Å): give {crystal_view} "
                "cube, not " + text
            )
        return text


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
    tiles: tuple[int, int] | None = None  #: (N, M): records are tiles (runs/gridtiles.py)

    @property
    def structures_only(self) -> bool:
        return self.store == "structures"

    def parameters(self) -> dict[str, Any]:
        """The parameters that determine shard contents (JSON-friendly)."""
        if self.structures_only:  # nothing of the recipe or codec is stored
            typer = self.recipe.typer  # the stored memberships' (only when typed)
            return {
                "content": "structures",
                "disorder": self.read.disorder,
                "format": self.format,
                "shard_size": self.shard_size,
                **self._smiles_parameters(),
                **(
                    {"typer": str(typer.name), "channels": list(self.recipe.spec.names)}
                    if typer is not None
                    else {}
                ),
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
            **({"tiles": list(self.tiles), "spacing": self.spacing} if self.tiles else {}),
        }

    def _smiles_parameters(self) -> dict[str, Any]:
        """SMILES embedding options, only when not the defaults (run ids stay as they were)."""
        r = self.read
        return {
            **({"embed_seed": r.embed_seed} if r.embed_seed else {}),
            **({"relax": True} if r.relax else {}),
            **({"embed": True} if r.embed else {}),
            # PDB/mol2 policies and complexes: only when not the defaults
            **{k: getattr(r, k) for k, v in PDB_POLICIES.items() if getattr(r, k) != v[0]},
            **({"receptor": r.receptor} if r.receptor else {}),
            **({"data_root": r.data_root} if r.data_root else {}),
            **({"conformers": r.conformers} if r.conformers != 1 else {}),
        }


def _conformers(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ParameterError(f"{{conformers}} must be a positive integer, got {k!r}")
    return k


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
