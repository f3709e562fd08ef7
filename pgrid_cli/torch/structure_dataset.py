"""A dataset that grids structures on the fly, in the DataLoader workers.

The structures are held in a :class:`~pgrid_cli.torch.table.StructureTable`: a few flat
NumPy arrays (the CSR layout of the shards), which forked workers share without copying.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.complexes import LIGAND_FLAG, ComplexRecipe, ligand_center
from ..core.crystalview import cell_centre
from ..core.kernel import grid
from ..core.particles import Particles
from ..core.recipe import GridRecipe
from ..core.structure import Structure
from ..readers import ReadOptions, Rejection, expand_inputs, iter_records, prepare_structure
from ..readers.properties import atom_properties, properties
from . import targets as tg
from .augment import Augmentation, Transform, centroids
from .batching import BatchBuffers, ItemBatch
from .collate import GridCollate
from .table import StructureTable, TypedParticles

Errors = Literal["warn", "raise", "ignore"]
Render = Literal["item", "batch"]
#: Rejection kind of a record whose target could not be computed.
TARGET = "no target"


class StructureDataset(Dataset):
    """Structures gridded when they are read, with optional random rotation/translation.

    Build one with :meth:`from_files` (anything ``pgrid grid`` reads) or
    :meth:`from_structures`. Item ``i`` is a dict of tensors:

    - ``grid`` (C, nx, ny, nz) float32 — absent with ``render="batch"``, where the collate
      function :attr:`collate` grids the whole batch at once;
    - ``positions`` (M, 3) float64, Å, the atoms as gridded (after augmentation);
      ``numbers`` (M,) int64; ``weights`` (M,) float64 if any structure has weights;
    - ``origin`` (3,), ``axes`` (3, 3) float64, Å, and ``periodic``: the grid box;
    - ``rotation`` (3, 3) and ``translation`` (3,) float64: the augmentation
      (positions = rotation @ (input − centroid) + centroid + translation);
    - ``index``, ``name``, ``source``, ``record``; ``target`` (float32) if given;
    - ``targets`` (T,) / ``atom_targets`` (M, Ta) float32 with ``targets=[...]`` /
      ``atom_targets=[...]``: the readers' properties (``Structure.info["properties"]``,
      the same ones ``pgrid grid`` stores), missing values as ``nan_targets`` says
      (:mod:`pgrid_cli.torch.targets`).

    Parameters
    ----------
    table : StructureTable
    recipe : GridRecipe
        σ, grid size, box, padding and channels, exactly as ``pgrid grid`` takes them.
    rotate, translate, seed, shift_lattice
        Augmentation (see :class:`Augmentation`): item ``i`` of epoch ``e`` is transformed
        by a generator seeded with (seed, e, i), the same in every worker. With a
        ``cube:L`` crystal view (``recipe.crystal_view``) crystals are rotated too —
        lattice and atoms about the cell centre, the cube staying axis-aligned — and
        ``shift_lattice`` moves them by a random fractional lattice translation (item key
        ``shift`` (3,), zeros for molecules; the cell as gridded is ``lattice @
        rotation.T``). Such a dataset grids per item (``render="item"``).
    render : ``"item"`` or ``"batch"``
        Grid in ``__getitem__`` (works with any collate function), or leave it to
        :attr:`collate` (one multi-threaded kernel call per batch).
    threads : int, optional
        Kernel threads. Default: 1 per item (one structure is too little work to share)
        and per batch inside a DataLoader worker (the workers are the parallelism); every
        core for a batch gridded in the main process.
    buffers : int
        0 (default): every batch stays valid for ever (in the main process its grid tensor
        is that of an earlier batch nothing references any more, or a new one). k ≥ 1:
        batches are gridded into a ring of k reused tensors per process (no first-touch
        page faults on a new tensor per batch, in workers too); a batch then stays valid
        until k more batches have been gridded by the same process (see
        :class:`~pgrid_cli.torch.batching.BatchBuffers`).

    In a DataLoader (automatic batching), :meth:`__getitems__` fetches a whole batch at
    once and :attr:`collate` grids it in one kernel call; the batch is bit for bit the
    per-item one, whatever ``render`` says.
    """

    def __init__(
        self,
        table: StructureTable,
        recipe: GridRecipe | None = None,
        *,
        rotate: bool = False,
        translate: float = 0.0,
        seed: int | None = None,
        render: Render = "item",
        threads: int | None = None,
        shift_lattice: bool = False,
        buffers: int = 0,
    ) -> None:
        if render not in ("item", "batch"):
            raise ValueError(f"render must be 'item' or 'batch', got {render!r}")
        self.table = table
        self.recipe = _recipe(recipe)
        if render == "batch" and self._cube_view and bool(np.any(table.periodic)):
            raise ValueError(
                "a cube:L crystal view grids the images of each crystal: use render='item'"
            )
        if getattr(self.recipe, "energy", None) is not None and (
            render != "item" or isinstance(self.recipe, ComplexRecipe)
        ):
            raise ValueError(
                "an energy channel (recipe.energy) is computed per item: use render='item' "
                "(and not with receptor + ligand complexes)"
            )
        typer = getattr(self.recipe, "typer", None)
        if typer is not None and not isinstance(self.recipe, ComplexRecipe):
            if table.typed is None:
                raise ValueError(
                    "typed channels (recipe.typer) need each structure's chemistry, which a "
                    "StructureTable or untyped structures shards do not keep: build the "
                    "dataset with StructureDataset.from_files or from_structures (each "
                    "structure is typed once), or write the shards with pgrid grid --store "
                    "structures --channels <typer>"
                )
            stored = getattr(table, "typer_name", None)  # structures shards: their typer
            if stored is not None and (
                stored != str(typer.name) or tuple(table.typer_channels) != self.recipe.spec.names
            ):
                raise ValueError(
                    f"these structures shards hold the memberships of typer {stored!r} "
                    f"(channels {', '.join(table.typer_channels)}), not of the recipe's "
                    f"{typer.name!r} ({', '.join(self.recipe.spec.names)})"
                )
            if render != "item":
                raise ValueError(
                    "typed channels (recipe.typer) are gridded per item: use render='item'"
                )
        if isinstance(self.recipe, ComplexRecipe) and (table.ligand is None or render != "item"):
            raise ValueError(
                "a ComplexRecipe grids receptor + ligand complexes (read from a .types list or "
                "with ReadOptions(receptor=...)), with render='item'"
            )
        self.augmentation = Augmentation(rotate, translate, seed, shift_lattice)
        self.render = render
        self.threads = threads
        self.buffers = BatchBuffers(buffers)
        self.rejections: list[Rejection] = []
        self.nan_targets: str = "error"  #: how missing targets were handled
        # Shared memory, so set_epoch() reaches persistent workers too.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_structures(
        cls,
        structures: Iterable[Structure | Rejection],
        recipe: GridRecipe | None = None,
        *,
        target: Callable[[Structure], Any] | None = None,
        errors: Errors = "warn",
        targets: str | Sequence[str] | None = None,
        atom_targets: str | Sequence[str] | None = None,
        nan_targets: tg.NanTargets = "error",
        **kwargs: Any,
    ) -> StructureDataset:
        """A dataset of ``structures``; records it cannot grid become :attr:`rejections`.

        ``targets`` / ``atom_targets`` name properties of the structures (as the readers
        store them) to yield as ``targets`` / ``atom_targets``; a structure with one
        missing is an error (``nan_targets="error"``, ValueError), left out and listed in
        :attr:`rejections` (``"skip"``) or kept with a mask (``"mask"``).

        A record is rejected when it is a :class:`Rejection` already, fails the checks of
        ``pgrid grid`` (an element with no channel, no possible box, atoms far outside a
        ``cube:L``), or ``target`` raises ValueError/KeyError/TypeError on it.
        ``errors``: ``warn`` (skip them, one warning), ``ignore`` (skip them silently) or
        ``raise`` (ValueError at the first). Other keywords go to the constructor.
        """
        if errors not in ("warn", "raise", "ignore"):
            raise ValueError(f"errors must be 'warn', 'raise' or 'ignore', got {errors!r}")
        recipe = _recipe(recipe)
        tg.check_policy(nan_targets)
        names, atom_names = tg.names(targets), tg.names(atom_targets)
        kept: list[Structure] = []
        rejected: list[Rejection] = []
        values: list[Any] = []
        named: list[np.ndarray] = []
        per_atom: list[np.ndarray] = []
        typed: list[Particles] = []
        for s in structures:
            rej = s if isinstance(s, Rejection) else None
            prepared: Any = None
            if rej is None:
                prepared = prepare_structure(s, recipe)
                rej = prepared if isinstance(prepared, Rejection) else None
            value = None
            if rej is None and target is not None:
                try:
                    value = np.asarray(target(s), dtype=np.float32)
                except (ValueError, KeyError, TypeError) as exc:
                    rej = Rejection(s.source, s.record, s.name, f"target: {exc}", TARGET)
            if rej is None and (names or atom_names):
                found = _named_targets(s, names, atom_names)
                where = f"{s.source} record {s.record} ({s.name})"
                if isinstance(found, str):
                    raise ValueError(f"{where}: {found}: it cannot be a target")
                complete = bool(np.isfinite(found[0]).all() and np.isfinite(found[1]).all())
                if not complete and nan_targets == "error":
                    raise ValueError(
                        f"{where} has no value for a target of {[*names, *atom_names]}: use "
                        f"nan_targets='skip' or 'mask'"
                    )
                if not complete and nan_targets == "skip":
                    rej = Rejection(s.source, s.record, s.name, "a target is missing", TARGET)
                else:
                    named.append(found[0])
                    per_atom.append(found[1])
            if rej is None:
                kept.append(s)
                values.append(value)
                if recipe.typer is not None and not isinstance(recipe, ComplexRecipe):
                    typed.append(prepared[0])  # typed once, here, not in every epoch
                continue
            if errors == "raise":
                raise ValueError(f"{rej.source} record {rej.record} ({rej.name}): {rej.reason}")
            rejected.append(rej)
        table = StructureTable.from_structures(kept, None if target is None else values)
        if recipe.typer is not None and not isinstance(recipe, ComplexRecipe):
            table.typed = TypedParticles.from_particles(typed)
        if names:
            table.property_targets = np.array(named, dtype=np.float32).reshape(-1, len(names))
        if atom_names:
            table.atom_targets = (
                np.concatenate(per_atom).astype(np.float32) if per_atom else np.zeros((0, 0))
            )
        ds = cls(table, recipe, **kwargs)
        ds.nan_targets = nan_targets
        ds.rejections = rejected
        if rejected and errors == "warn":
            first = rejected[0]
            warnings.warn(
                f"{len(rejected)} record(s) skipped (see dataset.rejections); first: "
                f"{first.source} record {first.record}: {first.reason}",
                stacklevel=2,
            )
        return ds

    @classmethod
    def from_files(
        cls,
        inputs: str | Path | Sequence[str | Path],
        recipe: GridRecipe | None = None,
        *,
        format: str | None = None,
        read: ReadOptions | None = None,
        target: Callable[[Structure], Any] | None = None,
        errors: Errors = "warn",
        recursive: bool = True,
        **kwargs: Any,
    ) -> StructureDataset:
        """Read every structure of ``inputs`` into memory: files, directories (searched
        recursively) or glob patterns of anything ``pgrid grid`` reads (.xyz/.extxyz with
        ASE, .sdf/.mol with RDKit, .cif with pymatgen, optionally gzipped), with the same
        readers: ``format`` forces a format, ``read`` says how records are interpreted
        (e.g. ``ReadOptions(disorder="weight")``). See :meth:`from_structures` for
        ``target``, ``errors`` and the other keywords."""
        recipe = _recipe(recipe)
        if isinstance(inputs, (str, Path)):
            inputs = [inputs]
        paths = expand_inputs(list(inputs), recursive=recursive)

        def records() -> Iterable[Structure | Rejection]:
            for path in paths:
                yield from iter_records(path, format, read)

        return cls.from_structures(records(), recipe, target=target, errors=errors, **kwargs)

    # ------------------------------------------------------------------ epochs
    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentations of ``epoch``; call before iterating over each epoch (like
        ``DistributedSampler.set_epoch``). Reaches persistent workers as well."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self._epoch.fill_(int(epoch))

    @property
    def collate(self) -> GridCollate:
        """The collate function for a DataLoader over this dataset (grids the batch when
        ``render="batch"``, else stacks the items' grids)."""
        return GridCollate(self.recipe, self.threads)

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.table)

    def transform(self, index: int) -> Transform:
        """The augmentation of item ``index`` in the current epoch."""
        i = self._index(index)
        a0, a1 = self.table.atom_range(i)
        periodic = bool(self.table.periodic[i])
        cube = periodic and self._cube_view
        if cube:  # the cube stays on the cell centre; the crystal turns about it
            centre = cell_centre(self.table.lattices[i])
        elif isinstance(self.recipe, ComplexRecipe):  # rotations about the ligand's centre
            lig = np.asarray(self.table.ligand[a0:a1]) > 0.5  # type: ignore[index]
            pos = self.table.positions[a0:a1]
            centre = ligand_center(pos[lig], self.table.numbers[a0:a1][lig])
        else:
            pos = self.table.positions[a0:a1]
            centre = centroids(pos, np.array([0, a1 - a0]))[0] if a1 > a0 else np.zeros(3)
        return self.augmentation.transform(i, self.epoch, centre, periodic, rotate_crystal=cube)

    @property
    def _cube_view(self) -> bool:
        return getattr(self.recipe, "crystal_view", "cell") != "cell"

    def _index(self, index: int) -> int:
        i = operator.index(index)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} structures")
        return i % n

    def __getitems__(self, indices: Sequence[int]) -> ItemBatch:
        """The items ``indices``, for :attr:`collate` to fetch and grid as one batch
        (:func:`~pgrid_cli.torch.batching.fetch_batch`); any other collate function gets
        them one by one (``self[i]``)."""
        return ItemBatch(self, indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._index(index)
        return self._item(i, self.transform(i))

    def _item(self, i: int, xf: Transform) -> dict[str, Any]:
        """Item ``i`` moved by ``xf`` (what ``__getitem__`` returns for its transform)."""
        t = self.table
        a0, a1 = t.atom_range(i)
        numbers = t.numbers[a0:a1]
        weights = None if t.weights is None else t.weights[a0:a1].copy()
        recipe = self.recipe
        item: dict[str, Any] = {}
        if isinstance(recipe, ComplexRecipe):
            rotated = xf.rotate(t.positions[a0:a1])
            positions = rotated + xf.translation
            flags = np.asarray(t.ligand[a0:a1], dtype=np.float64)  # type: ignore[index]
            lig = flags > 0.5
            box = recipe.box_for(rotated[lig], None, numbers[lig])
            s = Structure(
                numbers, positions, weights=weights, info={"atom_properties": {LIGAND_FLAG: flags}}
            )
            g = recipe.grid_in_box(s, box, threads=self.threads or 1)
            item["grid"] = torch.from_numpy(g)
        else:
            typed = None if t.typed is None else t.typed.of(i)
            chans = recipe.spec.assign(numbers) if typed is None else typed[1]
            lattice = t.lattices[i] if t.periodic[i] else None
            if t.periodic[i] and self._cube_view:
                positions, lattice = xf.crystal(t.positions[a0:a1], t.lattices[i])
                window = recipe.crystal_window(positions, lattice, xf.centre)
                box, gridded, chans = window.box, window.positions, chans[window.index]
                w_grid = None if weights is None else weights[window.index]
            else:
                rotated = xf.rotate(t.positions[a0:a1])
                box = recipe.box_for(rotated, t.lattices[i] if t.periodic[i] else None)
                positions = rotated + xf.translation
                if t.periodic[i]:
                    positions = positions + xf.shift @ t.lattices[i]
                gridded, w_grid = positions, weights
                if typed is not None:  # one particle per (atom, channel) it belongs to
                    gridded, w_grid = positions[typed[0]], typed[2]
        if self.render == "item" and "grid" not in item:
            g = grid(
                gridded,
                box,
                recipe.sigma,
                channels=chans,
                n_channels=recipe.n_channels,
                weights=w_grid,
                threads=self.threads or 1,  # one structure is too little work to split
            )
            if recipe.energy is not None:  # the channel pgrid grid appends (docs/energy.md)
                e = recipe.energy.grid_box(positions, numbers, box, lattice, threads=self.threads)
                g = np.concatenate([g, e[np.newaxis]])
            item["grid"] = torch.from_numpy(g)
        item["positions"] = torch.from_numpy(positions)
        item["numbers"] = torch.from_numpy(numbers.astype(np.int64))
        if weights is not None:
            item["weights"] = torch.from_numpy(weights)
        item.update(
            origin=torch.from_numpy(box.origin.copy()),
            axes=torch.from_numpy(box.axes.copy()),
            periodic=bool(box.periodic),
            rotation=torch.from_numpy(xf.rotation.copy()),
            translation=torch.from_numpy(xf.translation.copy()),
            shift=torch.from_numpy(np.asarray(xf.shift, dtype=np.float64).copy()),
            index=i,
            name=t.name(i),
            source=t.source(i),
            record=int(t.records[i]),
        )
        if t.targets is not None:
            item["target"] = torch.from_numpy(np.array(t.targets[i], dtype=np.float32))
        mask = self.nan_targets == "mask"
        if t.property_targets is not None:
            item.update(tg.item_targets(t.property_targets[i], "targets", mask))
        if t.atom_targets is not None:
            item.update(tg.item_targets(t.atom_targets[a0:a1], "atom_targets", mask))
        return item

    def __repr__(self) -> str:
        return (
            f"StructureDataset({len(self)} structures, {self.recipe.shape} voxels, "
            f"σ = {self.recipe.sigma} Å, box {self.recipe.box}, channels "
            f"{self.recipe.channels}, "
            f"{self.augmentation!r}, render={self.render!r})"
        )


def _named_targets(
    s: Structure, names: tuple[str, ...], atom_names: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray] | str:
    """((T,) and (M, Ta) float64 targets of ``s``, NaN where missing), or why a target
    cannot be used (a string or an array)."""
    props, atoms = properties(s), atom_properties(s)
    row = np.full(len(names), np.nan)
    for k, name in enumerate(names):
        v = props.get(name)
        if isinstance(v, str) or (isinstance(v, np.ndarray) and v.size != 1):
            return f"property {name!r} is not a number"
        if v is not None:
            row[k] = float(np.asarray(v).reshape(-1)[0])
    cols = []
    for name in atom_names:
        a = atoms.get(name)
        if a is None:
            cols.append(np.full((len(s), 1), np.nan))
            continue
        try:
            cols.append(tg.numeric(name, a).reshape(len(s), -1))
        except ValueError:
            return f"atom property {name!r} is not a number"
    return row, np.concatenate(cols, axis=1) if cols else np.zeros((len(s), 0))


def _recipe(recipe: GridRecipe | None) -> GridRecipe:
    if recipe is None:
        return GridRecipe()
    if not isinstance(recipe, GridRecipe):
        raise TypeError(f"recipe must be a pgrid_cli.GridRecipe, got {type(recipe).__name__}")
    return recipe
