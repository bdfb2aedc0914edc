"""Which Qwen3 chat format a model's own template renders, found by rendering, never by name.

The trainer renders every conversation with `render_chat` in one of the Qwen3 dense families
(instruct-2507, hybrid, thinking-2507). A base model whose tokenizer carries another template (a
default system prompt, another tool-call syntax) would be fine-tuned on one layout and prompted
with another at inference. So before training, each probe conversation below is rendered by the
model's template and by `render_chat` in each family; the family that renders every probe the
same is the model's, and without one the differences are reported.

The template comes from the model folder and is untrusted code: it runs only inside jinja2's
immutable sandbox, set up the way transformers' `apply_chat_template` sets it up.
"""

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Callable, NamedTuple

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from trainer.errors import TrainerError
from trainer.text.chat import ChatFormat, render_chat
from trainer.text.chat_templates import FAMILIES, HYBRID, INSTRUCT_2507

# What transformers passes a Qwen3 template besides the conversation (its bos_token is None, so absent).
QWEN3_SPECIAL_TOKENS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}

EXCERPT_BEFORE, EXCERPT_AFTER = 20, 40  # characters shown around the first difference


class Probe(NamedTuple):
    """One conversation to render with both renderers."""

    name: str
    messages: list[dict]
    tools: list[dict] | None
    add_generation_prompt: bool
    enable_thinking: bool | None = None  # the hybrid family's switch, passed to the template when set


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city — Wetter, 天气",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

TOOL_CALLS = [
    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
    {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
]

PROBES = (
    Probe("system_user_assistant", [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ], None, False),
    Probe("no_system", [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ], None, False),
    Probe("multi_turn", [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "Blue."},
    ], None, False),
    Probe("generation_prompt", [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say yes."},
    ], None, True),
    Probe("assistant_tool_calls", [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": TOOL_CALLS},
    ], [WEATHER_TOOL], False),
    Probe("consecutive_tool_results", [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": "Checking both.", "tool_calls": TOOL_CALLS},
        {"role": "tool", "content": '{"temp": 18}'},
        {"role": "tool", "content": '{"temp": 9}'},
        {"role": "assistant", "content": "Paris 18, Oslo 9."},
    ], [WEATHER_TOOL], False),
    Probe("tools_with_system", [
        {"role": "system", "content": "You can check the weather."},
        {"role": "user", "content": "Weather in Rome?"},
    ], [WEATHER_TOOL], True),
    Probe("non_ascii", [
        {"role": "system", "content": "Antworte auf Deutsch — 请用德语。"},
        {"role": "user", "content": "Grüße! 你好 🌍"},
        {"role": "assistant", "content": "Hallo, schön dich zu sehen 😊"},
    ], None, False),
    Probe("reasoning_over_two_turns", [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Two and two."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "<think>\nThree and three.\n</think>\n\n6"},
    ], None, False),
    Probe("thinking_switched_off", [{"role": "user", "content": "Say yes."}], None, True, enable_thinking=False),
)


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks text for transformers' assistant masks; here it just renders."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.CallBlock:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Callable[[], str]) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    """transformers' `tojson`: no HTML escaping, unlike jinja2's built-in filter."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    """The template in a sandbox configured like transformers' chat-template environment."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)


def render_with_template(
    template: str,
    messages: list[dict],
    tools: list[dict] | None,
    add_generation_prompt: bool,
    special_tokens: dict[str, str] | None = None,
    enable_thinking: bool | None = None,
) -> str:
    """Render a conversation with a Jinja chat template, as transformers' `apply_chat_template` would
    (enable_thinking, when set, is passed on as a template variable, as its keyword arguments are)."""
    tokens = QWEN3_SPECIAL_TOKENS if special_tokens is None else special_tokens
    switch = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    return _compile(template).render(
        messages=messages, tools=tools, add_generation_prompt=add_generation_prompt, **tokens, **switch
    )


def _first_difference(theirs: str, ours: str) -> str:
    """Where two renderings part, with a short excerpt of each from just before that point."""
    index = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
    start, end = max(0, index - EXCERPT_BEFORE), index + EXCERPT_AFTER
    return f"differs at character {index}: template {theirs[start:end]!r}, trainer {ours[start:end]!r}"


