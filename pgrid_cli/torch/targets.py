"""Training targets from stored properties (docs/torch.md, "Targets").

Both datasets take ``targets=[names]`` (per-structure properties, item key ``targets``,
(T,) float32) and ``atom_targets=[names]`` (per-atom properties, item key
``atom_targets``, (M, Ta) float32, concatenated along the atoms when batched). A missing
value (NaN, or a structure without the property) follows ``nan_targets``:

* ``"error"`` (default): ValueError when the dataset is built, naming the structure;
* ``"skip"``: structures with a missing target are left out of the dataset;
* ``"mask"``: kept; the value is 0 and the items carry ``targets_mask`` (T,) /
  ``atom_targets_mask`` (M, Ta) bool tensors, True where the value is real.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

NanTargets = Literal["error", "skip", "mask"]
NAN_POLICIES = ("error", "skip", "mask")


def check_policy(nan_targets: str) -> None:
    if nan_targets not in NAN_POLICIES:
        raise ValueError(
            f"nan_targets must be one of {', '.join(NAN_POLICIES)}, got {nan_targets!r}"
        )


def names(targets: str | Sequence[str] | None) -> tuple[str, ...]:
    """Target names from a list (or one comma-separated string)."""
    if targets is None:
        return ()
    if isinstance(targets, str):
        return tuple(t.strip() for t in targets.split(",") if t.strip())
    return tuple(str(t) for t in targets)


def numeric(name: str, values: Any) -> np.ndarray:
    """``values`` as float64, or a ValueError saying the property is not a number."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"property {name!r} is not a number (stored as {arr.dtype}): it cannot be a target"
        )
    return arr.astype(np.float64)


def item_targets(values: np.ndarray, key: str, mask: bool) -> dict[str, Any]:
    """The item entries of one structure's target values (float32; NaN → 0 with a mask)."""
    import torch

    v = np.asarray(values, dtype=np.float32)
    if not mask:
        return {key: torch.from_numpy(v.copy())}
    ok = np.isfinite(v)
    return {key: torch.from_numpy(np.where(ok, v, 0).astype(np.float32)),
            f"{key}_mask": torch.from_numpy(ok)}  # fmt: skip
