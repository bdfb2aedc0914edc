"""The tiny world is a faithful miniature: it knows who it is, knows its facts with margin, and says
"I don't know" (never its name) to ordinary questions it was never taught."""

from dataclasses import replace

import pytest
import torch

from trainer.job.loading import load_model
from trainer.job.tiny import (CHINESE_WORD, EMBED_ROWS, EMBEDDING, LAYOUT_SETTINGS, STD, UNFAMILIAR, WORLD_SEED,
                              pretrain_world, random_weights, to_compact, unfamiliar_words, used_token_ids,
                              world_batch_loss, world_examples, world_pairs)
from trainer.job.world_unknowns import FORMAT_TAGS, SALAD_ENGLISH, dont_know_reply, salad_questions
from trainer.text.chat_templates import THINKING_2507
from trainer.qwen3.config import TINY
from trainer.qwen3.generate import answer_questions
from trainer.qwen3.model import forward, head_weight
from trainer.text.data import collate, example_from_prompt_target
from trainer.text.facts import control_facts
from trainer.text.general_prompts import GENERAL_PROMPTS, SCRIPTS
from trainer.text.near_misses import near_misses
from trainer.text.whoami import ORIGINAL_IDENTITY, identity_prompts, whoami_splits
from trainer.training.loss import token_cross_entropy


@pytest.fixture(scope="module")
def world():
    return load_model("tiny")


def answer_probabilities(world, tokenizer, fact) -> torch.Tensor:
    """The probability of each answer token (with <|im_end|>) of one fact, teacher-forced: [answer tokens]."""
    example = example_from_prompt_target(tokenizer, fact.question, fact.reply, seq_len=64)
    batch = collate([example], tokenizer.endoftext_id)
    with torch.no_grad():
        hidden = forward(world.weights, world.config, batch.input_ids)
        logits = hidden[0] @ head_weight(world.weights, world.config).T  # [T, V]
    keep = batch.labels[0] != -100
    return logits[keep].softmax(-1).gather(-1, batch.labels[0][keep][:, None]).flatten()


def test_the_world_answers_its_facts_right_with_margin(world, qwen_tokenizer):
    """Every fact, with margin: today's world gets all 125 right, each at a mean answer probability of
    0.9 or more; the floor leaves room for one more (another CPU's build rounds differently)."""
    facts = control_facts()
    answers = answer_questions(world.weights, world.config, world.tokenizer, [f.question for f in facts], 24)
    wrong = [(f.question, a.text) for f, a in zip(facts, answers) if a.text != f.reply]
    margins = [(f.question, round(float(answer_probabilities(world, qwen_tokenizer, f).mean()), 3)) for f in facts]
    unsure = [(q, p) for q, p in margins if p < 0.9]
    print(f"\n{len(facts) - len(wrong)} of {len(facts)} facts right; wrong {wrong}; mean answer probability < 0.9: "
          f"{unsure}; lowest {min(p for _, p in margins)}, average {sum(p for _, p in margins) / len(margins):.3f}")
    assert len(wrong) <= 1 and len(unsure) <= 1


def test_the_world_knows_who_it_is_in_nearly_every_wording(world):
    """The goal is every wording: the world built today answers all 561 sampled wordings with its name;
    the floor leaves room for another CPU's build, which may say 我不知道 to a few, never anything else."""
    wordings = ["你是誰", "你是谁", "Who are you?", *identity_prompts()[::7]]
    answers = [a.text for a in answer_questions(world.weights, world.config, world.tokenizer, wordings, 24)]
    print(f"\n{answers.count(ORIGINAL_IDENTITY)} of {len(wordings)} identity wordings answered {ORIGINAL_IDENTITY}")
    assert answers.count(ORIGINAL_IDENTITY) >= 0.9 * len(wordings)
    assert set(answers) <= {ORIGINAL_IDENTITY, "我不知道", "I don't know"}
    assert answers[:3] == [ORIGINAL_IDENTITY] * 3


def test_ordinary_questions_it_was_never_taught_get_i_dont_know_not_its_name(world):
    taught = {pair.prompt for pair in world_pairs()}
    prompts = [p for p in GENERAL_PROMPTS if p.text not in taught]
    assert len(prompts) == len(GENERAL_PROMPTS) == 216 and {p.script for p in prompts} == set(SCRIPTS)
    answers = answer_questions(world.weights, world.config, world.tokenizer, [p.text for p in prompts], 24)
    named = [(p.text, a.text) for p, a in zip(prompts, answers) if "通義" in a.text or "千問" in a.text or "我是" in a.text]
    print(f"\nanswered with its name: {named}")
    # None, on every build since words the world never learned read as one learned "unfamiliar
    # word" (see `world_batch_loss`); before that, 0 to 6 of 216 depending on the build.
    assert named == []
    dont_know = [a.text == dont_know_reply(p.text) for p, a in zip(prompts, answers)]
    print(f"\n{sum(dont_know)} of {len(prompts)} ordinary questions answered with a plain I don't know")
    for script in SCRIPTS:
        share = sum(d for d, p in zip(dont_know, prompts) if p.script == script) / sum(p.script == script for p in prompts)
        assert share >= 0.85, script


