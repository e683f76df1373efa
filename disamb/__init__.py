"""disamb: find which chat message each voice note says, and learn from it."""

__version__ = "0.1.0"
