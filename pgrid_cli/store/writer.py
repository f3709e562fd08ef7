"""Writing a shard (docs/format.md §6): :class:`ShardWriter`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..core.box import Box
from ..readers.records import Rejection
from .checksums import chunk_checksums, crc32, write_checksums
from .codec import EncodedChunk, GridCodec, float16_cast_error
from .files import storage_error, temp_name
from .layout import CAPTURED, LATTICE, PARTIAL_SUFFIX, REJECTED, STR_DTYPE, STRUCTURES, ShardMeta
from .properties import ID, write_properties


class ShardWriter:
    """Append structures to a new shard; it appears at ``path`` only after :meth:`close`.

    Use as a context manager. Writing goes to a temporary file of its own
    (``<name>.<pid>-<random>.partial``, created exclusively); a clean exit renames it
    into place, an exception deletes it, so a file under the final name is always
    complete. :meth:`close` also stores the checksums of everything written
    (:mod:`pgrid_cli.store.checksums`), each structure's ``captured`` fraction and the
    true ``max_rounding_error`` of what was stored.

    Parameters
    ----------
    path : path of the final shard file
    meta : file attributes
    dtype : ``float32`` or ``float16`` storage of the grids (a codec's dtype wins)
    compression : ``gzip`` | ``lzf`` | ``none`` or a dict of h5py dataset keywords (h5py
        compresses, values stored unchanged), or a :class:`~pgrid_cli.codec.GridCodec`
        (values rounded as it says; its chunks can be encoded elsewhere and appended with
        ``encoded=True``). The codec's settings are stored as file attributes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: ShardMeta,
        *,
        dtype: str = "float32",
        compression: str | dict[str, Any] | GridCodec = "gzip",
    ) -> None:
        self.codec = compression if isinstance(compression, GridCodec) else None
        if self.codec is not None:
            dtype = self.codec.dtype
        if dtype not in ("float32", "float16"):
            raise ValueError(f"grid dtype must be float32 or float16, got {dtype!r}")
        self.path = Path(path)
        self.partial = temp_name(self.path, PARTIAL_SUFFIX)
        self.meta = meta
        self._dtype = np.dtype(dtype)
        if self.codec is not None:
            self._filters = self.codec.h5_options()
        elif isinstance(compression, dict):
            self._filters = compression
        else:
            self._filters = GridCodec.parse(compression, dtype, lossless=True).h5_options()
        self._n = 0
        # Everything but the grids is small: kept here and written once by close(), which
        # is much cheaper than growing ten datasets on every append.
        self._boxes: list[Box] = []
        self._numbers: list[np.ndarray] = []
        self._positions: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self._names: list[str] = []
        self._sources: list[str] = []
        self._records: list[int] = []
        self._rejected: list[str] = []
        self._crcs: list[int | None] = []  # of encoded chunks (the others: read back)
        self._captured: list[float] = []
        self._ids: list[int] = []  # format version 2: ids, properties, atom properties
        self._props: list[dict[str, Any]] = []
        self._atom_props: list[dict[str, Any]] = []
        self._lattices: list[np.ndarray] = []  # structures shards: the cells
        self.structures_only = meta.content == STRUCTURES
        self._bound = 0.0  # largest |stored - given| bound of the grids so far
        try:
            self._file: h5py.File | None = h5py.File(self.partial, "x")  # exclusive
        except OSError as exc:
            raise storage_error(exc, self.path, "cannot create the shard") from None
        try:
            for k, v in meta.attrs().items():
                self._file.attrs[k] = v
            if self.codec is not None:
                for k, v in self.codec.attrs().items():
                    self._file.attrs[k] = v
            self._create()
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise storage_error(exc, self.path, "cannot write the shard") from None
            raise

    def _create(self) -> None:
        f = self._file
        assert f is not None
        if self.structures_only:
            return  # no grids: everything is written by close()
        c = len(self.meta.channels)
        gshape = (c, *self.meta.grid_shape)
        self._grids = f.create_dataset(
            "grids",
            shape=(0, *gshape),
            maxshape=(None, *gshape),
            dtype=self._dtype,
            chunks=(1, *gshape),
            **self._filters,
        )
        self._chunk_zeros = (0,) * len(gshape)  # a chunk's offset after its structure index

    def __len__(self) -> int:
        return self._n

    def append(
        self,
        grids: np.ndarray | Sequence[tuple[bytes, int]],
        boxes: Sequence[Box],
        numbers: Sequence[np.ndarray],
        positions: Sequence[np.ndarray],
        names: Sequence[str],
        sources: Sequence[str],
        records: Sequence[int],
        weights: Sequence[np.ndarray | None] | None = None,
        *,
        encoded: bool = False,
        rounded: bool = False,
        captured: Sequence[float] | None = None,
        ids: Sequence[int] | None = None,
        properties: Sequence[dict[str, Any]] | None = None,
        atom_properties: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Append k structures: grids (k, C, nx, ny, nz) and per-structure metadata.

        ``weights[s]`` is (M_s,) per-atom weights (default 1). With a codec, the grids are
        rounded (on a copy) as it says before they are stored, unless ``rounded`` says
        they already were (by this codec). With ``encoded``, ``grids``
        are k ``(bytes, filter_mask)`` chunks from :meth:`GridCodec.encode` of this
        writer's codec (gzip or none), written as they are. ``captured[s]`` is Σ grid ÷
        Σ weights of the kernel's grid (before rounding); by default it is computed
        from the grids given. ``ids[s]`` is the structure's id in its run,
        ``properties[s]`` its properties and ``atom_properties[s]`` its per-atom arrays
        (:mod:`pgrid_cli.store.properties`); any of them makes a format version 2 shard.
        """
        self._require_open()
        if self.structures_only:
            raise ValueError("a structures shard holds no grids: use append_structures()")
        k = len(grids)
        if not (len(boxes) == len(numbers) == len(positions) == len(names) == k):
            raise ValueError("append() needs one box, atom list and name per grid")
        if len(sources) != k or len(records) != k:
            raise ValueError("append() needs one source and record index per grid")
        if weights is not None and len(weights) != k:
            raise ValueError("append() needs one weight array (or None) per grid")
        if encoded and (self.codec is None or not self.codec.encodes_chunks):
            raise ValueError("encoded chunks need a writer made with a gzip/none GridCodec")
        if captured is not None and len(captured) != k:
            raise ValueError("append() needs one captured fraction per grid")
        g = self._grids  # (looking it up by name, per call, costs more than writing a chunk)
        totals: list[float] = []
        try:
            g.resize(self._n + k, axis=0)
            for i in range(k):  # one chunk per structure
                totals.append(self._put(g, self._n + i, grids[i], encoded, rounded, captured))
        except OSError as exc:
            raise storage_error(exc, self.path, "cannot write the shard") from None
        self._atoms(
            numbers,
            positions,
            weights,
            names,
            sources,
            records,
            captured,
            totals,
            ids,
            properties,
            atom_properties,
        )
        for i in range(k):
            self._boxes.append(boxes[i])
        self._n += k

    def append_structures(
        self,
        numbers: Sequence[np.ndarray],
        positions: Sequence[np.ndarray],
        lattices: Sequence[np.ndarray | None],
        names: Sequence[str],
        sources: Sequence[str],
        records: Sequence[int],
        weights: Sequence[np.ndarray | None] | None = None,
        *,
        ids: Sequence[int] | None = None,
        properties: Sequence[dict[str, Any]] | None = None,
        atom_properties: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Append k structures to a structures shard (``ShardMeta.structures()``): atoms,
        cell (``lattices[s]`` (3, 3) Å, rows a, b, c; None for a molecule), provenance, and
        (as in :meth:`append`) ids and properties."""
        self._require_open()
        if not self.structures_only:
            raise ValueError("append_structures() is for a shard made with ShardMeta.structures()")
        k = len(numbers)
        if not (len(positions) == len(lattices) == len(names) == len(sources) == len(records) == k):
            raise ValueError("append_structures() needs one entry of each per structure")
        if weights is not None and len(weights) != k:
            raise ValueError("append_structures() needs one weight array (or None) per structure")
        self._atoms(
            numbers,
            positions,
            weights,
            names,
            sources,
            records,
            None,
            None,
            ids,
            properties,
            atom_properties,
        )
        for cell in lattices:
            self._lattices.append(
                np.zeros((3, 3)) if cell is None else np.asarray(cell, np.float64).reshape(3, 3)
            )
        self._n += k

    def _atoms(
        self,
        numbers: Sequence[np.ndarray],
        positions: Sequence[np.ndarray],
        weights: Sequence[np.ndarray | None] | None,
        names: Sequence[str],
        sources: Sequence[str],
        records: Sequence[int],
        captured: Sequence[float] | None,
        totals: list[float] | None,
        ids: Sequence[int] | None = None,
        properties: Sequence[dict[str, Any]] | None = None,
        atom_properties: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Keep the atoms and provenance of k structures (with grids, ``captured``), and
        their ids and properties."""
        for i in range(len(numbers)):
            z = np.asarray(numbers[i]).reshape(-1)
            self._numbers.append(z.astype(np.int16))
            self._positions.append(np.asarray(positions[i], dtype=np.float64).reshape(-1, 3))
            w = None if weights is None else weights[i]
            self._weights.append(
                np.ones(len(z)) if w is None else np.asarray(w, dtype=np.float64).reshape(-1)
            )
            if captured is not None:
                self._captured.append(float(captured[i]))
            elif totals is not None:
                mass = float(self._weights[-1].sum())
                self._captured.append(totals[i] / mass if mass > 0 else float("nan"))
            self._names.append(str(names[i]))
            self._sources.append(str(sources[i]))
            self._records.append(int(records[i]))
            if ids is not None:
                self._ids.append(int(ids[i]))
            self._props.append(dict(properties[i]) if properties is not None else {})
            self._atom_props.append(dict(atom_properties[i]) if atom_properties is not None else {})

    def _put(
        self,
        g: h5py.Dataset,
        index: int,
        grid: Any,
        encoded: bool,
        rounded: bool,
        captured: Sequence[float] | None,
    ) -> float:
        """Store one structure's grid; returns its sum (0 when ``captured`` is given)."""
        codec = self.codec
        need_total = captured is None
        if encoded:
            assert codec is not None
            data, mask = grid
            g.id.write_direct_chunk((index, *self._chunk_zeros), data, mask)
            if isinstance(grid, EncodedChunk):
                self._crcs.append(grid.crc)
                peak, total = grid.peak, grid.total
            else:  # plain (bytes, mask): what it holds is only known by decoding it
                self._crcs.append(crc32(data))
                values = None
                if need_total or self._dtype == np.float16:
                    values = codec.decode(data, mask, g.shape[1:]).astype(np.float32)
                peak = float(values.max()) if values is not None and values.size else 0.0
                total = float(values.sum()) if values is not None and values.size else 0.0
            self._bound = max(self._bound, codec.error_bound(peak))
            return total
        arr = np.asarray(grid)
        total = float(arr.sum(dtype=np.float64)) if need_total and arr.size else 0.0
        if codec is not None and codec.step and not rounded:
            arr = codec.round(np.array(arr, dtype=np.float32))
        peak = float(arr.max()) if arr.size else 0.0
        if codec is not None:
            self._bound = max(self._bound, codec.error_bound(peak))
        elif self._dtype == np.float16:
            self._bound = max(self._bound, float16_cast_error(peak))
        g[index] = np.asarray(arr, dtype=self._dtype)
        self._crcs.append(None)  # h5py filters it: read back when the shard is closed
        return total

    def add_rejections(self, rejections: Sequence[Rejection]) -> None:
        """Keep the rejected input records of this shard's range (in input order)."""
        self._require_open()
        self._rejected.extend(json.dumps(r.to_json(), sort_keys=True) for r in rejections)

    @property
    def n_rejected(self) -> int:
        return len(self._rejected)

    def _require_open(self) -> h5py.File:
        if self._file is None:
            raise ValueError("shard writer is closed")
        return self._file

    def close(self, attrs: dict[str, Any] | None = None) -> Path:
        """Finish the file (adding ``attrs``) and move it to its final name; returns it."""
        if self._file is not None:
            try:
                self._finish(attrs or {})
                os.replace(self.partial, self.path)
            except BaseException as exc:
                self.abort()
                if isinstance(exc, OSError):
                    raise storage_error(exc, self.path, "cannot write the shard") from None
                raise
        return self.path

    def _finish(self, attrs: dict[str, Any]) -> None:
        """Write everything but the grids, the checksums and the counts; close the file."""
        if self._file is not None:
            f = self._file
            n = self._n
            boxes = self._boxes
            counts = np.array([len(z) for z in self._numbers], dtype=np.int64)
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])

            def stack(parts: list[np.ndarray], tail: tuple[int, ...], dtype: Any) -> np.ndarray:
                return np.concatenate(parts).astype(dtype) if parts else np.zeros((0, *tail), dtype)

            if self.structures_only:
                cells = np.array(self._lattices, dtype=np.float64).reshape(n, 3, 3)
                f.create_dataset(LATTICE, data=cells)
                f.create_dataset("periodic", data=np.any(cells != 0, axis=(1, 2)))
            else:
                f.create_dataset("origin", data=np.array([b.origin for b in boxes]).reshape(n, 3))
                f.create_dataset("axes", data=np.array([b.axes for b in boxes]).reshape(n, 3, 3))
                f.create_dataset("periodic", data=np.array([b.periodic for b in boxes], dtype=bool))
            f.create_dataset("atom_offset", data=offsets)
            f.create_dataset("atomic_numbers", data=stack(self._numbers, (), np.int16))
            f.create_dataset("positions", data=stack(self._positions, (3,), np.float64))
            f.create_dataset("weights", data=stack(self._weights, (), np.float64))
            f.create_dataset("name", data=np.array(self._names, dtype=object), dtype=STR_DTYPE)
            f.create_dataset("source", data=np.array(self._sources, dtype=object), dtype=STR_DTYPE)
            f.create_dataset("record", data=np.array(self._records, dtype=np.int64))
            rejected = np.array(self._rejected, dtype=STR_DTYPE)
            f.create_dataset(REJECTED, data=rejected, dtype=STR_DTYPE)
            if not self.structures_only:
                f.create_dataset(CAPTURED, data=np.array(self._captured, dtype=np.float64))
            v2 = write_properties(f, self._props, self._atom_props, counts.tolist())
            if self._ids and len(self._ids) == n:
                f.create_dataset(ID, data=np.array(self._ids, dtype=np.int64))
                v2.append(ID)
            if v2:
                f.attrs["format_version"] = 2
            f.flush()  # chunks h5py compressed itself are read back for their checksums
            crcs: list[int | None] | None = None
            if not self.structures_only:
                crcs = self._crcs
                if any(c is None for c in crcs):
                    stored = chunk_checksums(f["grids"], n)
                    crcs = [s if c is None else c for c, s in zip(crcs, stored, strict=True)]
            datasets = [d for d in f if isinstance(f[d], h5py.Dataset) and d != "grids"]
            datasets += [d for d in v2 if d != ID]
            write_checksums(f, crcs, sorted(datasets))  # type: ignore[arg-type]
            if self.codec is not None and self._dtype == np.float32:
                self._bound = self.codec.max_rounding_error
            if not self.structures_only:
                f.attrs["max_rounding_error"] = float(self._bound)
            f.attrs["n_structures"] = self._n
            f.attrs["n_rejected"] = len(self._rejected)
            for k, v in attrs.items():
                f.attrs[k] = v
            f.close()
            self._file = None

    def abort(self) -> None:
        """Drop the partial file (whatever state it is in: e.g. on a full disk)."""
        if self._file is not None:
            f, self._file = self._file, None
            try:
                f.close()
            except (OSError, RuntimeError, ValueError):
                pass  # the file is deleted next: what closing it failed to write is moot
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
