"""A local model's context check counts the prompt with the model's own tokenizer where the estimate cannot tell:
English the estimate overcounts fits a model it seemed too long for, Thai or Hindi it undercounts no longer goes to
a model it overflows; a short prompt never loads or calls the tokenizer, and a vocabulary that cannot be loaded
leaves the estimate."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from moai.catalog import ModelCard, complete_card
from moai.config import parse_config
from moai.mixture import BadRequest, Mixture
from moai.providers import ChatParams
from moai.providers.llama_cpp import LlamaCppProvider
from moai.server.openai_schema import ChatCompletionRequest

pytestmark = pytest.mark.integration

APPLES = "apple " * 7900  # 7,905 tokens for SmolLM2; 11,851 by the estimate
THAI = "สวัสดีครับ" * 500  # 9,500 tokens for SmolLM2; 5,001 by the estimate
HINDI = "नमस्ते दुनिया " * 600  # ~8,400 tokens for SmolLM2; ~7,500 by the estimate


def mixture(smol: Path, broken: Path | None = None) -> Mixture:
    extra = f"  broken: {{provider: local, path: '{broken}', context: 8192}}\n" if broken else ""
    return Mixture(parse_config(f"""models:
  smol: {{provider: local, path: '{smol}', context: 8192}}
{extra}  cloud: {{provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: cloud, context: 128000,
          price: {{input_per_mtok: 0.1, output_per_mtok: 0.1}}}}
mixes:
  solo: {{strategy: route, models: [smol]}}
  both: {{strategy: route, models: [smol, cloud], weights: {{quality: 0, cost: 1}}}}
  pair: {{strategy: route, models: [{'broken, ' if broken else ''}smol]}}
"""))


def prepared(m: Mixture, mix: str, text: str, **body: Any) -> Any:
    return m.prepare(ChatCompletionRequest.model_validate(
        {"model": f"moai/{mix}", "messages": [{"role": "user", "content": text}], **body}))


def test_a_prompt_the_estimate_overcounts_goes_to_the_local_model_it_fits(smollm_path: Path) -> None:
    prep = prepared(mixture(smollm_path), "solo", APPLES)
    assert [c.name for c in prep.ctx.candidates] == ["smol"]
    counted = [n for n in prep.ctx.notes if "smol's tokenizer" in n]
    assert counted and 7905 <= int(re.search(r"(\d+) tokens", counted[0])[1]) < 8192, prep.ctx.notes


def test_a_thai_prompt_that_overflows_the_local_context_goes_elsewhere_with_its_count(smollm_path: Path) -> None:
    prep = prepared(mixture(smollm_path), "both", THAI)
    assert [c.name for c in prep.ctx.candidates] == ["cloud"]
    why = prep.ctx.excluded["smol"]
    found = re.fullmatch(r"prompt (\d+) tokens by its own tokenizer exceeds context 8192", why)
    assert found and int(found[1]) > 9500, why


def test_a_hindi_prompt_no_model_holds_is_refused_with_its_count(smollm_path: Path) -> None:
    with pytest.raises(BadRequest) as e:
        prepared(mixture(smollm_path), "solo", HINDI)
    assert e.value.code == "context_length_exceeded"
    assert re.search(r"\(\d{4} by smol's tokenizer\)", str(e.value)), str(e.value)


def test_the_answer_asked_counts_with_the_prompt_as_the_model_reads_it(smollm_path: Path) -> None:
    """3,000 Thai characters seem 3,001 tokens, room enough with max_tokens 4,000; they are ~5,700."""
    prep = prepared(mixture(smollm_path), "both", "สวัสดีครับ" * 300, max_tokens=4000)
    assert [c.name for c in prep.ctx.candidates] == ["cloud"]
    assert re.fullmatch(r"prompt \d+ tokens by its own tokenizer \+ max_tokens 4000 exceeds context 8192",
                        prep.ctx.excluded["smol"])


def test_a_short_prompt_neither_loads_nor_calls_the_tokenizer(smollm_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from moai.providers import local_tokens

    monkeypatch.setattr(local_tokens, "_tokenizers", {})  # none loaded yet in this process
    loads: list[str] = []
    counts: list[int] = []
    real_open, real_count = local_tokens._open, local_tokens.Tokenizer.count

    def spy_open(path: str) -> Any:
        loads.append(path)
        return real_open(path)

    def spy_count(self: Any, *args: Any, **kw: Any) -> int:
        counts.append(1)
        return real_count(self, *args, **kw)

    monkeypatch.setattr(local_tokens, "_open", spy_open)
    monkeypatch.setattr(local_tokens.Tokenizer, "count", spy_count)
    m = mixture(smollm_path)
    for text in ("Say hi.", "apple " * 1000):  # 1,000 tokens: well inside the 8,192-token context
        for mix in ("solo", "both"):
            assert [c.name for c in prepared(m, mix, text).ctx.candidates][0] == "smol"
    assert (loads, counts) == ([], [])
    prepared(m, "solo", APPLES)  # near the context: counted, as the spies see
    assert (len(loads), len(counts)) == (1, 1)


def test_a_vocabulary_that_cannot_be_loaded_leaves_the_estimate(smollm_path: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)  # not a model llama.cpp can read
    prep = prepared(mixture(smollm_path, broken), "pair", APPLES)
    assert [c.name for c in prep.ctx.candidates] == ["smol"]
    assert prep.ctx.excluded["broken"] == "prompt ~11851 tokens exceeds context 8192"


async def test_the_count_is_the_prompt_llama_cpp_reads(smollm_path: Path) -> None:
    from moai.providers.llama_cpp import prompt_tokens

    card = complete_card("smol", ModelCard(provider="local", path=str(smollm_path), privacy="local", context=2048))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit, in Thai: ผลไม้"}]
    tools = [{"type": "function", "function": {"name": "fruit", "parameters": {"type": "object"}}}]
    counted = prompt_tokens(card, messages, tools)
    done = await LlamaCppProvider(card).complete(ChatParams(messages=messages, max_tokens=1, tools=tools))
    assert counted == done.usage.prompt_tokens


def test_the_tool_calls_of_earlier_turns_are_counted_with_the_prompt() -> None:
    """An agent's history may be mostly calls: Qwen's template renders their arguments into the prompt, though
    they are no message text (4,568 tokens here, where the text alone seems 10)."""
    from moai import local_models

    qwen = local_models.pull("qwen2.5-coder-0.5b")
    m = Mixture(parse_config(f"""models:
  qwen: {{provider: local, path: '{qwen}', context: 4096, supports_tools: true}}
  cloud: {{provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: cloud, context: 128000}}
