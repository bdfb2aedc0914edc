"""`python scripts/show_example.py`: the `qwen3-show-example` command (its code is trainer/commands/show_example.py)."""

from trainer.commands.show_example import main

if __name__ == "__main__":
    main()
