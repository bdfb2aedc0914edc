"""The chat-template check: our own template passes, foreign layouts are caught and named.

The rendering environment is checked independently against transformers' own chat-template
renderer, on templates that lean on what the environment provides (trim_blocks/lstrip_blocks,
`tojson` options, `namespace`, `{% generation %}`, `raise_exception`).
"""

import json

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from trainer.errors import TrainerError
from trainer.job.template_check import (
                                        PROBES,
                                        QWEN3_SPECIAL_TOKENS,
                                        check_model_template,
                                        folder_family,
                                        served_format,
                                        read_chat_template,
                                        render_with_template,
                                        template_family,
                                        template_mismatches,
                                        )
from trainer.text.chat import QWEN3_CHAT_TEMPLATE, ChatFormat
from trainer.text.chat_templates import FAMILIES, HYBRID, INSTRUCT_2507, THINKING_2507, chat_template


def replace_once(template: str, old: str, new: str) -> str:
    """String surgery that must hit exactly once, or the variant would silently equal our template."""
    if template.count(old) != 1:
        raise ValueError(f"marker found {template.count(old)} times in the template: {old!r}")
    return template.replace(old, new)


DEFAULT_SYSTEM_MARK = "{%- endif %}\n{%- for message in messages %}"
DEFAULT_SYSTEM_TEMPLATE = replace_once(
    QWEN3_CHAT_TEMPLATE,
    DEFAULT_SYSTEM_MARK,
    "{%- else %}\n    {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}\n"
    + DEFAULT_SYSTEM_MARK,
)
THINKING_MARK = "{{- '<|im_start|>assistant\\n' + content }}"
THINKING_TEMPLATE = replace_once(
    QWEN3_CHAT_TEMPLATE, THINKING_MARK, "{{- '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + content }}"
)
# Whitespace-sensitive: no `-` in any tag, so the output depends on trim_blocks and lstrip_blocks.
PLAIN_TAGS_TEMPLATE = """\
{% set ns = namespace(turns=0) %}
{% for message in messages %}
    {% set ns.turns = ns.turns + 1 %}
    {% generation %}
<|im_start|>{{ message.role }}
{{ message.content if message.content is string else '' }}
    {% for call in message.tool_calls or [] %}
{{ call.function.arguments | tojson(indent=2, sort_keys=true) }}
    {% endfor %}
<|im_end|>
    {% endgeneration %}
{% endfor %}
{% if tools %}{{ tools | tojson(separators=(',', ':')) }}{% endif %}
turns={{ ns.turns }} eos={{ eos_token }}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}
"""


def test_probes_cover_the_brief():
    names = [probe.name for probe in PROBES]
    assert 6 <= len(PROBES) <= 10 and len(set(names)) == len(names)
    assert any(m.get("reasoning_content") for p in PROBES for m in p.messages)
    assert any("</think>" in m["content"] for p in PROBES for m in p.messages)
    assert any(p.enable_thinking is False and p.add_generation_prompt for p in PROBES)
    calls = [m["tool_calls"] for p in PROBES for m in p.messages if m.get("tool_calls")]
    arguments = [call["function"]["arguments"] for group in calls for call in group]
    assert any(isinstance(a, dict) for a in arguments) and any(isinstance(a, str) for a in arguments)
    assert any(len(group) >= 2 for group in calls)
    assert any(p.add_generation_prompt for p in PROBES)
    assert any(p.tools and p.messages[0]["role"] == "system" for p in PROBES)
    assert any(not content.isascii() for p in PROBES for content in (m["content"] for m in p.messages))


def test_our_own_template_has_no_mismatches():
    assert template_mismatches(QWEN3_CHAT_TEMPLATE) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_found_from_its_template_and_no_other(family):
    found, mismatches = template_family(chat_template(family))
    assert found == family and mismatches[family] == []
    assert all(mismatches[other] for other in FAMILIES if other != family)  # the probes tell them apart


@pytest.mark.parametrize("family", FAMILIES)
def test_a_model_trains_in_its_own_family(tmp_path, family):
    assert check_model_template(write_model(tmp_path / "m", chat_template(family)), False, fail_on_warn) == family


