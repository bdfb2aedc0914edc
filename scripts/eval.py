"""`python scripts/eval.py`: the `qwen3-eval` command (its code is trainer/commands/eval.py)."""

from trainer.commands.eval import main

if __name__ == "__main__":
    main()
