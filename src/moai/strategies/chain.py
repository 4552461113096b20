"""``chain``: sequential steps; each model refines the previous output with its own instruction.

Each step falls back as the mix says (the gate's next model with ``fallbacks: gate``). A step that fails all
the same is passed over: the next one refines the newest answer there is, and when the last step fails, that
answer is returned rather than nothing. A chain whose first link no model could answer stops once its next links
have no model left that has not already failed in the request: they would ask the same models the same question.
"""

from __future__ import annotations

from moai.strategies.context import RequestContext
from moai.strategies.moa import with_fallbacks
from moai.strategies.plan import Plan, Skip, Step, StepResult
from moai.strategies.roles import fill, unfilled, with_messages

# what a refining link must write: the client reads its text as the whole answer
ANSWER_ITSELF = "Output only the answer itself, with no comments about it."


def _latest(results: dict[str, StepResult], ids: list[str]) -> StepResult | None:
    """The newest of the given steps that answered."""
    done = [results[s] for s in ids if s in results and results[s].status == "ok" and results[s].answered]
    return done[-1] if done else None


def plan(ctx: RequestContext) -> Plan:
    steps: list[Step] = []
    ids: list[str] = []
    specs = ctx.mix.steps or []
    failed: dict[str, bool] = {}  # the plan's: models that failed earlier in the request (the executor's)
    for i, spec in enumerate(specs):
        models = fill(ctx, spec.model)
        if not models:
            raise unfilled(ctx, f"chain step {i + 1}", spec.model)
        sid = f"step{i + 1}"
        earlier = list(ids)
        models = with_fallbacks(ctx, models)

        def build(results: dict[str, StepResult], earlier: list[str] = earlier, instruction: str = spec.instruction,
                  sid: str = sid, models: list[str] = models):  # type: ignore[no-untyped-def]
            if not earlier:
                system = {"role": "system", "content": instruction}
                return with_messages(ctx, [system, *ctx.params.messages])
            previous = _latest(results, earlier)
            if previous is None and all(m in failed for m in models):
                # no link answered, and this one would ask the models that just failed at it: the chain stops
                return Skip(f"chain: no model could answer {earlier[0]}, and every model of {sid} failed already; "
                            "the chain stopped")
            if previous is None or previous.step != earlier[-1]:
                ctx.notes.append(f"chain: {earlier[-1]} failed; {sid} " + (
                    f"refined {previous.step}'s answer" if previous else "answered the request itself"))
            if previous is None:  # no link answered: this one writes the first answer
                return with_messages(ctx, list(ctx.params.messages))
            # the draft as the assistant's own turn, then the instruction: asked to "check the previous answer", a
            # small model writes a review ("The previous answer is correct.") instead of the answer itself
            ask = f"{instruction}\n\n{ANSWER_ITSELF}"
            return with_messages(ctx, [*ctx.params.messages, {"role": "assistant", "content": previous.text},
                                       {"role": "user", "content": ask}])

        last = i == len(specs) - 1
        # a link whose every model failed is passed over: the next one refines the newest answer there is
        steps.append(Step(sid, "drafter" if not earlier else "reviser", models, build,
                          deps=earlier[-1:], optional=not last, after_failure=True))  # it reads one answer
        ids.append(sid)
    assert ids
    return Plan("chain", steps, final=ids[-1], rescue=lambda results: _latest(results, ids[:-1]), failed=failed)
