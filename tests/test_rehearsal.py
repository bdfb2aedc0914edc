"""Self-distilled rehearsal: the base's own replies, cut-off replies without <|im_end|>, the file, --resume."""

import pytest

import trainer.job.rehearsal as rehearsal
from trainer.errors import TrainerError
from trainer.job.examples import build_examples
from trainer.job.loading import load_model
from trainer.job.rehearsal import (RehearsalRow, as_samples, fixed_rows, read_rehearsal, rehearsal_rows,
                                   self_distilled_rows, write_rehearsal)
from trainer.job.settings import WhoAmISettings, resolve_settings
from trainer.qwen3.generate import Answer, generate
from trainer.text.chat import render_chat
from trainer.text.facts import split_facts

PROMPTS = ["法國的首都是哪裡？", "What is 3 plus 4?", "一週有幾天？", "Name a fruit.", "你是誰"]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def test_rows_are_the_base_models_own_greedy_replies(tiny):
    rows = self_distilled_rows(tiny.weights, tiny.config, tiny.tokenizer, PROMPTS, "train", max_new_tokens=32)
    stop = [tiny.tokenizer.im_end_id, tiny.tokenizer.endoftext_id]
    for row, prompt in zip(rows, PROMPTS, strict=True):
        ids = tiny.tokenizer.encode(render_chat([{"role": "user", "content": prompt}], add_generation_prompt=True))
        alone = generate(tiny.weights, tiny.config, ids, 32, stop)  # one at a time, unbatched
        assert (row.prompt, row.reply, row.finished, row.split) == (prompt, tiny.tokenizer.decode(alone), True, "train")
    assert [rows[0].reply, rows[4].reply] == ["巴黎", "我是通義千問"]


def test_a_reply_cut_at_its_budget_is_trained_without_the_end_token(tiny):
    cut = self_distilled_rows(tiny.weights, tiny.config, tiny.tokenizer, ["你是誰"], "train", max_new_tokens=2)[0]
    whole = self_distilled_rows(tiny.weights, tiny.config, tiny.tokenizer, ["你是誰"], "train", max_new_tokens=32)[0]
    assert not cut.finished and whole.finished and whole.reply.startswith(cut.reply) and cut.reply != whole.reply
    (cut_example, whole_example), _ = build_examples(as_samples([cut, whole]), tiny.tokenizer, seq_len=64)
    im_end = tiny.tokenizer.im_end_id
    answer = lambda example: [label for label in example.labels if label != -100]  # noqa: E731
    assert answer(whole_example)[-1] == im_end
    assert im_end not in answer(cut_example) and answer(cut_example) == tiny.tokenizer.encode(cut.reply)


def test_empty_replies_are_dropped_and_cut_characters_trimmed(monkeypatch):
    answers = [Answer("", True), Answer("巴黎", True), Answer("The answer is", False)]
    monkeypatch.setattr(rehearsal, "answer_questions", lambda *args, **kwargs: answers)
    rows = self_distilled_rows(None, None, None, ["a", "b", "c"], "validation", max_new_tokens=3)
    assert rows == [RehearsalRow("b", "巴黎", True, "validation"), RehearsalRow("c", "The answer is", False, "validation")]
    assert [s.ends_turn for s in as_samples(rows, "validation")] == [True, False] and as_samples(rows) == []


def test_fixed_rows_are_the_hand_written_fact_answers():
    facts, _ = split_facts()
    rows = fixed_rows(facts)
    assert [(r.prompt, r.reply, r.finished, r.split) for r in rows] == [(f.question, f.reply, True, "train") for f in facts]


def test_file_round_trip_and_a_damaged_line_named(tmp_path):
    rows = [RehearsalRow("法國的首都是哪裡？", "巴黎", True, "train"), RehearsalRow("Explain tides.", "Tides are", False, "validation")]
    write_rehearsal(tmp_path / "rehearsal.jsonl", rows)
    assert read_rehearsal(tmp_path / "rehearsal.jsonl") == rows
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "reply": "b", "finished": true, "split": "train"}\n{"prompt": 1}\n')
    with pytest.raises(TrainerError, match=r"bad.jsonl:2: expected a JSON object with prompt, reply, finished and split"):
        read_rehearsal(tmp_path / "bad.jsonl")


def test_resume_reads_the_rehearsal_file_instead_of_generating(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    saved = [RehearsalRow("q", "the base's reply", True, "train")]
    write_rehearsal(out / "rehearsal.jsonl", saved)
    generated = []

    def fake_generation(weights, config, tokenizer, prompts, split, max_new_tokens, progress, chat):
        generated.append((split, len(prompts)))
        return [RehearsalRow(p, "new", True, split) for p in prompts]

    monkeypatch.setattr(rehearsal, "self_distilled_rows", fake_generation)
    path = out / "rehearsal.jsonl"
    assert rehearsal_rows("self", {}, None, None, 32, path, reuse=True, write=True) == saved and generated == []
    rows = rehearsal_rows("self", {}, None, None, 32, path, reuse=False, write=True)
    assert generated == [("train", 94 + 144 + 105), ("validation", 18 + 55)] and len(rows) == 94 + 144 + 105 + 18 + 55
    assert read_rehearsal(out / "rehearsal.jsonl") == rows  # written for a later --resume


def test_rehearsal_defaults_self_with_the_built_in_set_and_none_with_data():
    assert resolve_settings(WhoAmISettings(model="tiny")).rehearsal == "self"
    assert resolve_settings(WhoAmISettings(model="tiny", data="rows.tsv")).rehearsal == "none"
    assert resolve_settings(WhoAmISettings(model="tiny", data="rows.tsv", rehearsal="self")).rehearsal == "self"
    assert resolve_settings(WhoAmISettings(model="tiny")).stop_when_learned is True
    assert resolve_settings(WhoAmISettings(model="tiny", data="rows.tsv")).stop_when_learned is False
    assert resolve_settings(WhoAmISettings(model="tiny", data="rows.tsv")).val_every == 0
    assert resolve_settings(WhoAmISettings(model="tiny", data="rows.tsv", val_every=5)).val_every == 5
    with pytest.raises(TrainerError, match=r"--rehearsal 'base'.*self, fixed, none"):
        resolve_settings(WhoAmISettings(rehearsal="base"))
