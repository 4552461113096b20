"""Energy (kWh) and CO2e (g) per model call.

Local models: what this machine actually spent — measured CPU time × the card's power draw — times the
grid intensity of the configured zone. Remote models: EcoLogits' per-provider/model energy estimate from
output tokens and latency; for models EcoLogits does not know, a size-based estimate (energy per token
grows roughly linearly with active parameters). Every call's CO2e is its energy times the zone's grid intensity:
the use phase only, on one basis for every model (EcoLogits' total adds the hardware's manufacturing share, about
70% of a cloud call's, which a local call never carried: the carbon weight compared models on different scopes).
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache

from moai.catalog import ModelCard

# Fallback for remote models EcoLogits cannot place: kWh per output token per billion parameters.
KWH_PER_TOKEN_PER_B = 2.0e-8
ECOLOGITS_PROVIDERS = {"openai": "openai", "anthropic": "anthropic"}


@lru_cache(maxsize=64)
def grid_g_per_kwh(zone: str) -> float:
    """Grid intensity (gCO2e/kWh) of an electricity-mix zone (ISO 3166-1 alpha-3, or WOR), from EcoLogits."""
    from ecologits.electricity_mix_repository import electricity_mixes

    mix = electricity_mixes.find_electricity_mix(zone=zone.upper())
    if mix is None:
        raise ValueError(f"unknown electricity-mix zone {zone!r} (use an ISO-3 country code such as FRA, or WOR)")
    return float(mix.gwp) * 1000.0


@lru_cache(maxsize=256)
def _ecologits(provider: str, model: str, output_tokens: int, latency_s: float, zone: str) -> float | None:
    """The call's energy (kWh) as EcoLogits estimates it, or None when it cannot place the model."""
    try:
        from ecologits.tracers.utils import llm_impacts

        logging.getLogger("ecologits").setLevel(logging.ERROR)  # after import: it installs its own logger class
        impacts = llm_impacts(provider=provider, model_name=model, output_token_count=output_tokens,
                              request_latency=latency_s, electricity_mix_zone=zone)
    except Exception:  # noqa: BLE001 - unknown model or provider: fall back to the size-based estimate
        return None
    if impacts is None or impacts.energy is None:
        return None

    def mid(v: object) -> float:
        value = getattr(v, "value", v)
        if hasattr(value, "min"):
            return (float(value.min) + float(value.max)) / 2
        return float(value)  # type: ignore[arg-type]

    return mid(impacts.energy)


class CarbonModel:
    """Turns a call's measured CPU time, latency and tokens into energy and emissions."""

    def __init__(self, zone: str = "WOR", grid_g_per_kwh_override: float | None = None) -> None:
        self.zone = zone.upper()
        self.grid = grid_g_per_kwh_override or grid_g_per_kwh(self.zone)

    def estimate(
        self, card: ModelCard, input_tokens: int, output_tokens: int, latency_s: float, cpu_s: float | None
    ) -> tuple[float, float]:
        """(kWh, gCO2e) for one call."""
        if card.provider == "local":
            watts = card.power_w or 30.0
            cores = os.cpu_count() or 2
            busy_s = cpu_s / cores if cpu_s is not None else latency_s  # power_w is the whole CPU's draw
            kwh = watts * busy_s / 3.6e6
            return kwh, kwh * self.grid
        provider = ECOLOGITS_PROVIDERS.get(card.provider)
        if provider and output_tokens > 0:
            kwh = _ecologits(provider, card.upstream_model, output_tokens, round(max(latency_s, 0.01), 2), self.zone)
            if kwh is not None:
                return kwh, kwh * self.grid
        kwh = KWH_PER_TOKEN_PER_B * (card.params_b or 70.0) * (output_tokens + input_tokens / 10)
        return kwh, kwh * self.grid
