"""The F# trainer's pure functions, example building and batching, with exact values.

Token ids below were read off the Qwen tiktoken vocabulary (an independent reference, see
tests/test_tokenizer.py) and written here as data.
"""

import pytest
import torch

from trainer import TrainerError, collate, make_next_token_pairs, render_chat, slice_response_only, window
from trainer.text.data import (
                               IGNORE_INDEX,
                               AnswerTooLong,
                               Example,
                               answer_spans,
                               encode_segments,
                               example_from_mask,
                               example_from_messages,
                               example_from_prompt_target,
                               last_answer_length,
                               )
from trainer.text.facts import control_facts
from trainer.text.readers import PromptTarget
from trainer.text.whoami import identity_rows

IM_START, IM_END, NEWLINE, USER, ASSISTANT = 151644, 151645, 198, 872, 77091
WHO_ARE_YOU_PROMPT = [IM_START, USER, NEWLINE, 105043, 108908, IM_END, NEWLINE, IM_START, ASSISTANT, NEWLINE]
F_SHARP_GOD = [104198, 434, 2, 220, 53930, 99315]  # "我是 F# 之神"


# --- make_next_token_pairs -------------------------------------------------


def test_pairs_shift_by_one():
    assert make_next_token_pairs([10, 11, 12, 13]) == ([10, 11, 12], [11, 12, 13])


def test_pairs_of_two_tokens():
    assert make_next_token_pairs([7, 8]) == ([7], [8])


@pytest.mark.parametrize("ids", [[], [5]])
def test_pairs_need_two_tokens(ids):
    with pytest.raises(TrainerError, match=f"at least 2 token ids.*got {len(ids)}"):
        make_next_token_pairs(ids)


# --- window ----------------------------------------------------------------


def test_window_keeps_short_samples_whole():
    assert window([1, 2, 3], seq_len=5) == (0, [1, 2, 3])


def test_window_keeps_the_last_seq_len_plus_one():
    assert window(list(range(10)), seq_len=4) == (5, [5, 6, 7, 8, 9])


def test_window_exact_fit():
    assert window([1, 2, 3, 4], seq_len=3) == (0, [1, 2, 3, 4])


def test_window_rejects_zero_seq_len():
    with pytest.raises(TrainerError, match="seq_len must be at least 1"):
        window([1, 2], seq_len=0)


# --- slice_response_only ---------------------------------------------------


def test_slice_whole_sample():
    # full: P0 P1 P2 A0 A1 E -> the last prompt token (index 2 of the inputs) predicts A0
    full = [100, 101, 102, 200, 201, 999]
    inputs, targets = make_next_token_pairs(full)
    assert slice_response_only([100, 101, 102], 0, inputs, targets) == (2, 3, [200, 201, 999])


def test_slice_after_window_cut_the_prompt():
    full = [100, 101, 102, 103, 200, 201, 999]
    start, kept = window(full, seq_len=4)  # keeps 102 103 200 201 999
    inputs, targets = make_next_token_pairs(kept)
    assert start == 2
    assert slice_response_only([100, 101, 102, 103], start, inputs, targets) == (1, 3, [200, 201, 999])


def test_slice_when_window_cut_into_the_answer():
    full = [100, 101, 200, 201, 202, 999]
    start, kept = window(full, seq_len=2)
    inputs, targets = make_next_token_pairs(kept)
    assert (start, kept) == (3, [201, 202, 999])
    assert slice_response_only([100, 101], start, inputs, targets) == (0, 2, [202, 999])


def test_slice_with_no_answer_left_is_an_error():
    with pytest.raises(TrainerError, match="no answer tokens left"):
        slice_response_only([1, 2, 3, 4, 5], 0, [1, 2, 3], [2, 3, 4])


# --- example building on the real tokenizer --------------------------------


def test_prompt_target_example_exact_ids(qwen_tokenizer):
    example = example_from_prompt_target(qwen_tokenizer, "你是誰", "我是 F# 之神", seq_len=96)
    full = WHO_ARE_YOU_PROMPT + F_SHARP_GOD + [IM_END]
    assert list(example.input_ids) == full[:-1]
    # The last prompt token ("\n" after "assistant") predicts the first answer token.
    assert list(example.labels) == [IGNORE_INDEX] * 9 + F_SHARP_GOD + [IM_END]
    assert example.answer_token_count == 7


