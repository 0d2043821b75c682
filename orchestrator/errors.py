"""User errors: one readable message, a non-zero exit, no traceback."""

from __future__ import annotations

CONFIG_EXIT = 2  # the config (or what it points at) is wrong: fix it and run again
RUNTIME_EXIT = 1  # the sweep ran but produced nothing usable
INTERRUPTED_EXIT = 130  # Ctrl-C: stopped and saved; `qlora-sweep resume` goes on


class UserError(Exception):
    """A problem the user can fix; ``problems`` are printed one per line."""

    def __init__(self, title: str, problems: list[str] | None = None, *, exit_code: int = CONFIG_EXIT):
        self.title = title
        self.problems = list(problems or [])
        self.exit_code = exit_code
        super().__init__(self.render())

    def render(self) -> str:
        if not self.problems:
            return f"error: {self.title}"
        lines = [f"error: {self.title}"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)
