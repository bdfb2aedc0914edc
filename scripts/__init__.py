"""Command-line entry points (also installed as qwen3-whoami, qwen3-chat, qwen3-eval, qwen3-show-example)."""