def _probe_mismatch(template: str, probe: Probe, special_tokens: dict[str, str] | None, family: str) -> str | None:
    """A description of how the template's rendering of one probe differs from ours, or None."""
    ours = render_chat(probe.messages, probe.add_generation_prompt, probe.tools, family, probe.enable_thinking)
    try:
        theirs = render_with_template(
            template, probe.messages, probe.tools, probe.add_generation_prompt, special_tokens, probe.enable_thinking
        )
    except Exception as error:  # the template is foreign code: any failure is a finding, not a crash
        return f"{probe.name}: template failed: {type(error).__name__}: {' '.join(str(error).split())}"
    return None if theirs == ours else f"{probe.name}: {_first_difference(theirs, ours)}"


def template_mismatches(template: str, special_tokens: dict[str, str] | None = None,
                        family: str = INSTRUCT_2507) -> list[str]:
    """One line per probe that the template renders differently from `render_chat` in `family`; [] when
    all agree."""
    found = (_probe_mismatch(template, probe, special_tokens, family) for probe in PROBES)
    return [mismatch for mismatch in found if mismatch is not None]


def template_family(template: str, special_tokens: dict[str, str] | None = None) -> tuple[str | None, dict]:
    """(the family whose rendering the template matches on every probe, or None; family -> mismatches)."""
    mismatches = {family: template_mismatches(template, special_tokens, family) for family in FAMILIES}
    return next((family for family, found in mismatches.items() if not found), None), mismatches


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TrainerError(f"{path}: cannot read as JSON: {error}") from error


def _config_template(config: dict) -> str | None:
    """The `chat_template` key: a string, or a list of named templates of which 'default' is used."""
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default")
    return template if isinstance(template, str) and template.strip() else None


def _token_text(token) -> str | None:
    """A special token as saved in tokenizer_config.json: a string, an AddedToken dict, or null."""
    return token.get("content") if isinstance(token, dict) else token


def _special_tokens(config: dict) -> dict[str, str]:
    """The special tokens transformers would hand the template, from tokenizer_config.json."""
    names = ("bos_token", "eos_token", "unk_token", "pad_token")
    tokens = {name: _token_text(config.get(name)) for name in names}
    return {name: text for name, text in tokens.items() if isinstance(text, str)}


def read_chat_template(model_dir: Path) -> tuple[Path, str, dict[str, str]] | None:
    """(file, template, special tokens) from a model folder; chat_template.jinja wins, as in transformers."""
    config_path, jinja_path = model_dir / "tokenizer_config.json", model_dir / "chat_template.jinja"
    config = _read_json(config_path) if config_path.is_file() else None
    tokens = QWEN3_SPECIAL_TOKENS if config is None else _special_tokens(config)
    if jinja_path.is_file():
        return jinja_path, jinja_path.read_text(encoding="utf-8"), tokens
    template = None if config is None else _config_template(config)
    return None if template is None else (config_path, template, tokens)


def check_model_template(model_dir: Path, trust_our_template: bool, warn: Callable[[str], None]) -> str:
    """The family of the model's chat template (instruct-2507 without one). A template of no family is
    refused (or, when trusted, warned about, and trained as instruct-2507)."""
    found = read_chat_template(Path(model_dir))
    if found is None:
        return INSTRUCT_2507
    path, template, tokens = found
    family, mismatches = template_family(template, tokens)
    if family is not None:
        return family
    closest = min(FAMILIES, key=lambda name: len(mismatches[name]))
    finding = (
        f"{path}: this model's chat template renders {len(mismatches[closest])} of {len(PROBES)} probe "
        f"conversations differently from the trainer's nearest Qwen3 format, {closest} (first: "
        f"{mismatches[closest][0]}); training would teach a layout the model does not use at inference."
    )
    if not trust_our_template:
        raise TrainerError(f"{finding} Pass --trust-our-template to train anyway.")
    warn(f"{finding} Training anyway, in the instruct-2507 format, because --trust-our-template was given.")
    return INSTRUCT_2507


def folder_family(model_dir: Path) -> str:
    """The family of a model folder's template, for prompting a loaded model and for what is written
    beside a GGUF export (the Ollama Modelfile); instruct-2507 when it has no template or one of no
    family (which training refuses or warns about)."""
    found = read_chat_template(Path(model_dir))
    return (template_family(found[1], found[2])[0] if found else None) or INSTRUCT_2507


def served_format(family: str, thinking: str | None = None) -> ChatFormat:
    """How the trainer prompts a model of `family`: a hybrid model with thinking off unless --thinking on
    (off is the mode that rows without reasoning train: README, "The Qwen3 chat families")."""
    if thinking is not None and family != HYBRID:
        raise TrainerError(f"--thinking {thinking}: only a hybrid Qwen3 model has a thinking switch; this model's "
                           f"chat format is {family}")
    return ChatFormat(family, enable_thinking=thinking == "on" if family == HYBRID else None)
