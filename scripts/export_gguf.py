"""`python scripts/export_gguf.py`: the `qwen3-export-gguf` command (its code is trainer/commands/export_gguf.py)."""

from trainer.commands.export_gguf import main

if __name__ == "__main__":
    main()
