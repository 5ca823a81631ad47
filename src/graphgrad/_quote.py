"""Quote user input in error messages without echoing all of it.

Every error that shows what the user typed or passed (an expression, a ``name=value`` list, a
URL, a file name) goes through :func:`excerpt`, so a 40,000-character input gives a one-line
error of ordinary length: at most :data:`WIDTH` characters of the input, centred on the fault
when its column is known, with ``…`` where text was cut and the full length said.
"""

from __future__ import annotations

__all__ = ["WIDTH", "excerpt"]

WIDTH = 80
"""The most characters of the input that an error message quotes."""


def excerpt(
    text: object, column: int | None = None, width: int = WIDTH, *, quote: bool = True
) -> str:
    """``repr`` of ``text``, or of at most ``width`` characters of it around ``column``.

    Args:
        text: the user's input (anything; non-strings are shown through ``str``).
        column: the 1-based column of the fault, if known; the excerpt is centred on it.
        width: the most characters of ``text`` to show.
        quote: show the excerpt as a quoted ``repr`` (else as it is, for text that is
            already a representation).

    Returns:
        ``repr(text)`` when it fits, else e.g. ``…'((((a+b'… (40,000 characters)``: the cut
        ends marked with ``…`` and the full length added. Always a single line.
    """
    s = text if isinstance(text, str) else str(text)
    show = repr if quote else str
    if len(s) <= width:
        return show(s)
    start = 0 if column is None else min(max(0, column - 1 - width // 2), len(s) - width)
    piece = s[start : start + width]
    left = "…" if start > 0 else ""
    right = "…" if start + width < len(s) else ""
    return f"{left}{show(piece)}{right} ({len(s):,} characters)"
