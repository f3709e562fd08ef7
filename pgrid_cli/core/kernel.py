"""The kernel's API: atoms → density grids (docs/format.md, "Density"), and gradients.

Every function here fills float32, C-contiguous arrays laid out (C, nx, ny, nz) for one
structure and (B, C, nx, ny, nz) for a batch (index [c, i, j, k], i along the box's first
axis, k fastest). Values are voxel integrals of normalised Gaussians, so a grid sums to
the (weighted) number of atoms it holds.

The work runs in the native kernel (:mod:`pgrid_cli._core`), without the GIL, on
``threads`` threads (default: every core), on the best instruction set of the CPU unless
``isa`` or the ``PGRID_ISA`` environment variable asks for ``scalar``, ``avx2`` or
``avx512``.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _core
from .box import Box

ISA_NAMES = ("scalar", "avx2", "avx512")
#: Default cap on the bytes of a grid the API allocates (overridable with
#: PGRID_MAX_GRID_BYTES or :func:`set_memory_limit`).
DEFAULT_MEMORY_LIMIT = 4 << 30

_memory_limit: int | None = None

# os.environ.get encodes the key and decodes the value on every call (~1 µs, as much as
# gridding a small molecule); on POSIX its bytes-keyed dict answers the same lookup
# directly. os.environ[...] = / del and monkeypatch.setenv keep that dict current.
_ENVIRON_BYTES = getattr(os.environ, "_data", None) if os.name == "posix" else None


def _getenv(name: str, key: bytes) -> str | None:
    """``os.environ.get(name)``, fast (``key`` is ``name`` encoded)."""
    if _ENVIRON_BYTES is None:
        return os.environ.get(name)
    value = _ENVIRON_BYTES.get(key)
    return None if value is None else os.fsdecode(value)


def get_memory_limit() -> int:
    """Largest output (bytes) :func:`grid` and friends will allocate."""
    if _memory_limit is not None:
        return _memory_limit
    env = _getenv("PGRID_MAX_GRID_BYTES", b"PGRID_MAX_GRID_BYTES")
    if env:
        try:
            value = float(env)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 1):
            raise ValueError(
                f"PGRID_MAX_GRID_BYTES must be a positive number of bytes, got {env!r}"
            )
        return int(value)
    return DEFAULT_MEMORY_LIMIT


def set_memory_limit(nbytes: int | None) -> None:
    """Set the allocation cap in bytes (``None`` restores the default / environment)."""
    global _memory_limit
    if nbytes is not None and nbytes <= 0:
        raise ValueError("the memory limit must be a positive number of bytes")
    _memory_limit = None if nbytes is None else int(nbytes)


def check_sigma(sigma: Any, what: str = "sigma") -> float:
    """σ as a float: a positive, finite width in Å (the one σ check of the package)."""
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of Å, got {sigma!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a positive width in Å, got {sigma!r}")
    return value


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def available_isas() -> list[str]:
    """Instruction-set paths this CPU can run, best last (``['scalar', 'avx2', 'avx512']``)."""
    return list(_core.supported_isas())


#: resolve_isa's answers, keyed by (isa, $PGRID_ISA, available_isas): every call asks,
#: so the answer is looked up rather than recomputed (only successes are kept).
_isa_cache: dict[tuple[Any, ...], str] = {}


def resolve_isa(isa: str | None = None) -> str:
    """The path a call will use: ``isa``, else ``$PGRID_ISA``, else the best available.

    Raises ValueError for an unknown name or one this CPU cannot run.
    """
    key = (isa, _getenv("PGRID_ISA", b"PGRID_ISA") if isa is None else None, available_isas)
    hit = _isa_cache.get(key)
    if hit is not None:
        return hit
    name = _resolve_isa(isa)
    if len(_isa_cache) < 64:
        _isa_cache[key] = name
    return name


def _resolve_isa(isa: str | None) -> str:
    source = "isa"
    if isa is None:
        isa = os.environ.get("PGRID_ISA") or None
        source = "PGRID_ISA"
    if isa is None:
        return str(_core.best_isa())
    name = isa.strip().lower()
    if name not in ISA_NAMES:
        raise ValueError(
            f"{source}={isa!r} is not an instruction set: use one of {', '.join(ISA_NAMES)}"
        )
    supported = available_isas()
    if name not in supported:
        raise ValueError(
            f"{source}={name} asks for an instruction set this CPU does not support "
            f"(supported: {', '.join(supported)})"
        )
    return name


def kernel_info() -> dict[str, Any]:
    """The kernel in use: ISA path chosen and available, threads, compiler, build flags."""
    info = dict(_core.build_info())
    info.update(
        isa=resolve_isa(),
        best_isa=str(_core.best_isa()),
        available_isas=available_isas(),
        hardware_threads=int(_core.hardware_threads()),
    )
    return info


# ---------------------------------------------------------------------- batches
@dataclass(frozen=True)
class Batch:
    """Many structures in the flat layout the kernel reads (and shards store).

    Structure ``s`` owns atoms ``offsets[s]:offsets[s+1]``. Build one with
    :meth:`from_structures`.

    Attributes
    ----------
    positions : (M, 3) float64, Å
    offsets : (B+1,) int64
    channels : (M,) int32, channel of each atom
    sigmas : (M,) float64, Å (Gaussian standard deviation)
    weights : (M,) float64
    origins : (B, 3) float64, Å
    axes : (B, 3, 3) float64, Å (rows are box edge vectors)
    periodic : (B,) bool
    shape : (nx, ny, nz), shared by every structure
    n_channels : int
    """

    positions: np.ndarray
    offsets: np.ndarray
    channels: np.ndarray
    sigmas: np.ndarray
    weights: np.ndarray
    origins: np.ndarray
    axes: np.ndarray
    periodic: np.ndarray
    shape: tuple[int, int, int]
    n_channels: int

    @property
    def n_structures(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_atoms(self) -> int:
        return len(self.positions)

    @property
    def grid_shape(self) -> tuple[int, int, int, int, int]:
        """(B, C, nx, ny, nz) of the batch's grids."""
        return (self.n_structures, self.n_channels, *self.shape)

    def kernel_arrays(self) -> tuple[np.ndarray, ...]:
        """The atom and box arrays in the order the native kernel takes them."""
        return (
            self.positions,
            self.offsets,
            self.channels,
            self.sigmas,
            self.weights,
            self.origins,
            self.axes,
            self.periodic,
        )

    def box(self, s: int) -> Box:
        """The :class:`Box` of structure ``s``."""
        return Box(self.origins[s], self.axes[s], self.shape, bool(self.periodic[s]))

    @classmethod
    def from_flat(
        cls,
        positions: Any,
        offsets: Any,
        channels: Any,
        sigma: float | Any,
        weights: Any,
        origins: Any,
        axes: Any,
        periodic: Any,
        shape: Sequence[int],
        n_channels: int,
    ) -> Batch:
        """A batch from arrays already in the flat (CSR) layout (see the attributes);
        ``sigma`` a float or (M,), ``weights`` (M,) or None for all ones."""
        m = len(positions)
        sig = np.asarray(sigma, dtype=np.float64)
        return cls(
            positions=np.ascontiguousarray(positions, dtype=np.float64).reshape(m, 3),
            offsets=np.ascontiguousarray(offsets, dtype=np.int64),
            channels=np.ascontiguousarray(channels, dtype=np.int32),
            sigmas=np.full(m, float(sig)) if sig.ndim == 0 else np.ascontiguousarray(sig),
            weights=np.ones(m) if weights is None else np.ascontiguousarray(weights, np.float64),
            origins=np.ascontiguousarray(origins, dtype=np.float64).reshape(-1, 3),
            axes=np.ascontiguousarray(axes, dtype=np.float64).reshape(-1, 3, 3),
            periodic=np.ascontiguousarray(periodic, dtype=bool).reshape(-1),
            shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
            n_channels=int(n_channels),
        )

    @classmethod
    def from_structures(
        cls,
        positions: Sequence[Any],
        boxes: Sequence[Box],
        sigma: float | Sequence[Any] = 0.5,
        *,
        channels: Sequence[Any] | None = None,
        n_channels: int | None = None,
        weights: Sequence[Any] | None = None,
    ) -> Batch:
        """Concatenate per-structure arrays.

        ``positions[s]`` is (M_s, 3) Å; ``boxes[s]`` its :class:`Box` (all of one shape);
        ``sigma`` a width in Å for every atom or one (M_s,) array / float per structure;
        ``channels[s]`` (M_s,) ints (default: all in channel 0); ``weights[s]`` (M_s,).
        """
        n = len(positions)
        if len(boxes) != n:
            raise ValueError(f"got {n} structures but {len(boxes)} boxes")
        if n == 0:
            raise ValueError("a batch needs at least one structure")
        for s, b in enumerate(boxes):
            if not isinstance(b, Box):
                raise TypeError(f"boxes[{s}] is {type(b).__name__}, not a pgrid_cli.Box")
        shape = boxes[0].shape
        for s, b in enumerate(boxes):
            if b.shape != shape:
                raise ValueError(
                    f"every box of a batch needs one grid shape: boxes[0] is {shape}, "
                    f"boxes[{s}] is {b.shape}"
                )
        pos = [_positions(p, s) for s, p in enumerate(positions)]
        counts = np.array([len(p) for p in pos], dtype=np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        chans = _per_atom(channels, counts, "channels", np.int32, 0)
        if n_channels is None:
            n_channels = int(chans.max()) + 1 if len(chans) else 1
        return cls(
            positions=np.concatenate(pos) if offsets[-1] else np.zeros((0, 3)),
            offsets=offsets,
            channels=chans,
            sigmas=_per_atom(sigma, counts, "sigma", np.float64, None),
            weights=_per_atom(weights, counts, "weights", np.float64, 1.0),
            origins=np.stack([b.origin for b in boxes]),
            axes=np.stack([b.axes for b in boxes]),
            periodic=np.array([b.periodic for b in boxes], dtype=bool),
            shape=shape,
            n_channels=int(n_channels),
        )


def _positions(p: Any, s: int | None = None) -> np.ndarray:
    arr = np.ascontiguousarray(p, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        where = "" if s is None else f" of structure {s}"
        raise ValueError(f"positions{where} must have shape (M, 3), got {arr.shape}")
    return arr


def _per_atom(values: Any, counts: np.ndarray, name: str, dtype: Any, default: Any) -> np.ndarray:
    """Flatten a per-structure option: scalar, one array per structure, or None."""
    total = int(counts.sum())
    if values is None:
        if default is None:
            raise ValueError(f"{name} is required")
        return np.full(total, default, dtype=dtype)
    if np.isscalar(values):
        _check_whole(np.asarray(values), name, dtype)
        return np.full(total, values, dtype=dtype)
    if len(values) != len(counts):
        raise ValueError(f"{name} has {len(values)} entries for {len(counts)} structures")
    parts = []
    for s, (v, m) in enumerate(zip(values, counts, strict=False)):
        raw = np.asarray(v)
        _check_whole(raw, f"{name}[{s}]", dtype)
        arr = raw.astype(dtype)
        if arr.ndim == 0:
            arr = np.full(int(m), arr, dtype=dtype)
        if arr.shape != (int(m),):
            raise ValueError(f"{name}[{s}] must have shape ({int(m)},), got {arr.shape}")
        parts.append(arr)
    return np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros(0, dtype), dtype=dtype)


def _check_whole(values: np.ndarray, name: str, dtype: Any) -> None:
    """Integer options (channel indices) must not be truncated silently from floats."""
    if np.dtype(dtype).kind != "i" or values.dtype.kind in "iu":
        return
    whole = np.isfinite(values) & (values == np.round(values)) if values.dtype.kind == "f" else None
    if whole is None or not bool(np.all(whole)):
        raise ValueError(f"{name} must hold whole numbers, got {values.dtype} values")


def _require_box(box: Any) -> None:
    if not isinstance(box, Box):
        raise TypeError(f"box must be a pgrid_cli.Box, got {type(box).__name__}")


def check_memory(shape: tuple[int, ...], what: str = "a grid") -> None:
    """Raise ValueError when float32 ``shape`` is larger than the memory cap
    (:func:`get_memory_limit`); every path that allocates grids checks this first."""
    nbytes = math.prod(map(int, shape)) * 4
    limit = get_memory_limit()
    if nbytes > limit:
        raise ValueError(
            f"{what} of shape {shape} needs {nbytes / 2**30:.2f} GiB, more than the "
            f"{limit / 2**30:.2f} GiB limit (raise it with pgrid_cli.set_memory_limit() "
            f"or PGRID_MAX_GRID_BYTES)"
        )


def _check_out(out: Any, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise ValueError(f"out must be a numpy array, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    if out.dtype != np.float32 or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writeable, C-contiguous float32 array")
    return out


#: Most kernel threads one call may ask for (the native core's limit).
MAX_THREADS = int(_core.MAX_THREADS)


def _threads(threads: int | None) -> int:
    if threads is None:
        return 0
    try:
        n = operator.index(threads)
    except TypeError:
        raise ValueError(f"threads must be a whole number, got {threads!r}") from None
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"threads must be between 1 and {MAX_THREADS}, got {threads}")
    return n


def render_batch(
    batch: Batch,
    out: np.ndarray | None = None,
    *,
    threads: int | None = None,
    isa: str | None = None,
) -> np.ndarray:
    """Grids of every structure of a :class:`Batch`: (B, C, nx, ny, nz) float32."""
    shape = batch.grid_shape
    if out is None:
        check_memory(shape)
        out = np.empty(shape, dtype=np.float32)
    else:
        _check_out(out, shape)
    _core.grid_batch(*batch.kernel_arrays(), out, _threads(threads), resolve_isa(isa))
    return out


def gradient_batch(
    batch: Batch, dgrid: Any, *, threads: int | None = None, isa: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of ``L = sum(dgrid * grids)``: ((M, 3) dL/dpositions, (M,) dL/dweights)."""
    g = np.ascontiguousarray(dgrid, dtype=np.float32)
    if g.shape != batch.grid_shape:
        raise ValueError(f"dgrid has shape {g.shape}, expected {batch.grid_shape}")
    dpos, dw = _core.grid_gradient_batch(
        *batch.kernel_arrays(),
        g,
        threads=_threads(threads),
        isa=resolve_isa(isa),
    )
    return dpos, dw


# ---------------------------------------------------------------------- friendly forms
def grid(
    positions: Any,
    box: Box,
    sigma: float | Any = 0.5,
    *,
    channels: Any = None,
    n_channels: int | None = None,
    weights: Any = None,
    out: np.ndarray | None = None,
    threads: int | None = None,
    isa: str | None = None,
) -> np.ndarray:
    """Density grid of one structure.

    Parameters
    ----------
    positions : (M, 3) array_like, Å
    box : Box
        Where the grid sits; periodic boxes sum over lattice images.
    sigma : float or (M,) array_like, Å
        Gaussian standard deviation of every atom (or of each).
    channels : (M,) array_like of int, optional
        Channel of each atom (default: all in channel 0).
    n_channels : int, optional
        Number of channels C (default: ``max(channels) + 1``).
    weights : (M,) array_like, optional
        Weight of each atom (default 1): the grid sums to the weights it holds.
    out : (C, nx, ny, nz) float32 array, optional
        Written in place instead of allocating.

    Returns
    -------
    (C, nx, ny, nz) float32 array.
    """
    _require_box(box)
    positions = _positions(positions)
    fast = isinstance(sigma, float) and weights is None
    m = len(positions)
    if fast and channels is not None:
        # Integer channels of the right shape (anything else: the general path's errors).
        chans = np.asarray(channels)
        fast = chans.dtype.kind in "iu" and chans.shape == (m,)
    if fast:
        # The common forms, without Batch.from_structures' per-structure machinery.
        chan_arr = None if channels is None else chans.astype(np.int32)
        if n_channels is None:
            n_channels = int(chan_arr.max()) + 1 if m and channels is not None else 1
        c_shape = (int(n_channels), *box.shape)
        if out is None:
            check_memory(c_shape)
            target = np.empty(c_shape, dtype=np.float32)
        else:
            target = _check_out(out, c_shape)
        _core.grid_one(  # positional: pybind11 matches keywords slowly
            positions,
            chan_arr,
            sigma,
            box.origin,
            box.axes,
            box.periodic,
            target,
            _threads(threads),
            resolve_isa(isa),
        )
        return target
    batch = Batch.from_structures(
        [positions],
        [box],
        sigma if np.isscalar(sigma) else [sigma],
        channels=None if channels is None else [channels],
        n_channels=n_channels,
        weights=None if weights is None else [weights],
    )
    if out is not None:
        _check_out(out, batch.grid_shape[1:])
        render_batch(batch, out[np.newaxis], threads=threads, isa=isa)
        return out
    return render_batch(batch, threads=threads, isa=isa)[0]


def grid_batch(
    positions: Sequence[Any],
    boxes: Sequence[Box],
    sigma: float | Sequence[Any] = 0.5,
    *,
    channels: Sequence[Any] | None = None,
    n_channels: int | None = None,
    weights: Sequence[Any] | None = None,
    out: np.ndarray | None = None,
    threads: int | None = None,
    isa: str | None = None,
) -> np.ndarray:
    """Density grids of many structures into one (B, C, nx, ny, nz) float32 array.

    Arguments are per-structure sequences as in :meth:`Batch.from_structures`; the
    work is spread over ``threads`` threads, one structure at a time, and the result is
    identical for every thread count.
    """
    batch = Batch.from_structures(
        positions, boxes, sigma, channels=channels, n_channels=n_channels, weights=weights
    )
    return render_batch(batch, out, threads=threads, isa=isa)


def grid_gradient(
    positions: Any,
    box: Box,
    sigma: float | Any,
    dgrid: Any,
    *,
    channels: Any = None,
    weights: Any = None,
    threads: int | None = None,
    isa: str | None = None,
    return_weights: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Gradient of ``L = sum(dgrid * grid(positions, ...))`` with respect to positions.

    ``dgrid`` has the grid's (C, nx, ny, nz) shape. Returns (M, 3) float64 in Å⁻¹ units
    of L; with ``return_weights`` also dL/dweights (M,).
    """
    _require_box(box)
    g = np.asarray(dgrid)
    if g.ndim != 4:
        raise ValueError(f"dgrid must have shape (C, nx, ny, nz), got {g.shape}")
    batch = Batch.from_structures(
        [positions],
        [box],
        sigma if np.isscalar(sigma) else [sigma],
        channels=None if channels is None else [channels],
        n_channels=g.shape[0],
        weights=None if weights is None else [weights],
    )
    dpos, dw = gradient_batch(batch, g[np.newaxis], threads=threads, isa=isa)
    return (dpos, dw) if return_weights else dpos
