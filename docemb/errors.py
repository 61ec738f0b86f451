"""Errors that the command line reports as one clear line instead of a traceback."""


class DocembError(Exception):
    """A problem the user can fix: bad input, a missing file, an inconsistent option."""


class ImageReadError(DocembError):
    """An image file that cannot be decoded; the message names the file."""


def first_line(exc: BaseException) -> str:
    """What a library's exception says, on one line (its type when it says nothing)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
