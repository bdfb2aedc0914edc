"""Preparing your own data, before training: source formats, normalising, checking, deduplicating,
splitting and mixing. No torch here."""
