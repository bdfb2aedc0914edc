"""Floor 1, text: chat template, tokenizer, reading rows, examples and batches, the identity data."""
