"""A differentiable grid: positions (and weights) → density grid, with autograd.

The forward pass is the native kernel; the backward pass is its analytic gradient
(:func:`pgrid_cli.gradient_batch`), which gives dL/dpositions and dL/dweights for the
incoming dL/dgrid. Boxes, σ and channels are constants: a box computed from the positions
(``fit``, ``tight``, ``cube:L``) is held fixed in the backward pass.

The kernel runs on the CPU; tensors on another device are moved to the CPU and the results
moved back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Protocol

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ..core.box import Box
from ..core.kernel import Batch, gradient_batch, render_batch
from ..core.recipe import GridRecipe

BoxesLike = Box | Sequence[Box] | Mapping[str, Any]


class Engine(Protocol):
    """What computes grids and their gradients for :func:`grid_tensor`."""

    def render(self, batch: Batch, threads: int | None) -> np.ndarray:
        """(B, C, nx, ny, nz) grids of ``batch``."""
        ...

    def gradient(
        self, batch: Batch, dgrid: np.ndarray, threads: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(dL/dpositions (M, 3), dL/dweights (M,)) for L = sum(dgrid * grids)."""
        ...


class KernelEngine:
    """The native float32 kernel (the default engine)."""

    def render(self, batch: Batch, threads: int | None) -> np.ndarray:
        return render_batch(batch, threads=threads)

    def gradient(
        self, batch: Batch, dgrid: np.ndarray, threads: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return gradient_batch(batch, dgrid, threads=threads)


@dataclass(frozen=True)
class _Frame:
    """Everything but the positions and weights: the constants of the function."""

    offsets: np.ndarray
    channels: np.ndarray
    sigmas: np.ndarray
    origins: np.ndarray
    axes: np.ndarray
    periodic: np.ndarray
    shape: tuple[int, int, int]
    n_channels: int

    def batch(self, positions: torch.Tensor, weights: torch.Tensor | None) -> Batch:
        return Batch.from_flat(
            _numpy(positions, np.float64),
            self.offsets,
            self.channels,
            self.sigmas,
            None if weights is None else _numpy(weights, np.float64),
            self.origins,
            self.axes,
            self.periodic,
            self.shape,
            self.n_channels,
        )


class _GridFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        positions: torch.Tensor,
        weights: torch.Tensor | None,
        frame: _Frame,
        engine: Engine,
        threads: int | None,
    ) -> torch.Tensor:
        batch = frame.batch(positions, weights)
        out = torch.from_numpy(engine.render(batch, threads))
        ctx.batch, ctx.engine, ctx.threads = batch, engine, threads
        ctx.has_weights = weights is not None
        ctx.dtypes = (positions.dtype, None if weights is None else weights.dtype)
        ctx.device = positions.device
        return out.to(positions.device)

    @staticmethod
    @once_differentiable  # the kernel's gradient is not itself differentiable
    def backward(ctx: Any, dgrid: torch.Tensor) -> tuple[Any, ...]:
        want_pos, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (want_pos or want_w):
            return None, None, None, None, None
        g = dgrid.detach().cpu().contiguous().numpy()
        dpos, dw = ctx.engine.gradient(ctx.batch, g, ctx.threads)
        pos_dtype, w_dtype = ctx.dtypes
        grad_pos = torch.from_numpy(dpos).to(ctx.device, pos_dtype) if want_pos else None
        grad_w = torch.from_numpy(dw).to(ctx.device, w_dtype) if want_w else None
        return grad_pos, grad_w, None, None, None


