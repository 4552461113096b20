"""The comparison benchmark's leakage filter: drop records that ask a test question, not ones that quote it."""

from __future__ import annotations

from types import ModuleType

from moai.bench.datasets import RoutingRecord

QUESTION = "Which of the following statements best explains why magnets usually stick to a refrigerator door?"
SHOTS = "\n\n".join(f"Example question number {k} about rocks, plants and the weather today?\nAnswer: B"
                    for k in range(5))


def _rec(i: int, prompt: str) -> RoutingRecord:
    return RoutingRecord(id=f"r/{i}", prompt=prompt, scores={"a": 1.0})


def test_a_question_asked_elsewhere_is_dropped_but_a_quoted_example_is_not(gate_compare: ModuleType) -> None:
    records = [
        _rec(0, QUESTION),  # the test question
        _rec(1, f"{QUESTION}\nAfter careful thought, put your final answer in \\boxed{{...}}."),  # same, wrapped
        _rec(2, f"{QUESTION}\nAnswer: B\n\n{SHOTS}\n\nWhat do plants need to grow?\nAnswer:"),  # a few-shot example
        _rec(3, "A refrigerator"),  # a short test prompt
        _rec(4, f"{SHOTS}\n\nA refrigerator keeps food cold because of which process?\nAnswer:"),
        _rec(5, f"{SHOTS}\n\n{QUESTION}\nAnswer:"),  # asks the question last, after its examples
    ]
    idx = gate_compare.shingle_index(records)
    assert gate_compare.overlapping([0], records, idx) == {1, 5}
    assert gate_compare.overlapping([3], records, idx) == set()
    # the other way round: a test prompt whose own question is a shorter training record
    assert 0 in gate_compare.overlapping([5], records, idx)


def test_same_question(gate_compare: ModuleType) -> None:
    q = gate_compare._norm(QUESTION)
    text = " ".join(q)
    assert gate_compare.same_question(text, text)
    assert gate_compare.same_question(text, text + " answer with one letter")
    assert not gate_compare.same_question(text, text + " " + " ".join(["word"] * 40))
    assert not gate_compare.same_question("unrelated words here", text)


def test_pair_labels_find_both_models_under_each_sets_own_names(gate_compare: ModuleType) -> None:
    recs = [
        RoutingRecord(id="a/0", prompt="q", scores={"gpt-4-1106-preview": 1.0, "mistralai/mixtral-8x7b-chat": 0.0}),
        RoutingRecord(id="b/0", prompt="q", scores={"gpt4_1106_preview": 0.5, "claude-v2": 1.0}),
    ]
    y = gate_compare.pair_labels(recs)
    assert y[0].tolist() == [1.0, 0.0]
    assert y[1, 0] == 0.5 and y[1, 1] != y[1, 1]  # Mixtral missing: NaN
