"""Batched fetching for the on-the-fly datasets: one batch = one read, one augmentation
draw, one kernel call into one output tensor (issue 11, item 4).

A ``torch.utils.data.DataLoader`` with automatic batching calls a dataset's
``__getitems__(indices)`` when it has one, and passes what it returns to the collate
function. :class:`~pgrid_cli.torch.StructureDataset` returns an :class:`ItemBatch`; its
collate functions (:attr:`StructureDataset.collate`, :func:`collate`) turn it into the
batch with :func:`fetch_batch`: the atoms of every item gathered in one vectorised read
(:meth:`StructureTable.gather`; structures shards: one HDF5 read per dataset and shard),
every augmentation of the batch drawn (:meth:`Augmentation.draws`), the boxes computed
for the whole batch, and one native ``grid_batch`` call into the batch's grid tensor.
The result is bit for bit the collated per-item path (``collate([ds[i] for i in
indices])``, render ``"item"`` or ``"batch"``): same grids, positions, boxes,
augmentations, targets and identities for the same seed and epoch.

Output buffers: with ``buffers=k`` (k ≥ 1) a dataset grids batch n into slot n mod k of a
ring of k tensors of its own process (created on first use, in shared memory inside a
DataLoader worker) instead of a new tensor per batch, so no batch pays for first-touch
page faults on a fresh 46 MB tensor (32 × 11 × 32³ float32). See
:class:`BatchBuffers` for how long a batch stays valid.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from .. import _core
from ..core.box import _SAFE_SIDE
from ..core.kernel import _threads, resolve_isa
from . import targets as tg
from .augment import centroids, rotate_points
from .collate import default_threads, empty_shared

if TYPE_CHECKING:
    from .structure_dataset import StructureDataset

_EYE = np.eye(3)


@dataclass
class Gathered:
    """The structures of one batch in the flat (CSR) layout, in batch order.

    offsets (B+1,) int64; numbers (M,) integer; positions (M, 3) float64 Å (a new array,
    owned by the caller); weights (M,) float64 or None; lattices (B, 3, 3) float64 Å;
    periodic (B,) bool; records (B,) int64; names, sources: B str; targets (B, ...)
    float32 or None; property_targets (B, T) and atom_targets (M, Ta) float32 or None.
    """

    offsets: np.ndarray
    numbers: np.ndarray
    positions: np.ndarray
    weights: np.ndarray | None
    lattices: np.ndarray
    periodic: np.ndarray
    records: np.ndarray
    names: list[str]
    sources: list[str]
    targets: np.ndarray | None = None
    property_targets: np.ndarray | None = None
    atom_targets: np.ndarray | None = None


def atom_index(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(sum(counts),) int64: ``starts[s] + 0 .. counts[s]-1`` for every s, in order."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return np.repeat(np.asarray(starts, np.int64) - offsets[:-1], counts) + np.arange(
        offsets[-1], dtype=np.int64
    )


class BatchBuffers:
    """A ring of ``slots`` reused grid tensors, one ring per process.

    Batch n of a process is gridded into slot n mod ``slots`` (grown when a larger batch
    comes), so it **stays valid until the process has gridded ``slots`` more batches**:

    * main process (``num_workers=0``): until the ``slots``-th next batch is fetched —
      ``slots=1`` until the next one, ``slots=2`` also while the next one is in use;
    * DataLoader workers: each worker has its own ring, in shared memory (the main
      process receives it without a copy) and runs up to ``prefetch_factor`` batches
      ahead of the training loop; with ``slots ≥ prefetch_factor + 2`` a batch stays valid
      at least until the next batch is fetched (the DataLoader's own ``pin_memory=True``
      copies every batch, and so ends the question).

    Keep a batch longer by copying it (``batch["grid"].clone()``), or use ``buffers=0``
    (the default): every batch valid for ever — a new tensor per batch, except that the
    main process reuses one of the last :data:`RECYCLED` whose memory nothing references
    any more (:meth:`_unreferenced`).
    """

    def __init__(self, slots: int) -> None:
        if int(slots) < 0:
            raise ValueError(f"buffers must be a non-negative number of batches, got {slots}")
        self.slots = int(slots)
        self._pid = -1
        self._ring: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        self._next = 0
        self._generation: list[int] = []  # of each slot: +1 whenever it is made anew
        self._sent: list[int] = []  # the generation of each slot a batch has carried

    def take(
        self, shape: tuple[int, ...], aux: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, _Ticket | None]:
        """(a float32 tensor of ``shape`` (B, C, nx, ny, nz), a uint8 tensor of ``aux``
        bytes for the batch's small arrays): the next slot of the ring (grown when a larger
        batch comes), or new tensors without a ring; in shared memory inside a worker.
        Third: the slot's :class:`_Ticket` (None without a ring)."""
        if self.slots == 0:
            if get_worker_info() is None:
                return self._unreferenced(shape), empty_shared((aux,), torch.uint8), None
            return empty_shared(shape), empty_shared((aux,), torch.uint8), None
        if self._pid != os.getpid():  # first use in this process (a fresh worker)
            self._pid, self._ring, self._next = os.getpid(), [None] * self.slots, 0
            self._generation, self._sent = [0] * self.slots, [0] * self.slots
            for k in range(self.slots):  # every slot made and touched now, not in use
                self._ring[k] = self._slot(None, shape, aux)
                self._generation[k] = 1
        k = self._next
        self._next = (k + 1) % self.slots
        old = self._ring[k]
        slot = self._ring[k] = self._slot(old, shape, aux)
        if slot is not old:
            self._generation[k] += 1
        return slot[0][: shape[0]], slot[1], _Ticket(self, k)

    @staticmethod
    def _slot(
        slot: tuple[torch.Tensor, torch.Tensor] | None, shape: tuple[int, ...], aux: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``slot``, or a new one where it is too small (new memory prefaulted: its first
        touch, page faults and zeroing, costs more than gridding into it)."""
        grids = None if slot is None else slot[0]
        buf = None if slot is None else slot[1]
        if grids is not None and buf is not None:
            if grids.shape[1:] == shape[1:] and grids.shape[0] >= shape[0] and len(buf) >= aux:
                return slot  # type: ignore[return-value]
        if grids is None or grids.shape[1:] != shape[1:] or grids.shape[0] < shape[0]:
            grids = empty_shared(shape)
            _core.zero_fill(grids.numpy(), 1)
        if buf is None or buf.shape[0] < aux:  # with room for larger batches of atoms
            buf = empty_shared((max(aux + aux // 2, 1 << 16),), torch.uint8)
            buf.zero_()
        return grids, buf

    def _unreferenced(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A grid tensor of ``shape`` that nothing else holds: one of the last
        :data:`RECYCLED` made in this process whose batch has been dropped (no tensor,
        view or NumPy array uses its memory any more), else a new one. Only in the main
        process: there the storage's reference count tells; a worker cannot see what the
        main process still holds."""
        if self._pid != os.getpid():
            self._pid, self._ring, self._next = os.getpid(), [], 0
        for slot in self._ring:
            grids = slot[0] if slot else None
            if grids is not None and grids.shape[1:] == shape[1:] and grids.shape[0] >= shape[0]:
                if _only_ours(grids):
                    return _new_view(grids, shape)
        grids = empty_shared(shape)
        if _USE_COUNT is None:
            return grids
        self._ring = [*self._ring[-(RECYCLED - 1) :], (grids, grids)]
        return _new_view(grids, shape)

    def __getstate__(self) -> dict[str, Any]:  # a pickled dataset takes no buffers along
        return {
            "slots": self.slots,
            "_pid": -1,
            "_ring": [],
            "_next": 0,
            "_generation": [],
            "_sent": [],
        }


class _Ticket:
    """Slot ``k`` of a worker's ring as one batch used it: a batch pickles its slot's
    tensors (two shared-memory file descriptors for the main process to fetch) only the
    first time that slot, as made, is sent; later batches name it, and the main process
    takes the tensors it keeps (:func:`_unpack_ring`)."""

    def __init__(self, ring: BatchBuffers, k: int) -> None:
        self.ring = ring
        self.k = k
        self.generation = ring._generation[k]
        self.tensors = ring._ring[k]
        self.key = (os.getpid(), id(ring), k)

    def claim(self) -> bool:
        """Whether this batch must carry the slot's tensors (marks them sent)."""
        sent = self.ring._sent
        if sent[self.k] == self.generation:
            return False
        sent[self.k] = self.generation
        return True


#: How many dropped batch tensors the main process keeps for reuse with ``buffers=0``.
RECYCLED = 4
_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)


