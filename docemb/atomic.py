"""Atomic file writes: a crash mid-write never leaves a half-written checkpoint, model or report."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from docemb.errors import DocembError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# how text holding file names is encoded: a name that is not UTF-8 keeps its bytes (as os.fsencode)
FILE_NAME_ERRORS = "surrogateescape"


@functools.cache
def _file_mode() -> int:
    """The mode open() would give a new file: mkstemp's 0600 would keep models from other users.
    Read once: reading the umask sets it for a moment, which threads writing files must not see."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    A full disk while writing is a DocembError naming the file, and whatever `path` held
    before is left as it was."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise DocembError(f"{target}: cannot write in {target.parent} ({exc.strerror})") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, target)
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        kept = "the previous file is kept" if target.exists() else "nothing was written"
        raise DocembError(f"{target}: no space left on the device while writing it; {kept}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8; a file name that is not (Python keeps its bytes as surrogates) is written as its bytes."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors=FILE_NAME_ERRORS)


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