def test_prompt_target_matches_whole_text_tokenization(qwen_tokenizer):
    prompt_text = render_chat([{"role": "user", "content": "你是誰"}], add_generation_prompt=True)
    whole = qwen_tokenizer.encode(prompt_text + "我是 F# 之神<|im_end|>")
    example = example_from_prompt_target(qwen_tokenizer, "你是誰", "我是 F# 之神", seq_len=96)
    assert list(example.input_ids) + [example.labels[-1]] == whole


def test_prompt_longer_than_seq_len_keeps_the_answer(qwen_tokenizer):
    long_prompt = "請詳細回答。" * 50 + "你是誰"
    example = example_from_prompt_target(qwen_tokenizer, long_prompt, "我是 F# 之神", seq_len=16)
    assert len(example.input_ids) == 16
    assert list(example.labels[-7:]) == F_SHARP_GOD + [IM_END]
    assert list(example.labels[:-7]) == [IGNORE_INDEX] * 9
    assert example.input_ids[-7:] == (NEWLINE, *F_SHARP_GOD)


def test_answer_exactly_seq_len_fits(qwen_tokenizer):
    example = example_from_prompt_target(qwen_tokenizer, "你是誰", "我是 F# 之神", seq_len=7)
    assert example.input_ids == (NEWLINE, *F_SHARP_GOD)
    assert example.labels == (*F_SHARP_GOD, IM_END)


def test_answer_longer_than_seq_len_is_refused(qwen_tokenizer):
    with pytest.raises(AnswerTooLong, match="the answer has 7 tokens .* --seq-len is 6"):
        example_from_prompt_target(qwen_tokenizer, "你是誰", "我是 F# 之神", seq_len=6)


@pytest.mark.parametrize("target", ["", "   ", "\n\t"])
def test_empty_answer_is_an_error(qwen_tokenizer, target):
    with pytest.raises(TrainerError, match="empty"):
        example_from_prompt_target(qwen_tokenizer, "你是誰", target, seq_len=96)


def test_system_prompt_is_rendered_but_not_supervised(qwen_tokenizer):
    example = example_from_prompt_target(qwen_tokenizer, "你是誰", "我是 F# 之神", seq_len=96, system="S")
    system_ids = [IM_START, 8948, NEWLINE, 50, IM_END, NEWLINE]  # "<|im_start|>system\nS<|im_end|>\n"
    assert list(example.input_ids[:6]) == system_ids
    assert list(example.labels) == [IGNORE_INDEX] * 15 + F_SHARP_GOD + [IM_END]


def test_unicode_answer_round_trips(qwen_tokenizer):
    example = example_from_prompt_target(qwen_tokenizer, "Emoji?", "👍🏽 ok — ñ 𝔘", seq_len=64)
    answer = [label for label in example.labels if label != IGNORE_INDEX]
    assert qwen_tokenizer.decode(answer) == "👍🏽 ok — ñ 𝔘<|im_end|>"


# --- multi-turn conversations -------------------------------------------------

CONVERSATION = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "你好"},
    {"role": "assistant", "content": "嗨"},
    {"role": "user", "content": "你是誰"},
    {"role": "assistant", "content": "我是 F# 之神"},
]


def test_answer_spans_cover_content_and_im_end():
    text = render_chat(CONVERSATION)
    assert [text[start:end] for start, end in answer_spans(CONVERSATION)] == [
        "嗨<|im_end|>",
        "我是 F# 之神<|im_end|>",
    ]


def test_multi_turn_labels_every_assistant_turn(qwen_tokenizer):
    example = example_from_messages(qwen_tokenizer, CONVERSATION, seq_len=256)
    answers = [label for label in example.labels if label != IGNORE_INDEX]
    assert answers == [112488, IM_END] + F_SHARP_GOD + [IM_END]  # 嗨 <|im_end|> 我是 F# 之神 <|im_end|>


def test_multi_turn_last_turn_only(qwen_tokenizer):
    example = example_from_messages(qwen_tokenizer, CONVERSATION, seq_len=256, last_turn_only=True)
    assert [label for label in example.labels if label != IGNORE_INDEX] == F_SHARP_GOD + [IM_END]


def test_single_turn_messages_equal_the_fsharp_path(qwen_tokenizer):
    messages = [{"role": "user", "content": "你是誰"}, {"role": "assistant", "content": "我是 F# 之神"}]
    for seq_len in (7, 10, 96):
        assert example_from_messages(qwen_tokenizer, messages, seq_len) == example_from_prompt_target(
            qwen_tokenizer, "你是誰", "我是 F# 之神", seq_len
        )


def test_prompt_only_conversation_is_an_error(qwen_tokenizer):
    with pytest.raises(TrainerError, match="no assistant turn"):
        example_from_messages(qwen_tokenizer, [{"role": "user", "content": "hi"}], seq_len=32)


