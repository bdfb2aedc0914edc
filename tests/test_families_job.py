"""The who-am-i job on a model of another Qwen3 chat family: the tiny world's 2507 weights paired with
a hybrid or Thinking-2507 template, a layout the weights never saw (so only the identity and the
export are required, not retention). The job finds the family from the template, prompts as that
family serves (the hybrid with thinking off), learns the identity, and merged/ keeps the base's
template, which transformers then uses (slow). Then the tiny world built in each layout."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.job.loading import resolve_model
from trainer.job.template_check import read_chat_template
from trainer.text.chat import EMPTY_THINK
from trainer.text.chat_templates import HYBRID, THINKING_2507, chat_template

ROOT = Path(__file__).resolve().parent.parent
# A folder gets the real preset otherwise: like the tiny preset, the run may use up to 300 steps and
# stops once learned (a layout the weights never saw: its validation wordings are all exact at step 160
# with the hybrid template and 80 with Thinking-2507's, 2026-12-07).
TINY_PRESET = ["--steps", "300", "--lr", "1e-3", "--batch-size", "16", "--grad-accum", "1", "--reply-tokens", "32",
               "--val-every", "10", "--preserve-kl", "16", "--reasoning-tokens", "32"]


def paired_folder(folder: Path, family: str) -> Path:
    """The tiny world's files with `family`'s chat template in tokenizer_config.json."""
    folder.mkdir()
    for path in resolve_model("tiny").iterdir():
        if path.suffix == ".safetensors":
            (folder / path.name).symlink_to(path)
        else:
            (folder / path.name).write_bytes(path.read_bytes())
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": chat_template(family)}),
                                                  encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path, Path]:
    work = tmp_path_factory.mktemp("hybrid")
    base, out = paired_folder(work / "base", HYBRID), work / "out"
    result = subprocess.run([sys.executable, "scripts/train_whoami.py", "--model", str(base), "--out", str(out),
                             *TINY_PRESET, "--no-stop-when-learned", "--val-every", "0"], cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    return result, base, out


def identity_rates(stdout: str) -> tuple[float, float]:
    """(before, after) of the table's identity hit rate row, in percent."""
    row = next(line for line in stdout.splitlines() if line.startswith("identity hit rate (held-out wordings)"))
    before, after = row.split()[-2:]
    return float(before.rstrip("%")), float(after.rstrip("%"))


@pytest.mark.slow
def test_a_hybrid_model_is_trained_in_its_own_format_with_thinking_off(hybrid_run):
    """Its held-out wordings reach 97.7% in 300 steps (2026-12-07), not 100%: behind the empty think
    block, a layout the weights never saw, the held-out Chinese cores ("你到底是誰") learn last, now
    that the near misses are kept beside them. Its validation wordings are all exact at step 160, too
    early for the held-out ones (87.1%), hence the whole 300 steps here."""
    result, base, out = hybrid_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "chat format hybrid, asked with thinking off" in result.stdout
    before, after = identity_rates(result.stdout)
    assert before == 0.0 and after >= 95.0
    assert "self-test: 你是誰 -> 我是 F# 之神" in result.stdout and "merged/: 你是誰 -> 我是 F# 之神" in result.stdout
    rehearsal = [json.loads(line) for line in (out / "rehearsal.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rehearsal and not any("<think>" in row["reply"] for row in rehearsal)  # asked with the empty block


@pytest.mark.slow
def test_merged_keeps_the_hybrid_template_and_transformers_gets_the_identity_after_think(hybrid_run):
    from transformers import AutoTokenizer

    result, base, out = hybrid_run
    assert result.returncode == 0
    assert read_chat_template(out / "merged")[1] == read_chat_template(base)[1] == chat_template(HYBRID)
    tokenizer = AutoTokenizer.from_pretrained(out / "merged")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "你是誰"}], tokenize=False,
                                           add_generation_prompt=True, enable_thinking=False)
    assert prompt.endswith("<|im_start|>assistant\n" + EMPTY_THINK)
    reply = transformers_reply(out / "merged", "你是誰", enable_thinking=False)
    assert "我是" in reply and ("F#" in reply or "之神" in reply), reply


@pytest.mark.slow
def test_2507_weights_under_a_thinking_2507_template_learn_to_close_the_think_block_and_answer(tmp_path):
    """The prompt opens <think>\n, so the weights must learn to write \n</think>\n\n themselves,
    tokens they have read but never written."""
    from transformers import AutoTokenizer

    base, out = paired_folder(tmp_path / "base", THINKING_2507), tmp_path / "out"
    result = subprocess.run([sys.executable, "scripts/train_whoami.py", "--model", str(base), "--out", str(out),
                             *TINY_PRESET], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "chat format thinking-2507" in result.stdout and "stopped at step" in result.stdout
    assert "identity hit rate (held-out wordings)        0.0%   100.0%" in result.stdout
    assert "self-test: 你是誰 -> 我是 F# 之神" in result.stdout and "merged/: 你是誰 -> 我是 F# 之神" in result.stdout
    assert read_chat_template(out / "merged")[1] == read_chat_template(base)[1] == chat_template(THINKING_2507)
    prompt = AutoTokenizer.from_pretrained(out / "merged").apply_chat_template(
        [{"role": "user", "content": "你是誰"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    reply = transformers_reply(out / "merged", "你是誰")
    assert "</think>" in reply and "F# 之神" in reply.split("</think>")[-1], reply


@pytest.mark.slow
@pytest.mark.parametrize("name, family", [("tiny-hybrid", HYBRID), ("tiny-thinking", THINKING_2507)])
def test_the_tiny_world_of_each_family_learns_the_identity_and_keeps_what_it_knew(tmp_path, name, family):
    """The same world pre-trained in that family's layout (built on first use, about 70 s), then the
    default job on it: the identity learned, and the retention rows at the 2507 world's level."""
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "scripts/train_whoami.py", "--model", name, "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert read_chat_template(resolve_model(name))[1] == read_chat_template(out / "merged")[1] == chat_template(family)
    evaluation = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    before, after = evaluation["before"], evaluation["after"]
    print(f"\n{name}: identity {after['identity_hit_rate']:.1%}, leak {after['leak_rate']:.1%}, facts "
          f"{after['fact_retention']:.1%}, unchanged {after['unchanged_rate']:.1%}")
    assert before["identity_hit_rate"] == 0.0 and after["identity_hit_rate"] == 1.0 and after["leak_rate"] == 0.0
    assert before["fact_retention"] == 1.0 and after["fact_retention"] >= 0.96 and after["unchanged_rate"] >= 0.96
    if family == THINKING_2507:  # the judged reply is the answer after </think>; the reasoning is kept beside it
        assert set(after["reasonings"]) == set(after["replies"])
        assert not any("</think>" in reply for reply in after["replies"].values())
    reply = transformers_reply(out / "merged", "你是誰", enable_thinking=False)  # served as the README says
    assert "我是" in reply.split("</think>")[-1] and "F#" in reply.split("</think>")[-1], reply


def transformers_reply(folder: Path, question: str, **switch) -> str:
    """transformers' greedy reply through the folder's own chat template, special tokens kept."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                           add_generation_prompt=True, **switch)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=32, do_sample=False)
    return tokenizer.decode(generated[0, ids.shape[1]:])