def test_only_a_hybrid_model_has_a_thinking_switch():
    assert served_format(HYBRID) == ChatFormat(HYBRID, False) and not served_format(HYBRID).thinks
    assert served_format(HYBRID, "on") == ChatFormat(HYBRID, True) and served_format(HYBRID, "on").thinks
    assert served_format(THINKING_2507).thinks and not served_format(INSTRUCT_2507).thinks
    with pytest.raises(TrainerError, match="--thinking on: only a hybrid Qwen3 model has a thinking switch; this "
                                           "model's chat format is thinking-2507"):
        served_format(THINKING_2507, "on")


def test_a_folders_family_is_read_from_its_template(tmp_path):
    assert folder_family(write_model(tmp_path / "h", chat_template(HYBRID))) == HYBRID
    assert folder_family(write_model(tmp_path / "j", jinja=chat_template(THINKING_2507))) == THINKING_2507
    assert folder_family(write_model(tmp_path / "n")) == INSTRUCT_2507  # no template
    assert folder_family(write_model(tmp_path / "d", DEFAULT_SYSTEM_TEMPLATE)) == INSTRUCT_2507  # no family


def test_generation_tags_render_their_body():
    """Wrapped around the assistant turn, where transformers' assistant-mask templates put it."""
    wrapped = replace_once(QWEN3_CHAT_TEMPLATE, THINKING_MARK,
                           "{% generation %}" + THINKING_MARK + "{% endgeneration %}")
    assert template_mismatches(wrapped) == []


def test_default_system_prompt_is_caught_on_the_probes_without_a_system_message():
    mismatches = template_mismatches(DEFAULT_SYSTEM_TEMPLATE)
    named = {line.split(":")[0] for line in mismatches}
    without_system = {p.name for p in PROBES if p.messages[0]["role"] != "system" and not p.tools}
    assert "no_system" in named and named == without_system
    no_system = next(line for line in mismatches if line.startswith("no_system:"))
    assert f"differs at character {len('<|im_start|>')}:" in no_system and "You are a helpful assistant" in no_system


def test_thinking_block_is_caught():
    mismatches = template_mismatches(THINKING_TEMPLATE)
    named = {line.split(":")[0] for line in mismatches}
    assert "system_user_assistant" in named and "generation_prompt" not in named
    assert all("<think>" in line for line in mismatches)
    assert all("\n" not in line for line in mismatches)


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{{ raise_exception('this template refuses') }}", "this template refuses"),
        ("{{ messages | no_such_filter }}", "no_such_filter"),
        ("{% if %}", "TemplateSyntaxError"),
        ("{{ messages.__class__.__mro__ }}", "SecurityError"),
    ],
    ids=["raise_exception", "undefined_filter", "syntax_error", "sandbox"],
)
def test_broken_template_is_reported_not_crashed(template, expected):
    mismatches = template_mismatches(template)
    assert len(mismatches) == len(PROBES)
    assert all("template failed" in line and "\n" not in line for line in mismatches)
    assert expected in mismatches[0]


def write_model(folder, template=None, jinja=None, tokenizer_config=True):
    """A model folder with just the tokenizer files the check reads."""
    folder.mkdir(exist_ok=True)
    if tokenizer_config:
        config = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None}
        if template is not None:
            config["chat_template"] = template
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if jinja is not None:
        (folder / "chat_template.jinja").write_text(jinja)
    return folder


def fail_on_warn(message):
    raise AssertionError(f"unexpected warning: {message}")


def trusted_warnings(folder):
    """The warnings of a trusted check: a mismatch warns instead of raising, so [] means it passed."""
    warnings = []
    check_model_template(folder, True, warnings.append)
    return warnings


def test_folder_without_tokenizer_config_is_skipped(tmp_path):
    folder = write_model(tmp_path / "m", tokenizer_config=False)
    assert read_chat_template(folder) is None
    assert trusted_warnings(folder) == []


def test_tokenizer_config_without_template_is_skipped(tmp_path):
    folder = write_model(tmp_path / "m")
    assert read_chat_template(folder) is None
    assert trusted_warnings(folder) == []


