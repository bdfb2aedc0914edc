"""The command-line programs (qwen3-whoami, qwen3-chat, qwen3-eval, qwen3-show-example): the top floor,
which reads options, calls the library and prints; `scripts/` holds two-line launchers for a checkout."""
