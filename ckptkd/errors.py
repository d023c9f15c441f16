"""The one exception type that means "the user asked for something we cannot do".

The CLI turns a ``CkptkdError`` into a one-line message and exit status 2; any other
exception is a bug in ckptkd and keeps its traceback. ``warn`` is for what is legitimate
but probably not meant: one line on stderr, once.
"""
import os
import sys

_WARNED: set = set()


class CkptkdError(Exception):
    """A user mistake: bad input, bad config, a file that is not what it claims to be."""


def warn(message: str, key=None) -> None:
    """Print ``ckptkd: warning: message`` on stderr once per process for ``key`` (default: the
    message); under torchrun rank 0 alone speaks."""
    key = message if key is None else key
    if key not in _WARNED and os.environ.get("RANK", "0") == "0":
        print(f"ckptkd: warning: {message}", file=sys.stderr)
    _WARNED.add(key)


def closest(name: str, choices) -> str:
    """Return ' (did you mean X?)' for the nearest valid choice, or ''."""
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
