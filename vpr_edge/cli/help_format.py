"""One argparse help formatter for every vpr-edge command line.

Like ``ArgumentDefaultsHelpFormatter``, but shows a default only where it tells the reader
something: not for on/off flags, not for ``None`` (the help says what happens then), and not
when the help text already states its default; a default of several values shows as they are
typed (``480 640``, not ``(480, 640)``).
"""

from __future__ import annotations

import argparse
import copy


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.nargs == 0 or action.default in (None, argparse.SUPPRESS)
                or "default" in text.lower()):
            return text
        return super()._get_help_string(action)

    def _expand_help(self, action: argparse.Action) -> str:
        if isinstance(action.default, (list, tuple)):
            action = copy.copy(action)
            action.default = " ".join(str(v) for v in action.default)
        return super()._expand_help(action)


def summary(doc: str | None) -> str:
    """The first line of a command module's docstring as plain text for ``--help`` (without
    the reStructuredText double backticks)."""
    return doc.strip().splitlines()[0].replace("``", "") if doc else ""
