"""CompressionPlan: its one-line summary and its dict form."""

from __future__ import annotations

import pytest

from autocompress.plan import CompressionPlan, LayerPlan


@pytest.mark.parametrize(
    ("prune", "shown"),
    [(0.0, "0%"), (0.5, "50%"), (0.92, "92%"), (0.99, "99%"), (0.997, "99.7%"),
     (0.9996, "99.96%"), (0.99999, "99.999%"), (0.994, "99.4%")],
)  # fmt: skip
def test_summary_shows_what_is_pruned_to_the_digit_that_matters(prune: float, shown: str) -> None:
    plan = CompressionPlan(layers={"fc1": LayerPlan(bits=2, prune=prune), "fc2": LayerPlan()})
    assert plan.summary() == f"fc1 2b/{shown} fc2 fp32/0%"


def test_structured_and_activation_bits_in_the_summary() -> None:
    plan = CompressionPlan(
        layers={"conv1": LayerPlan(bits=8, prune=0.5, act_bits=8, prune_kind="structured")}
    )
    assert plan.summary() == "conv1 8b/c50% a8"
    assert CompressionPlan.from_dict(plan.to_dict()) == plan