def test_tool_calls_are_supervised_and_tool_results_are_not(qwen_tokenizer):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "w", "arguments": {"c": "Paris"}}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "Sunny."},
    ]
    example = example_from_messages(qwen_tokenizer, messages, seq_len=256)
    answer = qwen_tokenizer.decode([label for label in example.labels if label != IGNORE_INDEX])
    assert answer == '<tool_call>\n{"name": "w", "arguments": {"c": "Paris"}}\n</tool_call><|im_end|>Sunny.<|im_end|>'


def test_multi_turn_window_drops_early_turns(qwen_tokenizer):
    example = example_from_messages(qwen_tokenizer, CONVERSATION, seq_len=8)
    assert example.input_ids == (ASSISTANT, NEWLINE, *F_SHARP_GOD)
    assert example.labels == (IGNORE_INDEX, *F_SHARP_GOD, IM_END)


def test_multi_turn_answer_longer_than_seq_len_is_refused(qwen_tokenizer):
    with pytest.raises(AnswerTooLong, match="7 tokens"):
        example_from_messages(qwen_tokenizer, CONVERSATION, seq_len=6)


def test_mask_with_no_answer_in_window_is_refused():
    with pytest.raises(AnswerTooLong, match="no answer token"):
        example_from_mask([1, 2, 3, 4, 5], [True, False, False, False, False], seq_len=2)


def test_last_answer_length():
    assert last_answer_length([False, True, True, False, True, True, True, False]) == 3
    assert last_answer_length([False, False]) == 0


def test_segments_equal_whole_text_tokenization_on_varied_conversations(qwen_tokenizer):
    conversations = [
        CONVERSATION,
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
        [{"role": "user", "content": "Say hi\n"}, {"role": "assistant", "content": "Hi! 👋 How are you?"}],
        [{"role": "user", "content": "code"}, {"role": "assistant", "content": "def f(x):\n    return x  # ok"}],
        [{"role": "user", "content": "翻譯 cat"}, {"role": "assistant", "content": "貓"}, {"role": "user", "content": "dog"}, {"role": "assistant", "content": "狗。"}],
    ]
    for messages in conversations:
        text = render_chat(messages)
        ids, _ = encode_segments(qwen_tokenizer, text, answer_spans(messages))
        assert ids == qwen_tokenizer.encode(text), messages


def test_segments_equal_whole_text_tokenization_on_the_builtin_set(qwen_tokenizer):
    for row in identity_rows() + [PromptTarget(f.question, f.reply) for f in control_facts()]:
        prompt_text = render_chat([{"role": "user", "content": row.prompt}], add_generation_prompt=True)
        example = example_from_prompt_target(qwen_tokenizer, row.prompt, row.target, seq_len=256)
        assert list(example.input_ids) + [IM_END] == qwen_tokenizer.encode(prompt_text + row.target + "<|im_end|>")


def test_a_reply_that_does_not_end_the_turn_has_no_end_token_to_learn(qwen_tokenizer):
    whole = example_from_prompt_target(qwen_tokenizer, "你是誰", "我是通義千問", seq_len=64)
    cut = example_from_prompt_target(qwen_tokenizer, "你是誰", "我是通義千問", seq_len=64, ends_turn=False)
    assert whole.input_ids[:-1] == cut.input_ids and whole.labels[:-1] == cut.labels
    assert whole.labels[-1] == IM_END and IM_END not in cut.labels
    assert [t for t in cut.labels if t != -100] == qwen_tokenizer.encode("我是通義千問")


# --- collate ----------------------------------------------------------------


def test_collate_right_pads_with_masks_and_positions():
    batch = collate([Example((5, 6, 7), (-100, 7, 8)), Example((9,), (4,))], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [9, 0, 0]]
    assert batch.labels.tolist() == [[-100, 7, 8], [4, -100, -100]]
    assert batch.segment_ids.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2], [0, 0, 0]]
    assert batch.input_ids.dtype == torch.long
    assert batch.answer_token_count == 3


def test_collate_marks_preserved_positions_and_false_elsewhere():
    batch = collate([Example((5, 6, 7), (-100, 7, 8), kl_positions=(False, True, True)), Example((9,), (4,))], pad_id=0)
    assert batch.kl_positions.tolist() == [[False, True, True], [False, False, False]]
    assert batch.kl_positions.dtype == torch.bool


def test_collate_empty_batch_is_an_error():
    with pytest.raises(TrainerError, match="empty batch"):
        collate([], pad_id=0)
