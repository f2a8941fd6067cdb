"""Writing files: nothing a user saved is ever half-written, and JSON is strict JSON.

Every file tidal writes goes first to a temporary name beside it,
`.NAME.XXXXXXXX.tidal-tmp` (`TEMPORARY`), and is renamed over NAME when complete. The
temporary is created with the permissions the umask gives a new file (0644 under the usual
umask 022), like any file a user's program creates.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tidal._errors import InvalidArgumentError

#: The names of tidal's temporaries; the middle part is random.
TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tidal-tmp$")


def make_folder(folder: str | os.PathLike) -> None:
    """Create `folder` and its missing parents; a part of its path that is a file (``-o
    data.csv/run`` with data.csv a file) is refused by name, not with the OS's errno."""
    folder = Path(folder)
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                inside = "" if part == folder else f" (in {folder})"
                raise InvalidArgumentError(f"{part} is a file, not a folder{inside}; choose "
                                           "another path (-o).")
            break
    folder.mkdir(parents=True, exist_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, flush it to disk and
    rename it over `path` (atomic on POSIX and Windows), else delete it.

    Example:
        >>> with atomic_path("runs/a/notes.txt") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("done")
    """
    path = Path(path)
    make_folder(path.parent)
    tmp = _new_temporary(path)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _new_temporary(path: Path) -> Path:
    """An empty file named like `TEMPORARY`, created exclusively with mode 0o666 & ~umask."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tidal-tmp"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:  # 2^32 random names: a clash is rare; draw another
            continue


def json_text(value: Any) -> str:
    """`value` as strict JSON (RFC 8259): NaN and infinities, which JSON cannot hold, become
    null."""
    return json.dumps(_finite(value), indent=2, allow_nan=False)


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write `json_text(value)` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(value))


def read_json(path: str | os.PathLike) -> Any:
    """Parse strict JSON: NaN, Infinity and -Infinity are refused (ValueError), as any JSON
    parser but Python's would."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
