"""The element typers: ``single``, ``elements`` and element lists as typers.

``get_typer("elements")`` (or ``"C,H,N,O,*"``) puts each atom in its element's channel
(:class:`~pgrid_cli.core.channels.ChannelSpec`) with weight 1, so element channels can be
combined with others (a ``charge`` channel) or used per part of a complex.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.channels import ChannelSpec
from ..core.structure import Structure
from .base import register


@dataclass(frozen=True)
class ElementsTyper:
    """One channel per element of ``spec`` (an atom of an element with no channel raises
    :class:`~pgrid_cli.core.channels.UnknownElementError`)."""

    spec: ChannelSpec
    name: str = field(init=False)
    channels: tuple[str, ...] = field(init=False)
    signed: bool = False

    def __post_init__(self) -> None:
        text = "single" if self.spec.is_single else ",".join(self.spec.names)
        object.__setattr__(self, "name", text)
        object.__setattr__(self, "channels", self.spec.names)

    def memberships(self, structure: Structure) -> np.ndarray:
        """(M, C) float64 one-hot rows."""
        chans = self.spec.assign(structure.numbers)
        out = np.zeros((len(chans), len(self.channels)))
        out[np.arange(len(chans)), chans] = 1.0
        return out


register(lambda: ElementsTyper(ChannelSpec.parse("elements")), "elements")
register(lambda: ElementsTyper(ChannelSpec.parse("single")), "single")
