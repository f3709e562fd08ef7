"""Which slice of a run this process does: explicit values, or a Slurm array's variables.

The number of slices N belongs to the run, not to a submission. The first Slurm array
that touches an output directory fixes it and records it in ``slices/slicing.json``
(:data:`~pgrid_cli.store.rundir.SLICING`) with the task id of slice 0 (the array's MIN)
and its step; every later submission of the same run (``sbatch --array=1,3`` after tasks
1 and 3 failed, ``--array=1``, ``--array=0-4:2``) reads the record, so that task ``t`` is
always slice ``(t − base) / step`` of the recorded N, whatever the shape of the new
array (Slurm recomputes ``SLURM_ARRAY_TASK_COUNT`` and ``…_MIN`` for every submission:
they cannot be trusted on a resubmission).

:func:`resolve_slice` is the rule (pure, tested with environment dicts);
:func:`slice_from_env` is the same rule for a directory without a record.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import ParameterError


@dataclass(frozen=True)
class SlurmArray:
    """The ``SLURM_ARRAY_*`` variables of one array task."""

    job_id: str
    task_id: int
    task_min: int
    task_max: int
    task_count: int
    task_step: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SlurmArray | None:
        """The array task this process is (None outside a Slurm array)."""
        env = os.environ if environ is None else environ
        if not env.get("SLURM_ARRAY_TASK_ID"):
            return None
        task = _env_int(env, "SLURM_ARRAY_TASK_ID")
        lo = _env_int(env, "SLURM_ARRAY_TASK_MIN", 0)
        step = _env_int(env, "SLURM_ARRAY_TASK_STEP", 1) or 1
        count = _env_int(env, "SLURM_ARRAY_TASK_COUNT", 0)
        hi = _env_int(env, "SLURM_ARRAY_TASK_MAX", lo + max(count - 1, 0) * step)
        if not count:
            count = (hi - lo) // step + 1
        return cls(env.get("SLURM_ARRAY_JOB_ID", ""), task, lo, hi, count, step)

    @property
    def regular(self) -> bool:
        """Whether the array is the range MIN-MAX:STEP (every id in it, no other)."""
        span = self.task_max - self.task_min
        return (
            span >= 0
            and span % self.task_step == 0
            and span // self.task_step + 1 == (self.task_count)
        )

    def spec(self) -> str:
        step = f":{self.task_step}" if self.task_step != 1 else ""
        return f"{self.task_min}-{self.task_max}{step} ({self.task_count} tasks)"


def resolve_slice(
    shard_index: int | None,
    num_shards: int | None,
    array: SlurmArray | None,
    record: Mapping[str, Any] | None,
) -> tuple[int, int, dict[str, Any] | None]:
    """(I, N, record to write): the slice this process runs.

    ``record`` is the run's ``slices/slicing.json`` (None when the directory has none for
    this run). The returned record is the one to write on first contact (None when there
    is nothing to record: no Slurm array and no ``num_shards``, or a record exists).

    * ``shard_index``/``num_shards`` given explicitly win (``num_shards`` must agree
      with a record).
    * Otherwise a Slurm array task ``t`` is slice ``(t − base) / step`` of N, where N,
      base and step come from the record, or, on first contact, from this array:
      N = ``SLURM_ARRAY_TASK_COUNT``, base = ``…_MIN``, step = ``…_STEP`` (the array must be a
      range ``A-B`` or ``A-B:S`` then); with an explicit ``num_shards`` and no record,
      base is MIN when the array spans exactly N ids, else 0, and the step is 1.
    * Neither (no array, nothing explicit): (0, 1), the whole input, record or not.
    """
    if num_shards is not None and int(num_shards) < 1:
        raise ParameterError(f"{{num_shards}} must be at least 1, got {num_shards}")
    new: dict[str, Any] | None = None
    if array is None and shard_index is None and num_shards is None:
        return 0, 1, None  # one process for everything: the record does not apply
    if record is not None:
        n = int(record["num_slices"])
        if num_shards is not None and int(num_shards) != n:
            raise ParameterError(
                f"this run is divided into {n} slices (recorded in slices/slicing.json "
                f"by its first submission), not {num_shards}; drop {{num_shards}} or use "
                f"{{overwrite}} to start the run again"
            )
        base, step = int(record.get("task_base", 0)), int(record.get("task_step", 1)) or 1
    elif num_shards is not None:
        n = int(num_shards)
        base, step = 0, 1
        if array is not None and array.task_max - array.task_min + 1 == n:
            base = array.task_min
    elif array is not None and shard_index is None:
        if not array.regular:
            raise ParameterError(
                f"the first Slurm array of a run must be a range (--array=A-B or A-B:S), "
                f"this one is not ({array.task_count} task(s) between {array.task_min} and "
                f"{array.task_max}): give {{num_shards}} N (task t runs slice t)"
            )
        n, base, step = array.task_count, array.task_min, array.task_step
    else:
        n, base, step = 1, 0, 1
    if record is None and (array is not None or num_shards is not None):
        new = {"num_slices": n, "task_base": base, "task_step": step}
        if array is not None:
            new["array_job_id"] = array.job_id
            new["first_array"] = array.spec()
    if shard_index is not None:
        i = int(shard_index)
    elif array is not None:
        offset = array.task_id - base
        if offset % step:
            raise ParameterError(
                f"Slurm array task {array.task_id} is no slice of this run: its tasks are "
                f"{_task_ids(n, base, step)} (slice I is task {base} + I·{step})"
            )
        i = offset // step
        if not 0 <= i < n:
            raise ParameterError(
                f"Slurm array task {array.task_id} is no slice of this run of {n} slices: "
                f"its tasks are {_task_ids(n, base, step)}"
            )
    else:
        i = 0
    if not 0 <= i < n:
        raise ParameterError(
            f"{{shard_index}} must be in 0..{n - 1} for {{num_shards}} {n}, got {i}"
        )
    return i, n, new


def missing_count(
    record: Mapping[str, Any] | None, state_counts: list[int], num_shards: int | None
) -> tuple[int, dict[str, Any] | None]:
    """(N, record to write) for ``--missing``: N from the run's record (``num_shards``
    must agree), else ``num_shards`` (recorded then), else the one N of the run's slice
    states."""
    if record is not None:
        n = int(record["num_slices"])
        if num_shards is not None and int(num_shards) != n:
            raise ParameterError(
                f"this run is divided into {n} slices (slices/slicing.json), not {num_shards}"
            )
        return n, None
    if num_shards is not None:
        if int(num_shards) < 1:
            raise ParameterError(f"{{num_shards}} must be at least 1, got {num_shards}")
        return int(num_shards), {"num_slices": int(num_shards), "task_base": 0, "task_step": 1}
    if len(set(state_counts)) == 1:
        return state_counts[0], None
    raise ParameterError(
        "{missing}: nothing in the output directory says how many slices this run has "
        "(no slices/slicing.json of it); give {num_shards} N"
    )


def slice_from_env(
    shard_index: int | None = None,
    num_shards: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """(I, N) for an output directory that has no slicing record yet (first contact):
    see :func:`resolve_slice`."""
    i, n, _ = resolve_slice(shard_index, num_shards, SlurmArray.from_env(environ), None)
    return i, n


def _task_ids(n: int, base: int, step: int) -> str:
    last = base + (n - 1) * step
    return f"{base}-{last}" + (f":{step}" if step != 1 else "") if n > 1 else str(base)


def _env_int(env: Mapping[str, str], key: str, default: int | None = None) -> int:
    value = env.get(key)
    if value is None or value == "":
        if default is None:
            raise ValueError(f"{key} is not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{key}={value!r} is not an integer") from None
