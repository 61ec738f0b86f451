"""Errors that the command line reports as one clear line instead of a traceback."""


class DocembError(Exception):
    """A problem the user can fix: bad input, a missing file, an inconsistent option."""


class ImageReadError(DocembError):
    """An image file that cannot be decoded; the message names the file."""