mixes:
  both: {{strategy: route, models: [qwen, cloud], weights: {{quality: 0, latency: 1}}}}
"""))
    args = '{"rows": "' + "7, " * 1500 + '"}'
    body = {"model": "moai/both", "messages": [
        {"role": "user", "content": "Sum the rows."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "sum_rows", "arguments": args}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
        {"role": "user", "content": "And now?"}]}
    prep = m.prepare(ChatCompletionRequest.model_validate(body))
    assert [c.name for c in prep.ctx.candidates] == ["cloud"]
    found = re.fullmatch(r"prompt (\d+) tokens by its own tokenizer exceeds context 4096", prep.ctx.excluded["qwen"])
    assert found and int(found[1]) > 4500, prep.ctx.excluded


def test_a_prompt_that_fills_the_context_leaves_no_room_to_answer(smollm_path: Path) -> None:
    """llama.cpp refuses a prompt as long as its context (nothing could be written): such a model is no choice."""
    from moai.providers.llama_cpp import prompt_tokens

    card = complete_card("smol", ModelCard(provider="local", path=str(smollm_path), privacy="local", context=8192))
    text = "apple " * 7900
    n = prompt_tokens(card, [{"role": "user", "content": text}])
    assert n is not None and n < 8192
    text += "apple " * (8192 - n)  # one token an "apple ": the prompt is now the whole context
    assert prompt_tokens(card, [{"role": "user", "content": text}]) == 8192
    prep = prepared(mixture(smollm_path), "both", text)
    assert [c.name for c in prep.ctx.candidates] == ["cloud"]
    assert prep.ctx.excluded["smol"] == "prompt 8192 tokens by its own tokenizer exceeds context 8192"
    with pytest.raises(BadRequest, match="more than any model's context"):
        prepared(mixture(smollm_path), "solo", text)


def test_models_the_request_cannot_use_are_not_counted(smollm_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from moai.providers import local_tokens

    counts: list[int] = []
    real_count = local_tokens.Tokenizer.count

    def spy_count(self: Any, *args: Any, **kw: Any) -> int:
        counts.append(1)
        return real_count(self, *args, **kw)

    monkeypatch.setattr(local_tokens.Tokenizer, "count", spy_count)
    m = mixture(smollm_path)
    assert [c.name for c in prepared(m, "both", APPLES, moai={"models": ["cloud"]}).ctx.candidates] == ["cloud"]
    assert [c.name for c in prepared(m, "both", APPLES, moai={"exclude": ["smol"]}).ctx.candidates] == ["cloud"]
    assert counts == []
    prepared(m, "both", APPLES)
    assert counts == [1]


def test_a_vocabulary_replaced_on_disk_frees_the_old_one_and_a_closed_one_is_never_read(smollm_path: Path,
                                                                                       tmp_path: Path) -> None:
    import os

    from moai.providers import local_tokens

    copy = tmp_path / "smol.gguf"
    os.link(smollm_path, copy) if os.stat(smollm_path).st_dev == os.stat(tmp_path).st_dev else copy.symlink_to(
        smollm_path)
    first = local_tokens.tokenizer(str(copy))
    assert first is not None and first.count([{"role": "user", "content": "hi"}]) > 0
    st = os.stat(copy)
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "a new version" of the file
    second = local_tokens.tokenizer(str(copy))
    assert second is not None and second is not first
    assert [k for k in local_tokens._tokenizers if k[0] == str(copy)] == [local_tokens._key(str(copy))]
    assert first.model is None  # freed
    with pytest.raises(RuntimeError, match="closed"):
        first.count([{"role": "user", "content": "hi"}])  # not a read of freed memory
    assert second.count([{"role": "user", "content": "hi"}]) > 0
