"""Type stub of the private native module (see native/src/bindings.cpp).

Integer arguments accept any Python int (or NumPy integer) and raise ValueError when out of
range; arrays are checked for dtype, shape and layout, and every value against the input
domain below (pgrid/grid.hpp), with ValueErrors naming the argument and index.
"""

import numpy as np
import numpy.typing as npt

TRUNC_SIGMAS: float
#: The input domain: sigma in [MIN_SIGMA, MAX_SIGMA] Å; every atom within MAX_DISTANCE Å of
#: its box origin per axis; sum of |weight| per channel of a structure at most
#: MAX_WEIGHT_SUM; at most MAX_AXIS_VOXELS voxels per axis (and channels); threads in
#: [0, MAX_THREADS] (0: every hardware thread).
MIN_SIGMA: float
MAX_SIGMA: float
MAX_DISTANCE: float
MAX_WEIGHT_SUM: float
MAX_AXIS_VOXELS: int
MAX_THREADS: int
__version__: str

def grid_batch(
    positions: npt.NDArray[np.float64],
    offsets: npt.NDArray[np.int64],
    channels: npt.NDArray[np.int32],
    sigmas: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    origins: npt.NDArray[np.float64],
    axes: npt.NDArray[np.float64],
    periodic: npt.NDArray[np.bool_],
    out: npt.NDArray[np.float32],
    threads: int = 0,
    isa: str = "",
    streaming: int = -1,
) -> None: ...
def grid_one(
    positions: npt.NDArray[np.float64],
    channels: npt.NDArray[np.int32] | None,
    sigma: float,
    origin: npt.NDArray[np.float64],
    axes: npt.NDArray[np.float64],
    periodic: bool,
    out: npt.NDArray[np.float32],
    threads: int = 0,
    isa: str = "",
) -> None: ...
def bounds(
    positions: npt.NDArray[np.float64],
) -> tuple[float, float, float, float, float, float]: ...
def grid_structures(
    positions: npt.NDArray[np.float64],
    numbers: npt.NDArray[np.int32] | npt.NDArray[np.int64],
    offsets: npt.NDArray[np.int64] | None,
    lattices: npt.NDArray[np.float64] | None,
    periodic: npt.NDArray[np.bool_] | None,
    weights: npt.NDArray[np.float64] | None,
    element_channel: npt.NDArray[np.int32],
    sigma: float,
    box_kind: int,
    padding: float,
    cube_side: float,
    outside_limit: float,
    out: npt.NDArray[np.float32],
    origins_out: npt.NDArray[np.float64] | None = None,
    axes_out: npt.NDArray[np.float64] | None = None,
    threads: int = 0,
    isa: str = "",
) -> None:
    """A recipe's whole per-call path (pgrid/grid.hpp, grid_recipe): each structure's box
    (lattices[s] where periodic[s], else box_kind 0 fit / 1 tight / 2 cube around its
    atoms, bitwise as Box.fit / tight / cube / from_lattice), channels element_channel[Z]
    (-1: an error naming the structure and atom), atoms farther than outside_limit Å
    outside a cube an error (outside_limit < 0: no check), then out (B, C, nx, ny, nz).
    offsets None: one structure of every atom."""

def grid_gradient_batch(
    positions: npt.NDArray[np.float64],
    offsets: npt.NDArray[np.int64],
    channels: npt.NDArray[np.int32],
    sigmas: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    origins: npt.NDArray[np.float64],
    axes: npt.NDArray[np.float64],
    periodic: npt.NDArray[np.bool_],
    dgrid: npt.NDArray[np.float32],
    threads: int = 0,
    isa: str = "",
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def zero_fill(out: npt.NDArray[np.float32], threads: int = 0) -> None: ...
def normal_cdf(
    t: npt.NDArray[np.float64], isa: str = ""
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def supported_isas() -> list[str]: ...
def best_isa() -> str: ...
def hardware_threads() -> int: ...
def triclinic_quadrature_order(h_over_sigma: float) -> int: ...
def build_info() -> dict[str, object]: ...
def round_grid(
    grid: npt.NDArray[np.float32], max_step: float, relative: float, isa: str = ""
) -> float: ...
def nonzero_rows(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]: ...
def shuffle4(data: npt.NDArray[np.float32], out: npt.NDArray[np.uint8], isa: str = "") -> None: ...
def unshuffle4(
    data: npt.NDArray[np.uint8], out: npt.NDArray[np.float32], isa: str = ""
) -> None: ...

# Lennard-Jones energy grids (pgrid/energy.hpp): fills out (nx, ny, nz) with E in K at
# origin + i*steps[0] + j*steps[1] + k*steps[2]; lattice None is an open boundary.
LJ_MAX_IMAGES: int

def lj_energy_grid(
    positions: npt.NDArray[np.float64],
    sigmas: npt.NDArray[np.float64],
    epsilons: npt.NDArray[np.float64],
    lattice: npt.NDArray[np.float64] | None,
    origin: npt.NDArray[np.float64],
    steps: npt.NDArray[np.float64],
    cutoff: float,
    max_energy: float,
    out: npt.NDArray[np.float32],
    threads: int = 0,
    isa: str = "",
) -> None: ...
