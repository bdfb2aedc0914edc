"""The three Qwen3 dense chat formats as Jinja templates, for exported models and for transformers.

Written here from the published formats (trainer/text/chat.py renders the same text in Python):
- instruct-2507: Qwen3-4B-Instruct-2507, no thinking;
- hybrid: the original Qwen3 release (0.6B to 32B), reasoning in <think> blocks and a thinking switch
  (`enable_thinking=False` puts an empty think block into the generation prompt);
- thinking-2507: Qwen3-4B-Thinking-2507, whose generation prompt opens <think> for the model.

They share everything but the assistant turn and the generation prompt. Every tag strips the
whitespace before it ({%- / {{-), so the output does not depend on the engine's trim_blocks or
lstrip_blocks.
"""

INSTRUCT_2507, HYBRID, THINKING_2507 = "instruct-2507", "hybrid", "thinking-2507"
FAMILIES = (INSTRUCT_2507, HYBRID, THINKING_2507)

SYSTEM_BLOCK = r"""
{%- set has_system = messages | length > 0 and messages[0].role == 'system' %}
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if has_system %}
        {{- (messages[0].content if messages[0].content is string else '') + '\n\n' }}
    {%- endif %}
    {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}
    {{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
    {%- for tool in tools %}
        {{- '\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments ' }}
    {{- 'within <tool_call></tool_call> XML tags:\n<tool_call>\n' }}
    {{- '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- elif has_system %}
    {{- '<|im_start|>system\n' + (messages[0].content if messages[0].content is string else '') }}
    {{- '<|im_end|>\n' }}
{%- endif %}
"""

# The last user turn that asks something: tool results typed as a user turn do not count.
LAST_QUERY = r"""
{%- set query = namespace(index=messages | length - 1, found=false) %}
{%- for message in messages | reverse %}
    {%- if not query.found and message.role == 'user' and message.content is string
          and not (message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set query.found = true %}
        {%- set query.index = messages | length - 1 - loop.index0 %}
    {%- endif %}
{%- endfor %}
"""

TURNS_START = r"""
{%- for message in messages %}
    {%- set content = message.content if message.content is string else '' %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
"""

PLAIN_ANSWER = r"""
        {{- '<|im_start|>assistant\n' + content }}
"""

# Reasoning: reasoning_content, or what a content holding </think> has before it. It is shown only
# after the last query, on the last turn (an empty block when there is none) or where there is some.
REASONED_ANSWER = r"""
        {%- set reasoning = message.reasoning_content if message.reasoning_content is string else '' %}
        {%- if message.reasoning_content is not string and '</think>' in content %}
            {%- set reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- endif %}
        {%- if loop.index0 > query.index and (loop.last or reasoning) %}
            {{- '<|im_start|>assistant\n<think>\n' + reasoning.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
        {%- else %}
            {{- '<|im_start|>assistant\n' + content }}
        {%- endif %}
"""

TURNS_END = r"""
        {%- for tool_call in message.tool_calls or [] %}
            {%- set function = tool_call.function or tool_call %}
            {%- if content or not loop.first %}
                {{- '\n' }}
            {%- endif %}
            {{- '<tool_call>\n{"name": "' ~ function.name ~ '", "arguments": ' }}
            {{- function.arguments if function.arguments is string else function.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + content + '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
"""

GENERATION = {
    INSTRUCT_2507: r"""
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
""",
    HYBRID: r"""
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
""",
    THINKING_2507: r"""
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n<think>\n' }}
{%- endif %}
""",
}


def chat_template(family: str) -> str:
    """The Jinja template of a family, for tokenizer_config.json's chat_template."""
    thinks = family != INSTRUCT_2507
    parts = [SYSTEM_BLOCK, LAST_QUERY if thinks else "", TURNS_START, REASONED_ANSWER if thinks else PLAIN_ANSWER,
             TURNS_END, GENERATION[family]]
    return "".join(part.strip("\n") + "\n" for part in parts if part).strip()
