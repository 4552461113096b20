"""What ``config check`` warns about in mix instructions that are valid but almost surely not meant: a per-token
price, a one-model cascade, a privacy limit that leaves no model, a field the strategy never reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from moai.catalog import PRIVACY_RANK

if TYPE_CHECKING:
    from moai.config import Config

# No real price per million tokens is this low (the cheapest hosted models and cached inputs cost about $0.01 and
# up), and a price per token is below it for any model under $1,000 per million: a figure under it that is not 0
# is almost surely a per-token price written where a per-million one goes, which bills 10^6 times too little.
MIN_PRICE_PER_MTOK = 0.001


def price_warnings(cfg: Config) -> list[str]:
    """``models.NAME.price.FIELD: ...`` for each non-zero price below ``MIN_PRICE_PER_MTOK`` (a per-token figure in
    a per-million field, most likely), with the per-million figure it would stand for. 0 (a free or local model)
    is no warning. Warnings, not errors: the config stays valid."""
    out: list[str] = []
    for name, card in cfg.models.items():
        for fld in ("input_per_mtok", "output_per_mtok"):
            usd = getattr(card.price, fld)
            if 0 < usd < MIN_PRICE_PER_MTOK:
                out.append(f"models.{name}.price.{fld}: {usd:g} USD per million tokens is below any real price "
                           f"(under {MIN_PRICE_PER_MTOK:g}); if it is a price per token, write {usd * 1e6:.10g}")
    return out


def cascade_warnings(cfg: Config) -> list[str]:
    """``mixes.NAME...: ...`` for each cascade of one model: it never escalates, so its threshold and scorer change
    nothing. A warning: it still answers (as a route to that model would)."""
    out: list[str] = []
    for name, mix in cfg.mixes.items():
        if mix.strategy != "cascade":
            continue
        models = mix.cascade or [c.name for c in cfg.pool(mix)]
        if len(models) == 1:
            where = f"mixes.{name}.cascade" if mix.cascade else f"mixes.{name}"
            out.append(f"{where}: a cascade of one model ({models[0]}) never escalates, so threshold and scorer "
                       "change nothing; list two or more models, or use strategy: route")
    return out


# the strategies that read each strategy-specific field of a mix (a field set on another is never read)
READ_BY: dict[str, tuple[str, ...]] = {
    "layers": ("moa",), "proposers": ("moa", "fanout"), "aggregator": ("moa", "fanout"),
    "judge": ("fanout", "cascade"), "steps": ("chain",), "writer": ("critique",), "critic": ("critique",),
    "rounds": ("critique",), "check": ("critique",), "cascade": ("cascade",), "threshold": ("cascade",),
    "scorer": ("cascade",), "collaborate": ("auto",), "difficulty_threshold": ("auto",),
}


def mix_field_warnings(cfg: Config) -> list[str]:
    """``mixes.NAME.FIELD: ...`` for a field the mix's strategy never reads (``proposers`` on a route mix: the mix
    runs as if it were not there), and for a model its ``models`` lists twice."""
    out = []
    for name, mix in cfg.mixes.items():
        for field, readers in READ_BY.items():
            if field in mix.model_fields_set and mix.strategy not in readers:
                out.append(f"mixes.{name}.{field}: not read by strategy {mix.strategy} (only by "
                           f"{' and '.join(readers)}); it has no effect")
        twice = sorted({m for m in mix.models or [] if (mix.models or []).count(m) > 1})
        if twice:
            out.append(f"mixes.{name}.models: {', '.join(twice)} listed more than once")
    return out


def privacy_warnings(cfg: Config) -> list[str]:
    """``mixes.NAME.constraints.max_privacy: ...`` for each mix whose privacy limit leaves none of its models: every
    request to it is refused (422 no_eligible_model)."""
    out = []
    for name, mix in cfg.mixes.items():
        limit, pool = mix.constraints.max_privacy, cfg.pool(mix)
        if limit is not None and not any(PRIVACY_RANK[c.privacy] <= PRIVACY_RANK[limit] for c in pool):
            tiers = ", ".join(f"{c.name}: {c.privacy}" for c in pool)
            out.append(f"mixes.{name}.constraints.max_privacy: {limit!r} leaves none of the mix's models ({tiers}): "
                       "every request to it is refused")
    return out


def pin_privacy_warnings(cfg: Config) -> list[str]:
    """``mixes.NAME.FIELD: ...`` for each model a cascade, the fallbacks or a role names above the mix's
    ``constraints.max_privacy``: it is never called, and another model plays its part."""
    from moai.config_checks import pins

    out = []
    for name, mix in cfg.mixes.items():
        limit = mix.constraints.max_privacy
        if limit is None:
            continue
        for field, model, never in pins(mix):
            card = cfg.models.get(model)
            if card is not None and PRIVACY_RANK[card.privacy] > PRIVACY_RANK[limit]:
                out.append(f"mixes.{name}.{field}: {model!r} is a {card.privacy} model and constraints.max_privacy "
                           f"is {limit!r}, so {never}")
    return out


def config_warnings(cfg: Config) -> list[str]:
    """Everything ``config check`` warns about (the config stays valid): prices, one-model cascades, privacy limits
    that leave no model or a pinned one out, fields the strategy never reads."""
    return (price_warnings(cfg) + cascade_warnings(cfg) + privacy_warnings(cfg) + pin_privacy_warnings(cfg)
            + mix_field_warnings(cfg))


def default_mix_note(cfg: Config) -> str | None:
    """What a file with no mix named ``default`` changes (not a warning: a server whose clients name their mixes
    needs none): ``moai chat`` and ``moai route`` use that mix unless given ``--mix``, and /readyz checks it, else
    every mix."""
    if cfg.default_mix is not None:
        return None
    return (f"no mix named 'default' (mixes: {', '.join(cfg.mixes)}): `moai chat` and `moai route` need --mix, and "
            "/readyz checks every mix (ready while any of them has a model to call)")
