"""Every call's CO2e is its energy times the zone's grid intensity, whichever model made it: the carbon weight
compares models on one basis."""

from __future__ import annotations

import pytest

from moai.catalog import ModelCard
from moai.telemetry.carbon import CarbonModel, grid_g_per_kwh


@pytest.mark.parametrize("provider, model", [("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5-20251001")])
def test_a_cloud_calls_co2_is_its_energy_at_the_zones_intensity(provider: str, model: str) -> None:
    carbon = CarbonModel("FRA")
    card = ModelCard(name="c", provider=provider, model=model)
    kwh, co2 = carbon.estimate(card, 200, 150, 2.0, None)
    local_kwh, local_co2 = carbon.estimate(ModelCard(name="l", provider="local", path="/x.gguf"), 200, 150, 2.0, 1.0)
    assert kwh > 0 and co2 / kwh == pytest.approx(grid_g_per_kwh("FRA"))
    assert co2 / kwh == pytest.approx(local_co2 / local_kwh)


def test_an_intensity_set_by_hand_holds_for_cloud_calls_too() -> None:
    card = ModelCard(name="c", provider="openai", model="gpt-4o-mini")
    kwh, co2 = CarbonModel("FRA", grid_g_per_kwh_override=100.0).estimate(card, 200, 150, 2.0, None)
    assert co2 == pytest.approx(kwh * 100.0)