def grid_tensor(
    positions: torch.Tensor,
    boxes: Box | Sequence[Box],
    sigma: float | Any = 0.5,
    *,
    offsets: Any = None,
    channels: Any = None,
    n_channels: int | None = None,
    weights: torch.Tensor | None = None,
    threads: int | None = None,
    engine: Engine | None = None,
) -> torch.Tensor:
    """Density grids (docs/format.md §3) of position tensors, differentiable in positions, weights.

    Parameters
    ----------
    positions : (M, 3) float tensor, Å
        Every structure's atoms one after another; may require grad.
    boxes : Box or sequence of B Boxes (one grid shape)
        Where each grid sits; constant.
    sigma : float or (M,) array_like, Å
        Gaussian standard deviations; constant.
    offsets : (B+1,) int array_like, optional
        Structure s owns atoms ``offsets[s]:offsets[s+1]`` (default: all atoms in one).
    channels : (M,) int array_like, optional
        Channel of each atom (default 0); ``n_channels`` defaults to max + 1.
    weights : (M,) float tensor, optional
        Per-atom weights (default 1); may require grad.
    threads : int, optional
        Kernel threads (default every core).
    engine : Engine, optional
        What computes grids and gradients (default :class:`KernelEngine`, float32).

    Returns
    -------
    (B, C, nx, ny, nz) tensor — (C, nx, ny, nz) for a single Box without ``offsets`` —
    float32 from the kernel, on the device of ``positions``.
    """
    if not isinstance(positions, torch.Tensor):
        raise TypeError(f"positions must be a torch.Tensor, got {type(positions).__name__}")
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (M, 3), got {tuple(positions.shape)}")
    m = positions.shape[0]
    single = isinstance(boxes, Box) and offsets is None
    box_list = [boxes] if isinstance(boxes, Box) else list(boxes)
    if not box_list or not all(isinstance(b, Box) for b in box_list):
        raise ValueError("boxes must be a pgrid_cli.Box or a non-empty sequence of them")
    shape = box_list[0].shape
    if any(b.shape != shape for b in box_list):
        raise ValueError("every box needs the same grid shape")
    offs = np.array([0, m]) if offsets is None else _numpy(offsets, np.int64).reshape(-1)
    if len(offs) != len(box_list) + 1 or offs[0] != 0 or offs[-1] != m or np.any(np.diff(offs) < 0):
        raise ValueError(
            f"offsets must rise from 0 to {m} atoms with one entry per box plus one, "
            f"got {offs.tolist()} for {len(box_list)} box(es)"
        )
    chans = np.zeros(m, np.int32) if channels is None else _numpy(channels, np.int32).reshape(-1)
    if len(chans) != m:
        raise ValueError(f"channels has {len(chans)} entries for {m} atoms")
    if n_channels is None:
        n_channels = int(chans.max()) + 1 if m else 1
    if isinstance(sigma, torch.Tensor) and sigma.requires_grad:
        raise ValueError(
            "sigma is a constant of the grid: gradients with respect to it are not available"
        )
    sig = _numpy(sigma, np.float64)
    sigmas = np.full(m, float(sig)) if sig.ndim == 0 else sig.reshape(-1)
    if weights is not None and (weights.ndim != 1 or weights.shape[0] != m):
        raise ValueError(f"weights must have shape ({m},), got {tuple(weights.shape)}")
    frame = _Frame(
        offsets=offs,
        channels=chans,
        sigmas=sigmas,
        origins=np.stack([b.origin for b in box_list]),
        axes=np.stack([b.axes for b in box_list]),
        periodic=np.array([b.periodic for b in box_list], dtype=bool),
        shape=shape,
        n_channels=int(n_channels),
    )
    out = _GridFunction.apply(positions, weights, frame, engine or KernelEngine(), threads)
    return out[0] if single else out


class GridLayer(torch.nn.Module):
    """``torch.nn.Module`` form of :func:`grid_tensor` with a :class:`~pgrid_cli.GridRecipe`.

    ``layer(positions, numbers, offsets)`` grids B structures given their (M, 3) positions
    (Å, may require grad), (M,) atomic numbers (channels from ``recipe.channels``) and
    (B+1,) offsets; boxes are built around each structure's (detached) positions with
    ``recipe.box``, or passed as ``boxes``: a sequence of Boxes, or a mapping with
    ``origin``, ``axes`` and ``periodic`` such as a collated batch (for crystals, or to
    reuse a dataset's boxes). Returns (B, C, nx, ny, nz) float32.

    Parameters
    ----------
    recipe : GridRecipe, optional
        σ, grid size, box, padding and channels, as ``pgrid grid`` (default
        ``GridRecipe()``); or give them as keywords (``sigma=0.5, grid_size=32, ...``).
    threads : int, optional
        Kernel threads (default every core).
    """

    def __init__(
        self,
        recipe: GridRecipe | None = None,
        *,
        threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if recipe is not None and kwargs:
            raise ValueError("give either a recipe or recipe keywords, not both")
        self.recipe = recipe if recipe is not None else GridRecipe(**kwargs)
        self.threads = threads

    def forward(
        self,
        positions: torch.Tensor,
        numbers: Any,
        offsets: Any = None,
        *,
        weights: torch.Tensor | None = None,
        boxes: Sequence[Box] | Mapping[str, Any] | None = None,
    ) -> torch.Tensor:
        opts = self.recipe
        m = positions.shape[0]
        offs = np.array([0, m]) if offsets is None else _numpy(offsets, np.int64).reshape(-1)
        if boxes is None:
            pos = _numpy(positions, np.float64)
            box_list = [opts.box_for(pos[a:b]) for a, b in pairwise(offs)]
        elif isinstance(boxes, Mapping):
            origin = _numpy(boxes["origin"], np.float64).reshape(-1, 3)
            axes = _numpy(boxes["axes"], np.float64).reshape(-1, 3, 3)
            periodic = _numpy(boxes["periodic"], bool).reshape(-1)
            box_list = [
                Box(o, a, opts.shape, bool(p))
                for o, a, p in zip(origin, axes, periodic, strict=True)
            ]
        else:
            box_list = [b.with_shape(opts.shape) for b in boxes]
        return grid_tensor(
            positions,
            box_list,
            opts.sigma,
            offsets=offs,
            channels=opts.spec.assign(_numpy(numbers, np.int64)),
            n_channels=opts.n_channels,
            weights=weights,
            threads=self.threads,
        )

    def extra_repr(self) -> str:
        o = self.recipe
        return (
            f"sigma={o.sigma}, grid_size={o.shape}, box={o.box!r}, padding={o.padding}, "
            f"channels={o.channels!r}"
        )


def _numpy(t: Any, dtype: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=dtype, order="C")  # keeps 0-d (ascontiguousarray would not)
