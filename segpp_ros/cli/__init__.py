"""Command-line tools (checkpoint conversion; later benchmark and offline runner)."""
