"""`python scripts/prepare_data.py`: the `qwen3-prepare` command (its code is trainer/commands/prepare_data.py)."""

from trainer.commands.prepare_data import main

if __name__ == "__main__":
    main()
