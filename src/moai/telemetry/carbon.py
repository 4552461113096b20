"""Energy (kWh) and CO2e (g) per model call.

Local models: measured CPU time × the card's power draw (per core), since that is what the machine
actually spent. Remote models: an estimate from the model's size and the tokens generated (the
per-token energy of GPU inference grows roughly linearly with active parameters).
"""

from __future__ import annotations

import os

from moai.catalog import ModelCard

# Average grid intensity, gCO2e/kWh (Ember/IEA 2023 figures, rounded).
GRID_G_PER_KWH: dict[str, float] = {
    "WOR": 480.0,
    "USA": 370.0,
    "FRA": 56.0,
    "DEU": 380.0,
    "GBR": 210.0,
    "ESP": 150.0,
    "CHN": 560.0,
    "IND": 710.0,
    "SWE": 40.0,
    "NOR": 30.0,
}

# Remote inference: kWh per output token per billion active parameters (GPU serving, PUE included).
KWH_PER_TOKEN_PER_B = 2.0e-8


class CarbonModel:
    """Turns a call's measured CPU time, latency and tokens into energy and emissions."""

    def __init__(self, zone: str = "WOR", grid_g_per_kwh: float | None = None) -> None:
        self.zone = zone.upper()
        if grid_g_per_kwh is None and self.zone not in GRID_G_PER_KWH:
            raise ValueError(f"unknown carbon zone {zone!r}; known: {', '.join(sorted(GRID_G_PER_KWH))}")
        self.grid = grid_g_per_kwh or GRID_G_PER_KWH[self.zone]

    def energy_kwh(
        self, card: ModelCard, input_tokens: int, output_tokens: int, latency_s: float, cpu_s: float | None
    ) -> float:
        if card.provider == "local":
            watts = card.power_w or 30.0
            cores = os.cpu_count() or 2
            busy_s = cpu_s / cores if cpu_s is not None else latency_s  # power_w is for the whole CPU
            return watts * busy_s / 3.6e6
        params = card.params_b or 70.0
        return KWH_PER_TOKEN_PER_B * params * (output_tokens + input_tokens / 10)

    def estimate(
        self, card: ModelCard, input_tokens: int, output_tokens: int, latency_s: float, cpu_s: float | None
    ) -> tuple[float, float]:
        kwh = self.energy_kwh(card, input_tokens, output_tokens, latency_s, cpu_s)
        return kwh, kwh * self.grid
