"""Client-supplied text in operators' log lines: escaped and clipped.

Stream names, source ids and query strings come from strangers. In a log line they
are escaped (a newline cannot forge a line) and clipped to `LOG_TEXT_MAX` characters
(a 4 MB name cannot make a 4 MB line).
"""

from __future__ import annotations

#: Client-supplied text in a log line is cut to this many characters.
LOG_TEXT_MAX = 200


def shown(text: str) -> str:
    """`text` escaped if it holds anything unprintable, and clipped."""
    extra = len(text) - LOG_TEXT_MAX
    if extra > 0:
        text = text[:LOG_TEXT_MAX]
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text + f"…(+{extra} chars)" if extra > 0 else text


def quoted(text: str | None) -> str:
    """`text` as a clipped Python literal (how source ids appear: '' is the default)."""
    if text is None:
        return "None"
    extra = len(text) - LOG_TEXT_MAX
    if extra > 0:
        return repr(text[:LOG_TEXT_MAX]) + f"…(+{extra} chars)"
    return repr(text)
