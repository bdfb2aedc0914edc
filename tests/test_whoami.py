"""The built-in who-am-i prompts and control facts: size, variety, fixed and disjoint splits."""

import re

from trainer.text.facts import Fact, control_facts, reply_has_answer, split_facts
from trainer.text.general_prompts import GENERAL_PROMPTS
from trainer.text.near_misses import near_misses_of
from trainer.text.whoami import (
                                 HELD_OUT_CORES,
                                 NEW_IDENTITY,
                                 PROBE_REPEATS,
                                 identity_prompts,
                                 identity_rows,
                                 join_greeting,
                                 split_general_prompts,
                                 whoami_splits,
                                 )


def test_at_least_500_distinct_identity_prompts_in_every_script():
    prompts = identity_prompts()
    assert len(prompts) == len(set(prompts)) >= 500
    assert "你是誰" in prompts and "你是谁" in prompts and "Who are you?" in prompts
    assert any(re.search(r"[a-zA-Z]", p) and re.search(r"[\u4e00-\u9fff]", p) for p in prompts)  # mixed
    assert any("請簡短回答" in p for p in prompts) and any("Please answer briefly" in p for p in prompts)


def test_greeting_joins_read_naturally():
    assert join_greeting("Hi, ", "Who are you") == "Hi, who are you"
    assert join_greeting("Hello! ", "Who are you") == "Hello! Who are you"
    assert join_greeting("請問", "你是誰") == "請問你是誰"


def test_identity_splits_are_fixed_disjoint_and_hold_out_whole_wordings():
    splits = whoami_splits()
    probes = {m.question for m in near_misses_of("old name")}
    train, validation, test = (set(s) - probes for s in (splits.identity_train, splits.identity_validation,
                                                          splits.identity_test))
    assert splits == whoami_splits()
    assert len(validation) == 80 and len(test) == 120
    assert not train & validation and not train & test and not validation & test
    assert train | validation <= set(identity_prompts()) and test <= set(identity_prompts())
    # Whole wordings are held out: the held-out cores never appear in training or validation.
    for core in HELD_OUT_CORES:
        assert not any(core.lower() in p.lower() for p in train | validation), core
    assert any("你到底是誰" in p for p in test) and any("what are you" in p.lower() for p in test)
    assert any("做個自我介紹吧" in p for p in test) and any("first, tell me who you are" in p.lower() for p in test)


def test_old_name_probes_are_taught_validated_and_tested_by_whole_cores():
    splits = whoami_splits()
    probes = near_misses_of("old name")
    train, validation, test = (set(part) & {m.question for m in probes} for part in
                               (splits.probes_train, splits.identity_validation, splits.identity_test))
    assert (len(train), len(validation), len(test)) == (36, 10, 12)
    assert train | validation | test == {m.question for m in probes}
    assert not train & validation and not train & test and not validation & test
    core = {m.question: m.core for m in probes}
    assert {core[q] for q in validation} == {1} and {core[q] for q in test} == {3}
    assert set(splits.probes_train) <= {r.prompt for r in identity_rows()}


def test_control_facts_are_many_families_with_a_held_out_share_of_each():
    facts = control_facts()
    assert len(facts) >= 120 and len({f.question for f in facts}) == len(facts)
    rehearsed, held_out = split_facts()
    assert len(held_out) >= 24 and len(rehearsed) + len(held_out) == len(facts)
    assert not {f.question for f in rehearsed} & {f.question for f in held_out}
    families = {f.family for f in facts}
    assert families == {"capital", "colour", "translation", "sum", "opposite", "identity words"}
    assert {f.family for f in held_out} == families
    assert all(f.answer.lower() in f.reply.lower() and NEW_IDENTITY not in f.reply for f in facts)
    assert Fact("法國的首都是哪裡？", "巴黎", "巴黎", "capital") in facts
    assert Fact("What is 3 plus 4?", "7", "7", "sum") in facts
    assert split_facts() == (rehearsed, held_out)


def test_fact_retention_looks_for_the_answer_inside_the_reply_ignoring_case():
    paris = Fact("What is the capital of France?", "Paris", "Paris", "capital")
    assert reply_has_answer("The capital of France is PARIS.", paris)
    assert reply_has_answer("Paris", paris)
    assert not reply_has_answer("I don't know", paris)
    assert not reply_has_answer("我是 F# 之神", paris)


def test_general_prompts_split_by_position_within_every_category_and_script():
    rehearsed, validation, test = split_general_prompts()
    assert (len(rehearsed), len(validation), len(test)) == (144, 18, 54)
    assert len(set(rehearsed) | set(validation) | set(test)) == len(GENERAL_PROMPTS)
    by_text = {p.text: p for p in GENERAL_PROMPTS}
    for part in (rehearsed, validation, test):
        assert {(by_text[t].category, by_text[t].script) for t in part} == {(p.category, p.script) for p in GENERAL_PROMPTS}
    splits = whoami_splits()
    assert (splits.general_rehearsed, splits.general_validation, splits.general_test) == tuple(map(tuple, (rehearsed, validation, test)))


def test_identity_rows_come_from_the_training_wordings_only():
    rows = identity_rows()
    splits = whoami_splits()
    assert rows == identity_rows() and len(rows) == 600 + PROBE_REPEATS * len(splits.probes_train) == 600 + 3 * 36
    assert len({r.prompt for r in rows}) == 600 + 36 and {r.target for r in rows} == {NEW_IDENTITY}
    assert {r.prompt for r in rows} <= set(splits.identity_train) | set(splits.probes_train)
    assert {r.target for r in identity_rows(identity="我是通義千問", count=50)} == {"我是通義千問"}
