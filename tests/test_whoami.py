"""The built-in who-am-i set: size, variety, fixed and disjoint splits."""

import re

from trainer.whoami import (
    CONTROL_FACTS,
    NEW_IDENTITY,
    identity_prompts,
    join_greeting,
    split_control_facts,
    split_identity_prompts,
    whoami_data,
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


def test_identity_split_is_fixed_and_disjoint():
    train, held_out = split_identity_prompts()
    assert (train, held_out) == split_identity_prompts()
    assert not set(train) & set(held_out)
    assert len(train) + len(held_out) == len(identity_prompts())
    # Whole wordings are held out, not only new greetings around seen ones.
    assert any("你到底是誰" in p for p in held_out) and not any("你到底是誰" in p for p in train)
    assert not any("what are you" in p.lower() for p in train)


def test_control_facts_split_is_fixed_and_never_the_identity():
    train, held_out = split_control_facts()
    assert len(train) + len(held_out) == len(CONTROL_FACTS) and len(held_out) == 8
    assert not {f.prompt for f in train} & {f.prompt for f in held_out}
    assert all(NEW_IDENTITY not in f.target for f in train + held_out)
    assert (train, held_out) == split_control_facts()


def test_training_rows_mix_identity_and_control_and_exclude_held_out():
    data = whoami_data()
    assert data == whoami_data()  # deterministic
    identity = [r for r in data.train if r.target == NEW_IDENTITY]
    control = [r for r in data.train if r.target != NEW_IDENTITY]
    assert len(identity) == 600
    train_facts, _ = split_control_facts()
    every_fact_5_times = sorted(f.prompt for f in train_facts for _ in range(5))
    assert sorted(r.prompt for r in control) == every_fact_5_times
    assert len(train_facts) == 36 and 0.2 < len(control) / len(data.train) < 0.3
    assert not {r.prompt for r in data.train} & (set(data.held_out_identity) | {f.prompt for f in data.held_out_control})


def test_other_identity_for_the_tiny_world():
    data = whoami_data(identity="我是通義千問", identity_rows=50)
    assert sum(r.target == "我是通義千問" for r in data.train) == 50
