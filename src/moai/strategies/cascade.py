"""``cascade`` (FrugalGPT): the cheapest model answers first; a scorer decides whether to escalate.

The scorer is either the gate (its predicted quality of that model on this query, plus a check that the
answer is not empty or truncated) or a judge model grading the answer 0–10. An accepted answer ends the
cascade; a failed or rejected one escalates to the next model. The last model's step is the final one and is
streamed when reached. With the gate as scorer, a model predicted below the threshold is not called at all
(its answer could never be accepted), unless the last model fails: then the skipped models are the last model's
fallbacks, the strongest (highest predicted quality) first. ``moai.reason`` tells what the run did (``settle``):
the models skipped and not called after all, a try that failed, and who answered in a failed last model's place.
"""

from __future__ import annotations

from dataclasses import replace

from moai.gate.decision import RouteDecision
from moai.strategies.context import RequestContext
from moai.strategies.moa import with_fallbacks
from moai.strategies.plan import Passthrough, Plan, Step, StepResult
from moai.strategies.prompts import GRADE, grade_of, review_messages
from moai.strategies.roles import expected_cost, fill, unfilled, with_messages


def order(ctx: RequestContext) -> list[str]:
    eligible = {c.name: c for c in ctx.candidates}
    if ctx.mix.cascade:
        return [m for m in ctx.mix.cascade if m in eligible]
    return sorted(eligible, key=lambda m: expected_cost(eligible[m], 500, ctx.params.max_tokens))


def shown(r: StepResult) -> str:
    """An answer as a grader reads it: its text, and its tool calls written out (a call is an answer too)."""
    calls = [f"[tool call] {(c.get('function') or {}).get('name', '?')}"
             f"({(c.get('function') or {}).get('arguments', '')})" for c in r.tool_calls or []]
    return "\n".join([r.text, *calls]).strip() if calls else r.text


def _narrowed(decision: RouteDecision, models: list[str]) -> RouteDecision:
    """The decision as the cascade's trace: its own models only, their probabilities renormalised."""
    ranking = [m for m in decision.ranking if m in models] or list(models)
    z = sum(decision.probabilities.get(m, 0.0) for m in ranking) or 1.0
    return replace(decision, model=ranking[0], ranking=ranking,
                   probabilities={m: decision.probabilities.get(m, 0.0) / z for m in ranking},
                   quality={m: q for m, q in decision.quality.items() if m in models},
                   utilities={m: u for m, u in decision.utilities.items() if m in models},
                   reasons=[*decision.reasons, f"cascade: ranked among its own models ({', '.join(models)})"])


