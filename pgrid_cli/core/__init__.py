"""The core: boxes, channels, structures, the gridding recipe and the kernel's API.

Nothing here reads or writes files; every other part of the package builds on it.
"""

from __future__ import annotations

from .box import Box
from .channels import ChannelSpec, UnknownElementError
from .kernel import (
    Batch,
    available_cores,
    available_isas,
    check_sigma,
    get_memory_limit,
    gradient_batch,
    grid,
    grid_batch,
    grid_gradient,
    kernel_info,
    render_batch,
    resolve_isa,
    set_memory_limit,
)
from .recipe import GridRecipe, OutsideBoxError
from .structure import Structure

__all__ = [
    "Batch",
    "Box",
    "ChannelSpec",
    "GridRecipe",
    "OutsideBoxError",
    "Structure",
    "UnknownElementError",
    "available_cores",
    "available_isas",
    "check_sigma",
    "get_memory_limit",
    "gradient_batch",
    "grid",
    "grid_batch",
    "grid_gradient",
    "kernel_info",
    "render_batch",
    "resolve_isa",
    "set_memory_limit",
]
