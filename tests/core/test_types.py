"""`broker_core.types`: message statuses by their names on the wire."""

from __future__ import annotations

import pytest

from broker_core.types import MessageStatus


@pytest.mark.parametrize("label", ["pending", "PROCESSING", "Failed"])
def test_a_status_is_parsed_from_its_name_in_any_case(label: str) -> None:
    """``parse`` finds a status by its wire name, whatever the case."""
    assert MessageStatus.parse(label).label == label.lower()


def test_an_unknown_status_name_is_a_value_error() -> None:
    """``parse`` of a name no status has raises ValueError naming it."""
    with pytest.raises(ValueError, match="unknown status 'done'"):
        MessageStatus.parse("done")