def plan(ctx: RequestContext) -> Plan:
    models = order(ctx)
    if not models:
        raise unfilled(ctx, "the cascade", ctx.mix.cascade)
    # predicted against every eligible model (the rule chooser's qualities are relative to the pool it is given);
    # the trace (and x-moai-model before any answer) is narrowed to the cascade's own models
    decision = ctx.decide()
    if ctx.decision is decision and set(decision.ranking) - set(models):
        ctx.decision = _narrowed(decision, models)
    threshold = ctx.mix.threshold
    judge = fill(ctx, ctx.mix.judge, name="judge") if ctx.mix.scorer == "judge" else []
    judge = with_fallbacks(ctx, judge) if judge else judge  # a failed grader falls back as any one-model step does
    steps: list[Step] = []
    tries: list[str] = []
    notes: list[str] = []

    def predicted(model: str) -> float:
        q = decision.quality.get(model) if decision.quality else None
        return q if q is not None else decision.probabilities.get(model, 0.0)

    def skipped(ms: list[str]) -> str:
        return ("cascade: skipped " + ", ".join(f"{m} (predicted quality {predicted(m):.2f})" for m in ms)
                + f": below the threshold {threshold:g}, " + ("its answer" if len(ms) == 1 else "their answers")
                + " could not be accepted")

    hopeless: list[str] = []
    written = list(models)
    if ctx.mix.scorer == "gate":  # known before any call: skip the tries that could not be accepted
        # the last model's stand-ins, should it fail: the strongest (highest predicted quality) first, of two
        # alike the later in the cascade
        hopeless = sorted((m for m in models[:-1] if predicted(m) < threshold),
                          key=lambda m: (predicted(m), written.index(m)), reverse=True)
        if hopeless:
            notes.append(skipped([m for m in models if m in hopeless]))
            models = [m for m in models[:-1] if m not in hopeless] + models[-1:]

    def accepted(results: dict[str, StepResult], sid: str) -> bool:
        r = results.get(sid)
        if r is None or not r.answered or r.status != "ok" or r.finish_reason == "length":
            return False
        if ctx.mix.scorer == "judge":
            grade = results.get(f"grade.{sid}")
            score = grade_of(grade.text) if grade is not None and grade.status == "ok" else None
            return score is not None and score / 10 >= threshold
        return predicted(r.model or "") >= threshold

    for i, model in enumerate(models):
        sid = f"try{i + 1}"
        earlier = list(tries)
        last = i == len(models) - 1

        def build(results: dict[str, StepResult], earlier: list[str] = earlier, last: bool = last):  # type: ignore[no-untyped-def]
            for prev in earlier:
                if accepted(results, prev):
                    return Passthrough.of(results[prev]) if last else None
            return ctx.params

        deps = [d for e in earlier for d in (e, f"grade.{e}") if judge or d == e]
        # a failed try escalates: the next one runs whatever became of the earlier ones
        # should the last model fail, the skipped ones still answer, the strongest first: better than no answer;
        # then the mix's fallbacks, as a route walks them (not the models tried already: rescue keeps their answers)
        chain = [model]
        if last:
            tried = set(models[:-1])
            chain = [m for m in with_fallbacks(ctx, [model, *hopeless]) if m not in tried]
        steps.append(Step(sid, "answer", chain, build, deps=deps, optional=not last, after_failure=True))
        if judge and not last:
            def build_grade(results: dict[str, StepResult], sid: str = sid):  # type: ignore[no-untyped-def]
                r = results.get(sid)
                if r is None or r.status != "ok" or not r.answered:
                    return None
                msgs = review_messages(GRADE, ctx.params.messages, shown(r))
                return with_messages(ctx, msgs, max_tokens=4, temperature=0.0)

            steps.append(Step(f"grade.{sid}", "judge", judge, build_grade, deps=[sid], optional=True))
        tries.append(sid)

    def rescue(results: dict[str, StepResult]) -> StepResult | None:
        done = [results[t] for t in tries[:-1] if t in results and results[t].status == "ok" and results[t].answered]
        return done[-1] if done else None

    def settle(results: dict[str, StepResult]) -> None:
        """The notes as the run bore them out: a skipped model called after all (the last one failed) is no
        longer said to be skipped, and what failed and who answered in the last model's place is said."""
        for t in tries[:-1]:
            r = results.get(t)
            note = f"cascade: {r.model} ({t}) failed ({r.error}); the cascade escalated" if r else ""
            if r is not None and r.status == "failed" and note not in notes:
                notes.append(note)
        final = results.get(tries[-1])
        if final is None:
            return
        called = [a["model"] for a in final.attempts]
        if hopeless and (said := skipped([m for m in written if m in hopeless])) in notes:
            still = [m for m in written if m in hopeless and m not in called]
            notes[notes.index(said):notes.index(said) + 1] = [skipped(still)] if still else []
        answerer = final.model if final.status == "ok" else None
        if answerer == models[-1] or (answerer is None and not any(a.get("error") for a in final.attempts)):
            return  # the last model answered, an earlier answer was accepted, or no model was left to call
        what = [f"{a['model']} failed ({a['error']})" for a in final.attempts if a.get("error")]
        if models[-1] not in called:
            what.insert(0, f"{models[-1]} was not called (circuit open, rate limited, or failed earlier)")
        if answerer is None:
            what.append("no model answered in its place")
        elif answerer in hopeless:
            what.append(f"{answerer} answered in its place, though predicted {predicted(answerer):.2f} (below the "
                        "threshold): better than no answer")
        else:
            what.append(f"{answerer} answered in its place")
        note = f"cascade: the last model {'; '.join(what)}"
        if note not in notes:
            notes.append(note)

    return Plan("cascade", steps, final=tries[-1], rescue=rescue, notes=notes, settle=settle)
