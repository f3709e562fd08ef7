"""``pgrid bench``'s configuration: what to sweep, validated once."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ...core.box import normalize_shape
from ...core.channels import ChannelSpec
from ...core.kernel import (
    ISA_NAMES,
    Batch,
    available_cores,
    available_isas,
    check_sigma,
)
from ...core.recipe import GridRecipe
from ...readers import detect_format

SCHEMA = "pgrid-bench"
SCHEMA_VERSION = 1
#: Name of the NumPy (float64 reference) implementation.
NUMPY = "numpy"
#: docs/format.md §3 accuracy: absolute for orthogonal boxes, relative to the grid's max otherwise.
ORTHOGONAL_TOLERANCE = 1e-6
TRICLINIC_TOLERANCE = 1e-4
#: The default input, looked up in ./sample_data and in pgrid's source tree.
DEFAULT_SAMPLE = Path("sample_data") / "drugs.sdf"
#: End-to-end runs use the σ of the sweep closest to ``pgrid grid``'s default.
END_TO_END_SIGMA = 0.5

#: ``render(batch, out, threads)`` fills ``out`` (B, C, n, n, n) float32.
Render = Callable[[Batch, np.ndarray, "int | None"], None]
#: ``progress(done, total, what)`` is called as the sweep advances.
ProgressFn = Callable[[int, int, str], None]


class VerificationError(ValueError):
    """An implementation disagrees with the float64 reference beyond docs/format.md §3."""


# ---------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class BenchConfig:
    """What :func:`run_sweep` measures. Empty tuples mean "the default" (see resolved()).

    Attributes
    ----------
    inputs : files / directories / globs any ``pgrid grid`` input form; default
        ``sample_data/drugs.sdf`` (126 drug-like molecules with hydrogens)
    grid_sizes : voxels per axis n (grids are n³)
    sigmas : Gaussian standard deviations, Å
    channels : channel sets (``single``, ``elements`` or a list such as ``C,H,N,O,*``)
    threads : kernel thread counts; default (1, every available core)
    box : molecule box, ``fit``, ``tight`` or ``cube:L`` (L in Å); crystals use their cell
    padding : Å, for ``fit`` and ``tight``
    implementations : any of ``avx512``, ``avx2``, ``scalar``, ``numpy``; default every
        instruction-set path this CPU runs, and NumPy
    repeat : timed runs per cell (after one warm-up run)
    limit : use only the first ``limit`` structures of the input
    verify : structures per setting checked against the reference before timing
    numpy_budget : seconds the timed NumPy runs may take per cell (0 skips NumPy); the
        pass that picks its subset and its warm-up run take about 2 / repeat of that more
    batch_mb : largest output buffer, MiB (structures are gridded in batches that fit)
    format : read every input as ``xyz``, ``sdf`` or ``cif`` (default: by extension)
    end_to_end : also time ``pgrid grid`` file → shards (see :func:`run_end_to_end`)
    scratch : directory for the end-to-end shards (default: the system's temp dir)
    """

    inputs: tuple[str, ...] = ()
    grid_sizes: tuple[int, ...] = (16, 32, 64, 128)
    sigmas: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    channels: tuple[str, ...] = ("single", "elements")
    threads: tuple[int, ...] = ()
    box: str = "fit"
    padding: float = 2.0
    implementations: tuple[str, ...] = ()
    repeat: int = 5
    limit: int | None = None
    verify: int = 3
    #: Compare only a window of at most this many voxels per axis with the reference
    #: (around each structure's first atom; None: whole grids). Bounds the reference's
    #: cost whatever the input, which is what --quick needs (triclinic references cost
    #: minutes at 64³).
    verify_window: int | None = None
    numpy_budget: float = 3.0
    batch_mb: float = 256.0
    format: str | None = None
    end_to_end: bool = False
    scratch: str | None = None

    @classmethod
    def quick(cls, **changes: Any) -> BenchConfig:
        """A small sweep for a first look (about 30 s on a loaded 2-core machine)."""
        base = cls(
            grid_sizes=(16, 32, 64),
            sigmas=(0.5,),
            limit=32,
            repeat=3,
            numpy_budget=1.0,
            verify=2,
            verify_window=8,
        )
        return replace(base, **changes)

    def resolved(self) -> BenchConfig:
        """Validated, with every default filled in; ValueError with a specific message."""
        grid_sizes = _unique(_positive_int(n, "grid size") for n in self.grid_sizes)
        for n in grid_sizes:
            normalize_shape(n)
        sigmas = _unique(check_sigma(s) for s in self.sigmas)
        specs: dict[tuple[str, ...], str] = {}
        for text in self.channels:
            names = ChannelSpec.parse(text).names
            specs.setdefault(names, text.strip())
        threads = self.threads or (1, available_cores())
        threads = _unique(_positive_int(t, "thread count") for t in threads)
        # box, padding and format mean what they mean for pgrid grid: same checks
        recipe = GridRecipe(box=self.box, padding=self.padding)
        fmt = None if self.format is None else detect_format("", self.format)
        impls = _implementation_names(self.implementations)
        if int(self.repeat) < 1:
            raise ValueError(f"repeat must be at least 1, got {self.repeat}")
        if int(self.verify) < 1:
            raise ValueError(
                f"verify must be at least 1 (every implementation is checked before it is "
                f"timed), got {self.verify}"
            )
        if self.verify_window is not None and int(self.verify_window) < 1:
            raise ValueError(f"verify window must be at least 1 voxel, got {self.verify_window}")
        if self.limit is not None and int(self.limit) < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")
        if not (math.isfinite(self.numpy_budget) and self.numpy_budget >= 0):
            raise ValueError(f"numpy budget must be 0 or more seconds, got {self.numpy_budget}")
        if not (math.isfinite(self.batch_mb) and self.batch_mb > 0):
            raise ValueError(f"batch size must be a positive number of MiB, got {self.batch_mb}")
        if self.scratch is not None and not Path(self.scratch).is_dir():
            raise ValueError(f"scratch directory {self.scratch} does not exist")
        inputs = tuple(str(i) for i in self.inputs) or (str(default_input()),)
        return replace(
            self,
            inputs=inputs,
            grid_sizes=grid_sizes,
            sigmas=sigmas,
            channels=tuple(specs.values()),
            threads=threads,
            box=recipe.box,
            padding=recipe.padding,
            format=fmt,
            implementations=impls,
            repeat=int(self.repeat),
            verify=int(self.verify),
            verify_window=None if self.verify_window is None else int(self.verify_window),
            limit=None if self.limit is None else int(self.limit),
            numpy_budget=float(self.numpy_budget),
            batch_mb=float(self.batch_mb),
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _unique(values: Iterable[Any]) -> tuple[Any, ...]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    if not out:
        raise ValueError("every sweep list needs at least one value")
    return tuple(out)


def _positive_int(value: Any, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a whole number, got {value!r}") from None
    if n != value and not (isinstance(value, str) and value.strip() == str(n)):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    if n < 1:
        raise ValueError(f"{what} must be at least 1, got {n}")
    return n


def _implementation_names(names: Sequence[str]) -> tuple[str, ...]:
    """Fastest first: the native paths (best ISA first), then NumPy."""
    supported = available_isas()
    if not names:
        return (*reversed(supported), NUMPY)
    wanted = []
    for raw in names:
        name = raw.strip().lower()
        if name == NUMPY:
            wanted.append(name)
            continue
        if name not in ISA_NAMES:
            raise ValueError(
                f"unknown implementation {raw!r}: use {', '.join(ISA_NAMES)} or {NUMPY}"
            )
        if name not in supported:
            raise ValueError(
                f"this CPU cannot run the {name} path (it supports {', '.join(supported)})"
            )
        wanted.append(name)
    order = [*reversed(ISA_NAMES), NUMPY]
    return tuple(sorted(set(wanted), key=order.index))


def default_input() -> Path:
    """``sample_data/drugs.sdf`` here, or in the source tree pgrid was installed from."""
    if DEFAULT_SAMPLE.is_file():
        return DEFAULT_SAMPLE
    source_tree = Path(__file__).resolve().parents[1] / DEFAULT_SAMPLE
    if source_tree.is_file():
        return source_tree
    raise ValueError(
        f"no input given and {DEFAULT_SAMPLE} was not found (it ships with pgrid's source "
        f"tree): pass a molecule file, e.g. pgrid bench molecules.xyz"
    )