def _new_view(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The first ``shape[0]`` entries of ``t`` as a tensor object of their own (so that
    holding it counts as a use of the memory)."""
    return torch.empty(0, dtype=t.dtype).set_(t.untyped_storage(), 0, shape)


def _only_ours(t: torch.Tensor) -> bool:
    """Whether the memory of ``t`` is referenced by ``t`` alone (the ring keeps it twice,
    plus the temporary storage object of this call)."""
    if _USE_COUNT is None:
        return False
    return int(_USE_COUNT(t.untyped_storage()._cdata)) <= 1 + 1


class ItemBatch(Sequence):  # type: ignore[type-arg]
    """What ``StructureDataset.__getitems__`` returns: the items of a batch, fetched
    together by the dataset's collate functions (:meth:`collate`), or one by one
    (``batch[k]`` is ``dataset[indices[k]]``) by any other collate function."""

    def __init__(self, dataset: StructureDataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = [dataset._index(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self.dataset[i] for i in self.indices[k]]
        return self.dataset[self.indices[k]]

    def collate(self, threads: int | None = None) -> dict[str, Any]:
        """The collated batch: fetched as one (:func:`fetch_batch`), or item by item when
        a subclass of the dataset makes its own items (overrides ``__getitem__``) or when
        its items are ones the batched path does not build (:func:`per_item_only`)."""
        from .collate import GridCollate
        from .structure_dataset import StructureDataset

        if (
            per_item_only(self.dataset)
            or type(self.dataset).__getitem__ is not StructureDataset.__getitem__
        ):
            return GridCollate(self.dataset.recipe, threads)(list(self))
        return fetch_batch(self.dataset, self.indices, threads)


def per_item_only(ds: StructureDataset) -> bool:
    """Whether ``ds`` makes items the batched path does not build: receptor + ligand
    complexes, typed channels, crystals in a ``cube:L`` view (their image atoms), an
    energy channel and lattice shifts."""
    from ..core.complexes import ComplexRecipe

    recipe = ds.recipe
    return (
        isinstance(recipe, ComplexRecipe)
        or getattr(recipe, "typer", None) is not None
        or getattr(recipe, "crystal_view", "cell") != "cell"
        or getattr(recipe, "energy", None) is not None
        or ds.augmentation.shift_lattice
    )


def _boxes(ds: StructureDataset, g: Gathered, rotated: np.ndarray) -> tuple[np.ndarray, ...]:
    """(origins (B, 3), axes (B, 3, 3), periodic (B,)) of the batch, bit for bit
    ``recipe.box_for`` of each item (which still builds the unusual ones: crystals, and
    anything it would refuse, so that the error is the same)."""
    recipe = ds.recipe
    b = len(g.offsets) - 1
    counts = np.diff(g.offsets)
    for s in np.flatnonzero(counts == 0):  # no atoms: the error box_for gives
        recipe.box_for(rotated[:0], g.lattices[s] if g.periodic[s] else None)
    starts = g.offsets[:-1]
    lo = np.minimum.reduceat(rotated, starts, axis=0)
    hi = np.maximum.reduceat(rotated, starts, axis=0)
    kind = recipe._box_code  # 0 fit, 1 tight, 2 cube
    pad = recipe.padding
    if kind == 1:
        origins = lo - pad
        lengths = (hi - lo) + 2.0 * pad
        axes = _EYE[np.newaxis] * lengths[:, np.newaxis, :]
        ok = (lengths > 0).all(axis=1)
    else:
        side = (hi - lo).max(axis=1) + 2.0 * pad if kind == 0 else np.full(b, recipe._cube_side)
        origins = (lo + hi) / 2.0 - (side / 2.0)[:, np.newaxis]
        axes = _EYE[np.newaxis] * side[:, np.newaxis, np.newaxis]
        ok = (side >= _SAFE_SIDE[0]) & (side <= _SAFE_SIDE[1])  # as Box._centred_cube
    ok &= np.isfinite(origins).all(axis=1) & np.isfinite(axes).all(axis=(1, 2))
    ok &= ~g.periodic
    for s in np.flatnonzero(~ok):
        a0, a1 = int(g.offsets[s]), int(g.offsets[s + 1])
        box = recipe.box_for(rotated[a0:a1], g.lattices[s] if g.periodic[s] else None)
        origins[s], axes[s] = box.origin, box.axes
    return origins, axes, g.periodic.copy()


def fetch_batch(
    ds: StructureDataset, indices: Sequence[int], threads: int | None = None
) -> dict[str, Any]:
    """The collated batch of ``ds`` items ``indices`` (already in 0..len-1), equal to
    ``collate([ds[i] for i in indices])`` with the grids, in one gather, one augmentation
    draw and one kernel call (``threads``: default the dataset's, else one per worker and
    every core in the main process)."""
    if not len(indices):
        raise ValueError("cannot collate an empty batch")
    idx = np.asarray(indices, dtype=np.int64)
    g = ds.table.gather(idx)
    b = len(idx)
    counts = np.diff(g.offsets)
    rotations, translations = ds.augmentation.draws(idx, ds.epoch, g.periodic)
    pos = g.positions  # rotated in place, with Transform.rotate's element-wise arithmetic
    turned = ~(rotations == _EYE).all(axis=(1, 2)) & (counts > 0)
    if turned.any():
        centres = np.zeros((b, 3))
        centres[counts > 0] = centroids(pos, g.offsets[np.r_[counts > 0, True]])
        atoms = np.repeat(turned, counts)
        n_at = counts[turned]
        pos[atoms] = rotate_points(
            pos[atoms],
            np.repeat(rotations[turned], n_at, axis=0),
            np.repeat(centres[turned], n_at, axis=0),
        )
    origins, axes, periodic = _boxes(ds, g, pos)
    positions = pos + np.repeat(translations, counts, axis=0)
    recipe = ds.recipe
    numbers = g.numbers.astype(np.int64)
    try:
        channels = recipe.spec.assign(numbers)
    except ValueError:  # raise the error of the first item that has no channel
        for s in range(b):
            recipe.spec.assign(numbers[g.offsets[s] : g.offsets[s + 1]])
        raise
    weights = g.weights
    # Everything but the grid and the strings, in item key order (what collate gives).
    arrays: dict[str, Any] = {"positions": positions, "numbers": numbers}
    if weights is not None:
        arrays["weights"] = weights
    arrays.update(
        origin=origins,
        axes=axes,
        periodic=periodic,
        rotation=rotations,
        translation=translations,
        shift=np.zeros((b, 3)),  # lattice shifts (shift_lattice) take the per-item path
        index=idx,
        name=g.names,
        source=g.sources,
        record=np.asarray(g.records, dtype=np.int64),
    )
    if g.targets is not None:
        arrays["target"] = np.asarray(g.targets, dtype=np.float32)
    mask = ds.nan_targets == "mask"
    for values, key in ((g.property_targets, "targets"), (g.atom_targets, "atom_targets")):
        if values is not None:
            arrays.update({k: v.numpy() for k, v in tg.item_targets(values, key, mask).items()})
    arrays["offsets"] = g.offsets.astype(np.int64)
    in_worker = get_worker_info() is not None
    aux = sum(_align(a.nbytes) for a in arrays.values() if isinstance(a, np.ndarray))
    grids, aux_buffer, ticket = ds.buffers.take(
        (b, recipe.n_channels, *recipe.shape), aux * in_worker
    )
    m = len(positions)
    _core.grid_batch(
        _native(positions, np.float64),
        _native(g.offsets, np.int64),
        _native(channels, np.int32),
        np.full(m, recipe.sigma),
        np.ones(m) if weights is None else _native(weights, np.float64),
        _native(origins, np.float64),
        _native(axes, np.float64),
        _native(periodic, np.bool_),
        grids.numpy(),
        _threads(default_threads(ds.threads if threads is None else threads)),
        resolve_isa(None),
    )
    if not in_worker:
        tensors = {k: torch.from_numpy(a) for k, a in arrays.items() if isinstance(a, np.ndarray)}
        return {"grid": grids, **{k: tensors.get(k, a) for k, a in arrays.items()}}
    return PackedBatch.pack(grids, aux_buffer, arrays, ticket)


def _native(a: np.ndarray, dtype: Any) -> np.ndarray:
    """``a`` (C-contiguous, of dtype ``dtype`` already) with NumPy's own instance of that
    dtype, which the native kernel checks by identity: arrays unpickled in a ``spawn``
    worker, and everything computed from them, carry an equal but distinct instance."""
    want = np.dtype(dtype)
    return a if a.dtype is want else np.ascontiguousarray(a).view(want)


def _align(nbytes: int) -> int:
    return -(-nbytes // 8) * 8


class PackedBatch(dict):  # type: ignore[type-arg]
    """A batch made in a DataLoader worker: its small tensors are views of one shared
    uint8 buffer, and it pickles as two tensors (that buffer and the grids) plus the
    layout, so the main process receives two shared-memory handles per batch instead of
    one per tensor (each costs a file-descriptor exchange), and gets a plain dict. From
    a ring (``buffers=k``) the handles go once per slot (see :class:`_Ticket`)."""

    @classmethod
    def pack(
        cls,
        grids: torch.Tensor,
        aux: torch.Tensor,
        arrays: dict[str, Any],
        ticket: _Ticket | None = None,
    ) -> PackedBatch:
        layout: dict[str, tuple[torch.dtype, tuple[int, ...], int]] = {}
        storage = aux.untyped_storage()
        entries: dict[str, Any] = {"grid": grids}
        offset = 0
        for key, a in arrays.items():
            if not isinstance(a, np.ndarray):
                entries[key] = a
                continue
            a = np.ascontiguousarray(a)
            dtype = torch.from_numpy(a[:0].reshape(-1)).dtype
            layout[key] = (dtype, tuple(a.shape), offset // a.itemsize)
            t = entries[key] = _view(storage, *layout[key])
            t.numpy()[...] = a
            offset += _align(a.nbytes)
        batch = cls(entries)
        batch._packed = (grids, aux, layout, ticket)
        return batch

    def __reduce__(self) -> tuple[Any, ...]:
        grids, aux, layout, ticket = self._packed
        rest = {k: v for k, v in self.items() if k not in layout and k != "grid"}
        keys = list(self.keys())
        if ticket is None:
            return (_unpack, (keys, grids, aux, layout, rest))
        tensors = ticket.tensors if ticket.claim() else (None, None)
        args = (keys, ticket.key, ticket.generation, *tensors, len(grids), layout, rest)
        return (_unpack_ring, args)


def _view(storage: Any, dtype: torch.dtype, shape: tuple[int, ...], offset: int) -> torch.Tensor:
    return torch.empty(0, dtype=dtype).set_(storage, offset, shape)


def _unpack(
    keys: list[str], grids: torch.Tensor, aux: torch.Tensor, layout: dict[str, Any], rest: dict
) -> dict[str, Any]:
    """A :class:`PackedBatch` as a plain dict again (run where it is unpickled)."""
    storage = aux.untyped_storage()
    return {
        k: grids if k == "grid" else _view(storage, *layout[k]) if k in layout else rest[k]
        for k in keys
    }


#: The ring slots of DataLoader workers this process has received, by (worker pid, ring,
#: slot): (generation, grids, aux buffer).
_RECEIVED: dict[tuple[int, int, int], tuple[int, torch.Tensor, torch.Tensor]] = {}


def _unpack_ring(
    keys: list[str],
    key: tuple[int, int, int],
    generation: int,
    grids: torch.Tensor | None,
    aux: torch.Tensor | None,
    b: int,
    layout: dict[str, Any],
    rest: dict,
) -> dict[str, Any]:
    """A :class:`PackedBatch` from a worker's ring as a plain dict again: with the slot's
    tensors when they come (kept for the next batches of that slot), else those kept."""
    if grids is not None and aux is not None:
        if all(k[0] != key[0] for k in _RECEIVED):  # a new worker: forget the exited ones
            for old in [k for k in _RECEIVED if not _alive(k[0])]:
                del _RECEIVED[old]
        _RECEIVED[key] = (generation, grids, aux)
    kept = _RECEIVED.get(key)
    if kept is None or kept[0] != generation:
        raise RuntimeError(f"a DataLoader worker's batch buffer {key} never arrived")
    return _unpack(keys, kept[1][:b], kept[2], layout, rest)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
