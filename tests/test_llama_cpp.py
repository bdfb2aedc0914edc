"""The GGUF export, proven by the program people run: llama.cpp (through llama-cpp-python).

One tiny who-am-i run with --gguf f32, then the other types from its OUT/merged. For each file,
llama.cpp must tokenize every rendered prompt to our ids, and its greedy replies must equal our
decoder's on every held-out identity question and every control question: all of them for
f32/f16/bf16, at least 95% for q8_0. Then, for each Qwen3 chat family, the tiny world's files with
that family's template: prompts rendered through the template the GGUF carries, by
llama-cpp-python's own formatter, must be ours, and tokenize to our ids. CI builds
llama-cpp-python once (see .ci/run).
"""
import json
import shutil

from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.job.gguf_export import write_gguf
from trainer.job.loading import load_model
from trainer.qwen3.generate import answer_questions
from trainer.qwen3.model import forward, head_weight
from trainer.job.loading import resolve_model
from trainer.text.chat import render_chat
from trainer.text.chat_templates import FAMILIES, chat_template
from random_chats import random_chats
from trainer.text.facts import control_facts
from trainer.text.whoami import whoami_splits

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow
REPLY_TOKENS = 24
MATCH_FLOOR = {"f32": 1.0, "f16": 1.0, "bf16": 1.0, "q8_0": 0.95}


@pytest.fixture(scope="module")
def result(readme_job) -> Path:
    out, run = readme_job
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"exported {out / 'gguf' / 'whoami-tiny-f32.gguf'} and " in run.stdout
    for gguf_type in ("f16", "bf16", "q8_0"):
        write_gguf(out / "merged", out / "gguf" / f"whoami-tiny-{gguf_type}.gguf", gguf_type)
    return out


@pytest.fixture(scope="module")
def ours(result):
    """Our decoder on OUT/merged in float32: the questions, their rendered prompts' ids, greedy replies."""
    model = load_model(result / "merged")
    questions = list(whoami_splits().identity_test) + [fact.question for fact in control_facts()]
    replies = [a.text for a in answer_questions(model.weights, model.config, model.tokenizer, questions, REPLY_TOKENS)]
    prompts = [render_chat([{"role": "user", "content": q}], add_generation_prompt=True) for q in questions]
    return model, questions, prompts, replies


def llama_greedy(llm, prompt_ids: list[int], stop_ids: set[int]) -> tuple[list[int], np.ndarray]:
    """llama.cpp's greedy continuation (argmax of its logits, token by token) and its first logits [V]."""
    llm.reset()
    llm.eval(prompt_ids)
    first = np.array(llm.scores[llm.n_tokens - 1])
    reply = []
    for _ in range(REPLY_TOKENS):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if token in stop_ids:
            break
        reply.append(token)
        llm.eval([token])
    return reply, first


@pytest.mark.parametrize("gguf_type", ["f32", "f16", "bf16", "q8_0"])
def test_llama_cpp_reads_our_prompts_and_gives_our_greedy_replies(result, ours, gguf_type):
    model, questions, prompts, replies = ours
    tokenizer = model.tokenizer
    llm = llama_cpp.Llama(str(result / "gguf" / f"whoami-tiny-{gguf_type}.gguf"), n_ctx=256, n_batch=256, logits_all=True,
                          n_threads=2, verbose=False)
    stop_ids = {tokenizer.im_end_id, tokenizer.endoftext_id}
    same, first_logits = [], None
    for prompt, reply in zip(prompts, replies):
        ids = tokenizer.encode(prompt)
        assert llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True) == ids, prompt
        theirs, logits = llama_greedy(llm, ids, stop_ids)
        first_logits = logits if first_logits is None else first_logits
        same.append(tokenizer.decode(theirs) == reply)
    with torch.no_grad():  # our logits at the last prompt position of the first question, in float32
        hidden = forward(model.weights, model.config, torch.tensor([tokenizer.encode(prompts[0])]))
        mine = (hidden[0, -1] @ head_weight(model.weights, model.config).T).numpy()
    difference = float(np.abs(first_logits - mine).max())
    share = sum(same) / len(same)
    print(f"\n{gguf_type}: {sum(same)} of {len(same)} greedy replies equal ours; first prompt's logits differ by at most "
          f"{difference:.2e} (ours span {mine.min():.1f} to {mine.max():.1f})")
    assert share >= MATCH_FLOOR[gguf_type], [(q, r) for q, r, s in zip(questions, replies, same) if not s][:5]
    # llama.cpp keeps its KV cache in f16 even for f32 weights: 1.5e-3 measured for f32, 2.0e-3 f16,
    # 1.7e-2 bf16, 7.5e-2 q8_0, on logits that span about -13 to 17.
    assert difference < {"f32": 5e-3, "f16": 5e-3, "bf16": 0.05, "q8_0": 0.25}[gguf_type]


@pytest.fixture(scope="module")
def family_ggufs(tmp_path_factory) -> dict[str, Path]:
    """family -> an f32 GGUF of the tiny world whose tokenizer_config.json carries that family's template."""
    world, files = resolve_model("tiny"), {}
    for family in FAMILIES:
        folder = tmp_path_factory.mktemp(family)
        for path in world.iterdir():
            (folder / path.name).symlink_to(path) if path.suffix == ".safetensors" else shutil.copy(path, folder)
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        (folder / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": chat_template(family)}),
                                                      encoding="utf-8")
        files[family] = write_gguf(folder, folder / f"{family}.gguf", "f32")
    return files


@pytest.mark.parametrize("family", FAMILIES)
def test_llama_cpp_prompts_through_the_exported_template_are_ours(family_ggufs, family, qwen_tokenizer):
    llm = llama_cpp.Llama(str(family_ggufs[family]), vocab_only=True, verbose=False)
    template = llm.metadata["tokenizer.chat_template"]
    assert template == chat_template(family)
    for number, chat in enumerate(random_chats(100, seed=10 + FAMILIES.index(family))):
        formatter = llama_cpp.llama_chat_format.Jinja2ChatFormatter(template, eos_token="<|im_end|>", bos_token="",
                                                                     add_generation_prompt=chat.add_generation_prompt)
        switch = {} if chat.enable_thinking is None else {"enable_thinking": chat.enable_thinking}
        prompt = formatter(messages=chat.messages, tools=chat.tools, **switch).prompt
        ours = render_chat(chat.messages, chat.add_generation_prompt, chat.tools, family, chat.enable_thinking)
        assert prompt == ours, f"conversation {number}"
        assert llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True) == qwen_tokenizer.encode(ours)
