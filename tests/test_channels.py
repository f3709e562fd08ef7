"""Channel sets (docs/format.md §5)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from pgrid_cli import ChannelSpec, UnknownElementError


def test_elements_default_set_with_catch_all():
    spec = ChannelSpec.parse("elements")
    assert spec.names == ("H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I", "*")
    assert_array_equal(spec.assign([1, 6, 17, 53, 26, 92]), [0, 1, 7, 9, 10, 10])
    assert spec.element_of_channel(7) == "Cl" and spec.element_of_channel(10) == "X"


def test_single_and_explicit_lists():
    assert ChannelSpec.parse("single").names == ("all",)
    assert_array_equal(ChannelSpec.parse("single").assign([1, 8, 79]), [0, 0, 0])
    spec = ChannelSpec.parse(" c, h ,N,o,* ")  # case and spaces are forgiven
    assert spec.names == ("C", "H", "N", "O", "*")
    assert_array_equal(spec.assign([6, 1, 16]), [0, 1, 4])


def test_element_without_channel_is_rejected_not_dropped():
    spec = ChannelSpec.parse("C,H,N,O")
    with pytest.raises(
        UnknownElementError, match="elements Cl, S have no channel in channels C,H,N,O"
    ):
        spec.assign([6, 17, 16, 1])
    with pytest.raises(UnknownElementError, match="element X has no channel"):
        spec.assign([0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("C,Xx", "'Xx' is not a chemical element"),
        ("C,C", "listed twice: C"),
        ("", "no channels"),
        (",,", "no channels"),
        ("C,all", "cannot be combined"),
        ("*,*", "twice"),
    ],
)
def test_invalid_channel_lists(text, message):
    with pytest.raises(ValueError, match=message):
        ChannelSpec.parse(text)


def test_equality():
    assert ChannelSpec.parse("C,H") == ChannelSpec(["C", "H"])
    assert ChannelSpec.parse("C,H") != ChannelSpec.parse("H,C")
    assert len({ChannelSpec.parse("single"), ChannelSpec.parse("single")}) == 1
    assert np.issubdtype(ChannelSpec.parse("single").assign([6]).dtype, np.int32)
