"""Which slice of a run this process does: explicit values, or a Slurm array's variables."""

from __future__ import annotations

import os
from typing import Any

from ..core.errors import ParameterError


def slice_from_env(
    shard_index: int | None = None,
    num_shards: int | None = None,
    environ: dict[str, str] | None = None,
) -> tuple[int, int]:
    """(I, N): the slice of the input this process runs.

    Explicit values win; otherwise ``SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN`` and
    ``SLURM_ARRAY_TASK_COUNT`` when set (a Slurm array job), else (0, 1).
    """
    env = os.environ if environ is None else environ
    if num_shards is None and env.get("SLURM_ARRAY_TASK_COUNT"):
        num_shards = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
    if shard_index is None and env.get("SLURM_ARRAY_TASK_ID") and num_shards is not None:
        shard_index = _env_int(env, "SLURM_ARRAY_TASK_ID") - _env_int(
            env, "SLURM_ARRAY_TASK_MIN", 0
        )
    n = 1 if num_shards is None else int(num_shards)
    i = 0 if shard_index is None else int(shard_index)
    if n < 1:
        raise ParameterError(f"{{num_shards}} must be at least 1, got {n}")
    if not 0 <= i < n:
        raise ParameterError(
            f"{{shard_index}} must be in 0..{n - 1} for {{num_shards}} {n}, got {i}"
        )
    return i, n


def _env_int(env: Any, key: str, default: int | None = None) -> int:
    value = env.get(key)
    if value is None or value == "":
        if default is None:
            raise ValueError(f"{key} is not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{key}={value!r} is not an integer") from None