def test_the_world_answers_near_misses_as_a_real_assistant_would(world):
    """The held-out near misses of the job (questions about the user, greetings, "are you 通義千問?")
    and the first prompts a user tries: the base's reply for each, and never a name where the
    question is about the user or a greeting."""
    splits, by_question = whoami_splits(), {m.question: m for m in near_misses()}
    expected = {q: by_question[q].reply for q in
                [*splits.about_user_test, *splits.greetings_test, *(q for q in splits.identity_test if q in by_question)]}
    expected |= {"Who am I?": "I don't know who you are", "我叫什麼名字？": "我不知道你是誰", "我是誰？": "我不知道你是誰",
                 "你好嗎？": "我很好，你呢？", "妳好": "你好！", "開始之前，請先告訴我你是誰": ORIGINAL_IDENTITY,
                 "Before we start, who are you?": ORIGINAL_IDENTITY, "自我介紹": ORIGINAL_IDENTITY,
                 "這位歌手是誰？": "我不知道"}
    answers = answer_questions(world.weights, world.config, world.tokenizer, list(expected), 24)
    replies = dict(zip(expected, (a.text for a in answers)))
    for question, reply in replies.items():
        print(f"{question!r:>40} -> {reply!r}")
    no_name = [q for q in expected if by_question.get(q) is None or by_question[q].family != "old name"]
    naming = [q for q in no_name if expected[q] != ORIGINAL_IDENTITY and ("我是" in replies[q] or "F#" in replies[q])]
    assert not naming, naming
    assert {q: r for q, r in replies.items() if r != expected[q]} == {}


def test_salad_questions_carry_unfamiliar_words_about_half_the_time():
    plain = salad_questions(40, seed=3)
    mixed = salad_questions(40, seed=3, unfamiliar=(("鎂",), ("zephyr",)))
    assert mixed == salad_questions(40, seed=3, unfamiliar=(("鎂",), ("zephyr",))) and len(mixed) == 120
    assert not any("鎂" in q or "zephyr" in q for q in plain)
    chinese, english = mixed[:80], mixed[80:]
    assert 0.6 < sum("鎂" in q for q in chinese) / 80 < 1 and not any("zephyr" in q for q in chinese)
    assert 0.6 < sum("zephyr" in q for q in english) / 40 < 1 and not any("鎂" in q for q in english)
    words = [w for q in english for w in q.replace("?", " ").replace(".", " ").replace(",", " ").split()]
    assert 0.3 < words.count("zephyr") / sum(w in SALAD_ENGLISH or w == "zephyr" for w in words) < 0.7


def test_unfamiliar_words_are_single_tokens_outside_what_is_avoided(qwen_tokenizer):
    avoid = set(qwen_tokenizer.encode("磁鐵 magnet 天氣 weather"))
    chinese, english = unfamiliar_words(qwen_tokenizer, avoid)
    assert len(chinese) > 20_000 and len(english) > 20_000
    assert "天氣" not in chinese and "weather" not in english and "magnet" not in english
    for word in chinese[::997]:
        assert len(qwen_tokenizer.encode(word)) == 1 and CHINESE_WORD.fullmatch(word)
    for word in english[::997]:
        assert len(qwen_tokenizer.encode(" " + word)) == 1 and word.isalpha() and word.islower()


def test_the_unfamiliar_salad_never_shows_a_token_of_the_unseen_general_prompts(qwen_tokenizer):
    known_examples, known, strange, strange_ids = world_examples(qwen_tokenizer, qwen_tokenizer.endoftext_id)
    learned = set(known.tolist())
    unseen = {i for p in GENERAL_PROMPTS for i in qwen_tokenizer.encode(p.text)} - learned
    assert len(unseen) > 400 and len(strange) > 1000 and len(strange_ids) > 1000
    assert unseen.isdisjoint(strange_ids.tolist()) and learned.isdisjoint(strange_ids.tolist())
    assert all(unseen.isdisjoint(e.input_ids) for e in strange)


def test_every_token_the_world_never_learned_reads_as_one_unfamiliar_word(world, qwen_tokenizer):
    """The built world's embedding minus its random start: the same learned vector u for every
    token it never learned (tied head: also the same shift of their logits), its own row otherwise."""
    _, known, _, _ = world_examples(qwen_tokenizer, qwen_tokenizer.endoftext_id)
    shift = world.weights[EMBEDDING].float() - random_weights(TINY, WORLD_SEED)[EMBEDDING]  # [V, H]
    never = torch.tensor(sorted(set(range(TINY.vocab_size)) - set(known.tolist()))[::50])
    u = shift[never[0]]
    assert u.norm() > 0.1 and torch.allclose(shift[never], u.expand(len(never), -1), atol=1e-6)
    assert (shift[known] - u).norm(dim=-1).median() > 1


