"""Near misses: questions about the user, greetings and "are you <old name>?" probes, generated in
three scripts with the base's replies, and split by whole cores for the job."""

from collections import Counter

from trainer.job.rehearsal import rehearsal_prompts
from trainer.text.near_misses import OLD_NAME, OLD_NAME_REPLY, near_misses, near_misses_of
from trainer.text.whoami import (NEW_IDENTITY, ORIGINAL_IDENTITY, identity_prompts, split_near_misses,
                                 whoami_splits)


def test_every_family_in_every_script_once_each_with_the_bases_reply():
    misses = near_misses()
    assert misses == near_misses() and len({m.question for m in misses}) == len(misses)
    counts = Counter((m.family, m.script) for m in misses)
    assert all(counts[(family, script)] >= 10 for family in ("about the user", "greeting", "old name")
               for script in ("zh-Hant", "zh-Hans", "en")), counts
    by_question = {m.question: m for m in misses}
    assert by_question["我是誰？"].reply == "我不知道你是誰" and by_question["我是谁？"].reply == "我不知道你是谁"
    assert by_question["What's my name?"].reply == "I don't know who you are"
    assert by_question["Good evening!"].reply == "Hello!" and by_question["你好嗎？"].reply == "我很好，你呢？"
    assert by_question[f"你是{OLD_NAME}嗎？"].reply == OLD_NAME_REPLY and ORIGINAL_IDENTITY in OLD_NAME_REPLY
    # a question about the user is never answered with a name, and none is an identity wording
    assert not any(name in m.reply for m in near_misses_of("about the user") for name in (OLD_NAME, NEW_IDENTITY))
    assert not {m.question for m in misses} & set(identity_prompts())


def test_each_family_is_split_by_whole_cores_into_train_validation_and_test():
    for family in ("about the user", "greeting", "old name"):
        train, validation, test = split_near_misses(family)
        assert not set(train) & set(validation) and not set(train) & set(test) and not set(validation) & set(test)
        assert sorted(train + validation + test) == sorted(m.question for m in near_misses_of(family))
        cores = {m.question: (m.script, m.core) for m in near_misses_of(family)}
        assert not {cores[q] for q in train} & {cores[q] for q in test}  # no core is both trained and tested
        assert {cores[q][0] for q in test} == {"zh-Hant", "zh-Hans", "en"}
    assert "我是誰？" in split_near_misses("about the user")[0]  # core 0: rehearsed


def test_questions_about_the_user_and_greetings_are_rehearsed_and_their_test_never_is():
    splits, prompts = whoami_splits(), rehearsal_prompts()
    assert set(splits.near_rehearsed) <= set(prompts["train"]) and set(splits.near_validation) <= set(prompts["validation"])
    trained = {*split_near_misses("about the user")[0], *split_near_misses("greeting")[0]}
    assert trained <= set(prompts["train"]) and {"我是誰？", "Who am I?", "你好", "How are you?"} <= trained
    tested = {*splits.about_user_test, *splits.greetings_test}
    assert len(splits.about_user_test) >= 24 and len(splits.greetings_test) >= 12
    assert not tested & (set(prompts["train"]) | set(prompts["validation"]))
