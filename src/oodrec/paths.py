"""Checks of the paths a command is given, run before anything is read or written, and
temporary files with the user's umask.

Each raises ``ConfigError`` with one line naming the flag and the path: an output directory
that is a file (or lies below one), an input file that is a directory or missing, an input
directory that is a file or missing, a run name that is not one directory name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from oodrec.errors import ConfigError


def umask() -> int:
    """The process's file-mode creation mask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def mkstemp_shared(folder: str | Path, prefix: str, suffix: str = "") -> tuple[int, str]:
    """``tempfile.mkstemp`` whose file gets the mode a plain ``open`` would give it (0666 less
    the umask) instead of 0600, so a file renamed into place from it can be read by whoever the
    user's umask lets read their files (a teammate sharing the runs folder).

    Returns:
        ``(fd, path)`` as ``tempfile.mkstemp``.
    """
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    os.fchmod(fd, 0o666 & ~umask())
    return fd, tmp


def _file_on_the_way(path: Path) -> Path | None:
    """``path`` itself or the first of its parents that exists and is not a directory."""
    for part in [*reversed(path.parents), path]:
        if part.exists() and not part.is_dir():
            return part
    return None


def check_out_dir(path: str | Path, what: str = "--out") -> None:
    """Refuse an output directory that is a file, or lies below a file.

    Args:
        path: the directory (it may not exist yet).
        what: how the message names it (``--out``, ``DEST``).
    """
    path = Path(path)
    blocker = _file_on_the_way(path)
    if blocker == path:
        raise ConfigError(f"{what} {path}: is a file, not a directory; give a directory")
    if blocker is not None:
        raise ConfigError(f"{what} {path}: {blocker} is a file, not a directory")


def check_in_file(path: str | Path, what: str) -> None:
    """Refuse an input file that is missing or a directory (``what``: ``--config``, ``grid``)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a directory; give a file")
    if not path.exists():
        raise ConfigError(f"{what} {path}: does not exist")


def check_in_dir(path: str | Path, what: str) -> None:
    """Refuse an input directory that is missing or a file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} {path}: does not exist")
    if not path.is_dir():
        raise ConfigError(f"{what} {path}: is a file; give a directory")


def read_input_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of an input file; a missing file, a directory or other bytes raise
    ``ConfigError`` naming ``what`` (``config file``, ``grid file``) and the path."""
    path = Path(path)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory; give a file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text ({exc.reason})") from None


def check_run_name(name: str | None) -> None:
    """A run name is one directory name below the output directory: not empty, not ``.`` or
    ``..``, without ``/`` or ``\\`` (so a run never lands outside ``--out``). None: derived."""
    if name is None:
        return
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ConfigError(
            f"name {name!r}: a run name is one directory name (no '/', '\\' or '..'); the "
            "run directory is OUT/NAME"
        )


__all__ = [
    "check_in_dir",
    "check_in_file",
    "check_out_dir",
    "check_run_name",
    "mkstemp_shared",
    "read_input_text",
    "umask",
]
