"""`python scripts/chat.py`: the `qwen3-chat` command (its code is trainer/commands/chat.py)."""

from trainer.commands.chat import main

if __name__ == "__main__":
    main()
