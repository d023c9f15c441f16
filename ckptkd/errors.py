"""The one exception type that means "the user asked for something we cannot do".

The CLI turns a ``CkptkdError`` into a one-line message and exit status 2; any other
exception is a bug in ckptkd and keeps its traceback.
"""


class CkptkdError(Exception):
    """A user mistake: bad input, bad config, a file that is not what it claims to be."""


def closest(name: str, choices) -> str:
    """Return ' (did you mean X?)' for the nearest valid choice, or ''."""
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
