"""Where the commands print progress notes and summaries: stderr, keeping stdout for results."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True)