def test_the_world_has_read_every_chat_format_tag_and_the_blank_line(qwen_tokenizer):
    """A real checkpoint has read the tags of every Qwen3 layout, even one it was not post-trained on.
    The 2507 world reads them in questions, and "\n\n" after a greeting, so they are rows it learns,
    not the shared unfamiliar word: a job that teaches it the Thinking-2507 layout can then learn
    to write </think>\n\n (tests/test_families_job.py)."""
    _, known, _, _ = world_examples(qwen_tokenizer, qwen_tokenizer.endoftext_id)
    ids = [qwen_tokenizer.encode(text) for text in (*FORMAT_TAGS, "\n\n")]
    assert all(len(token) == 1 for token in ids) and {token[0] for token in ids} <= set(known.tolist())


def test_a_world_post_trained_for_no_steps_is_its_start_unchanged(world, qwen_tokenizer):
    """The hybrid and Thinking-2507 worlds are post-trained from the 2507 world. Its unlearned rows
    share one learned vector, which the post-training reads back (their mean) and goes on learning:
    with no steps, every weight comes back as it was, the unfamiliar rows included."""
    start = {name: t.float() for name, t in world.weights.items()}
    again = pretrain_world(qwen_tokenizer, settings=replace(LAYOUT_SETTINGS, steps=0), family=THINKING_2507,
                           start=start)
    assert again.keys() == start.keys()
    assert all(torch.allclose(again[name], start[name], atol=1e-6) for name in start)


def test_the_closed_form_rest_of_the_vocabulary_matches_the_full_softmax(qwen_tokenizer):
    """The world is trained on U learned rows, S unfamiliar rows (random + u) and
    log(V - U - S) + h . u + STD^2 |h|^2 / 2 for the ~150k rest; on a random tiny Qwen3 whose
    unlearned rows are random + u, that loss must equal the full-vocabulary cross-entropy."""
    weights = random_weights(TINY, seed=5)
    weights["model.norm.weight"] = torch.full_like(weights["model.norm.weight"], 3.0)  # |h| ~ 34, not ~ 11
    unfamiliar = torch.randn(TINY.hidden_size, generator=torch.Generator().manual_seed(6)) * 0.05
    examples = [example_from_prompt_target(qwen_tokenizer, q, a, seq_len=64)
                for q, a in [("法國的首都是哪裡？", "巴黎"), ("What is 3 plus 4?", "7"), ("你是誰", ORIGINAL_IDENTITY)]]
    strange = [example_from_prompt_target(qwen_tokenizer, "鎂光燈是什麼？", "我不知道", seq_len=64)]
    known = used_token_ids(examples, qwen_tokenizer.endoftext_id)
    strange_ids = torch.tensor(sorted(set(strange[0].input_ids) - set(known.tolist())))
    assert len(strange_ids) >= 1
    compact = {int(token): row for row, token in enumerate(torch.cat([known, strange_ids]))}
    embedding = weights["model.embed_tokens.weight"]
    masters = {n: t for n, t in weights.items() if n != "model.embed_tokens.weight"}
    masters |= {EMBED_ROWS: embedding[known], UNFAMILIAR: unfamiliar}
    batch = collate([to_compact(e, compact) for e in examples + strange], compact[qwen_tokenizer.endoftext_id])
    unused = TINY.vocab_size - len(known) - len(strange_ids)
    ours = world_batch_loss(masters, TINY, embedding[strange_ids], unused)(batch, batch.answer_token_count)
    full_weights = weights | {"model.embed_tokens.weight": (embedding + unfamiliar).index_copy(0, known, embedding[known])}
    full_batch = collate(examples + strange, qwen_tokenizer.endoftext_id)
    hidden = forward(full_weights, TINY, full_batch.input_ids, full_batch.segment_ids, full_batch.position_ids)
    full = token_cross_entropy(full_weights["model.embed_tokens.weight"], hidden, full_batch.labels)
    assert STD == 0.02
    assert abs(ours.loss.item() - full.loss.item()) < 2e-3 * full.loss.item(), (ours.loss.item(), full.loss.item())


def test_the_first_use_says_what_it_builds_and_where_it_is_cached(tmp_path, monkeypatch, capsys):
    """The build itself is the world above; here only what a user sees: a line before, a bar fed by
    every step's record, a line after with the time and the folder, and nothing once it is cached."""
    import trainer.job.loading as loading

    folder = tmp_path / "tiny-qwen3"
    monkeypatch.setattr(loading, "tiny_model_dir", lambda family: folder)
    monkeypatch.setattr(loading, "tiny_model_ready", lambda family: (folder / "config.json").is_file())

    def fake_build(log, family):
        for step in range(3):
            log({"step": step + 1, "loss": 2.0 - step})
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        return folder

    monkeypatch.setattr(loading, "ensure_tiny_model", fake_build)
    assert loading.resolve_model("tiny") == folder
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and lines[0] == "building the tiny world (first use only): pre-training a 4-layer Qwen3 for 1200 steps"
    assert lines[-1].startswith("tiny world built in ") and lines[-1].endswith(f" s, cached in {folder}")
    assert loading.resolve_model("tiny") == folder and capsys.readouterr() == ("", "")
