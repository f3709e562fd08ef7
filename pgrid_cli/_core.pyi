"""Type stub of the private native module (see native/src/bindings.cpp)."""

import numpy as np
import numpy.typing as npt

TRUNC_SIGMAS: float
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
