"""`python scripts/train_whoami.py`: the `qwen3-whoami` command (its code is trainer/commands/train_whoami.py)."""

from trainer.commands.train_whoami import main

if __name__ == "__main__":
    main()
