"""``chain``: sequential steps; each model refines the previous output with its own instruction.

Each step falls back as the mix says (the gate's next model with ``fallbacks: gate``); when the last step
fails all the same, the previous step's answer is returned rather than nothing.
"""

from __future__ import annotations

from moai.strategies.context import RequestContext
from moai.strategies.moa import with_fallbacks
from moai.strategies.plan import Plan, Step, StepResult
from moai.strategies.roles import fill, with_messages


def plan(ctx: RequestContext) -> Plan:
    steps: list[Step] = []
    prev: str | None = None
    for i, spec in enumerate(ctx.mix.steps or []):
        models = fill(ctx, spec.model)
        if not models:
            raise ValueError(f"mix {ctx.mix_name!r}: no eligible model for chain step {i + 1}")
        sid = f"step{i + 1}"

        def build(results: dict[str, StepResult], prev: str | None = prev, instruction: str = spec.instruction):  # type: ignore[no-untyped-def]
            if prev is None:
                system = {"role": "system", "content": instruction}
                return with_messages(ctx, [system, *ctx.params.messages])
            previous = results[prev].text
            ask = f"{instruction}\n\nPrevious answer:\n{previous}"
            return with_messages(ctx, [*ctx.params.messages, {"role": "user", "content": ask}])

        steps.append(Step(sid, "drafter" if prev is None else "reviser", with_fallbacks(ctx, models), build,
                          deps=[prev] if prev else []))
        prev = sid
    assert prev is not None
    earlier = [s.id for s in steps[:-1]]

    def rescue(results: dict[str, StepResult]) -> StepResult | None:
        """The newest earlier step that answered (the last step's input)."""
        done = [results[s] for s in earlier if s in results and results[s].status == "ok" and results[s].answered]
        return done[-1] if done else None

    return Plan("chain", steps, final=prev, rescue=rescue)