def test_matching_template_is_read_and_passes(tmp_path):
    """Found (not skipped) and checked with the folder's own special tokens, it gives no finding."""
    folder = write_model(tmp_path / "m", QWEN3_CHAT_TEMPLATE)
    tokens = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    assert read_chat_template(folder) == (folder / "tokenizer_config.json", QWEN3_CHAT_TEMPLATE, tokens)
    assert trusted_warnings(folder) == []


def test_mismatching_template_raises_naming_the_file(tmp_path):
    folder = write_model(tmp_path / "m", THINKING_TEMPLATE)
    with pytest.raises(TrainerError) as caught:
        check_model_template(folder, False, fail_on_warn)
    message = str(caught.value)
    assert message.startswith(str(folder / "tokenizer_config.json"))
    assert "--trust-our-template" in message and "\n" not in message
    assert f"of {len(PROBES)} probe conversations" in message and "<think>" in message


def test_trusted_mismatch_warns_once(tmp_path):
    warnings = []
    check_model_template(write_model(tmp_path / "m", DEFAULT_SYSTEM_TEMPLATE), True, warnings.append)
    assert len(warnings) == 1
    assert "tokenizer_config.json" in warnings[0] and "no_system" in warnings[0] and "\n" not in warnings[0]


def test_chat_template_jinja_is_read_and_wins_over_the_json_key(tmp_path):
    folder = write_model(tmp_path / "m", QWEN3_CHAT_TEMPLATE, jinja=THINKING_TEMPLATE)
    with pytest.raises(TrainerError, match="chat_template.jinja"):
        check_model_template(folder, False, fail_on_warn)


def test_chat_template_jinja_without_tokenizer_config_is_checked(tmp_path):
    """With no tokenizer_config.json the template is still checked, with Qwen3's special tokens."""
    folder = write_model(tmp_path / "m", jinja=THINKING_TEMPLATE, tokenizer_config=False)
    jinja = folder / "chat_template.jinja"
    assert read_chat_template(folder) == (jinja, THINKING_TEMPLATE, QWEN3_SPECIAL_TOKENS)
    with pytest.raises(TrainerError, match="chat_template.jinja.*<think>"):
        check_model_template(folder, False, fail_on_warn)


def test_named_template_list_uses_default(tmp_path):
    named = [{"name": "tool_use", "template": "{{ 'x' }}"}, {"name": "default", "template": THINKING_TEMPLATE}]
    with pytest.raises(TrainerError, match="<think>"):
        check_model_template(write_model(tmp_path / "m", named), False, fail_on_warn)


def test_special_tokens_come_from_tokenizer_config(tmp_path):
    """A template that opens with bos_token differs once the model has one (saved as an AddedToken dict)."""
    folder = write_model(tmp_path / "m", "{{- bos_token }}" + QWEN3_CHAT_TEMPLATE)
    assert read_chat_template(folder)[2] == {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    assert trusted_warnings(folder) == []  # Qwen3 has no bos_token: renders ''
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["bos_token"] = {"content": "<s>", "lstrip": False, "special": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert read_chat_template(folder)[2]["bos_token"] == "<s>"
    with pytest.raises(TrainerError, match="<s>"):
        check_model_template(folder, False, fail_on_warn)


def test_unreadable_tokenizer_config_is_a_trainer_error(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(TrainerError, match="tokenizer_config.json"):
        check_model_template(folder, False, fail_on_warn)


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
@pytest.mark.parametrize(
    "template",
    [QWEN3_CHAT_TEMPLATE, THINKING_TEMPLATE, DEFAULT_SYSTEM_TEMPLATE, PLAIN_TAGS_TEMPLATE],
    ids=["qwen3", "thinking", "default_system", "plain_tags"],
)
def test_rendering_matches_transformers(template, probe):
    rendered, _ = render_jinja_template(
        conversations=[probe.messages], tools=probe.tools, chat_template=template,
        add_generation_prompt=probe.add_generation_prompt, **QWEN3_SPECIAL_TOKENS,
    )
    ours = render_with_template(template, probe.messages, probe.tools, probe.add_generation_prompt)
    assert ours == rendered[0]
