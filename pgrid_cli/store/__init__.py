"""Storage: the grid codec, the shard file format and the output directory of a run."""

from __future__ import annotations

from .codec import GridCodec
from .rundir import describe, write_index
from .shard import Shard, ShardMeta, ShardRecord, ShardSet, ShardWriter
from .vds import write_vds
from .verify import ShardCheck, verify_shard

__all__ = [
    "GridCodec",
    "Shard",
    "ShardCheck",
    "ShardMeta",
    "ShardRecord",
    "ShardSet",
    "ShardWriter",
    "describe",
    "verify_shard",
    "write_index",
    "write_vds",
]
