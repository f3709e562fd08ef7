"""Errors about parameters, worded once for every interface.

A :class:`ParameterError` names the parameters it is about as ``{name}`` fields of its
message template. Python users read the parameter names (``shard_index must be …``); the
command line renders the same message with its flags (``--shard-index must be …``), so the
library never needs to know the flags.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class _Spelling(dict):  # type: ignore[type-arg]
    def __init__(self, spell: Callable[[str], str]) -> None:
        super().__init__()
        self._spell = spell

    def __missing__(self, key: str) -> str:
        return self._spell(key)


class ParameterError(ValueError):
    """A parameter value that cannot be used.

    ``template`` is the message with each parameter written as ``{name}``; ``render``
    spells those names for an audience (the default: the Python parameter names).
    """

    def __init__(self, template: str, **context: Any) -> None:
        self.template = template
        self.context = context
        super().__init__(self.render())

    def render(self, spell: Callable[[str], str] = str) -> str:
        """The message with every ``{name}`` spelled by ``spell(name)``."""
        return self.template.format_map(_Spelling(spell))
