"""`RunDirectory`: the one place that writes, replaces or deletes files in a run's folder.

A folder is a tidal run when it holds the marker `tidal-run.json`, which only tidal writes:

    {"format": 1, "kind": "neural-ode" | "flow", "command": "fit",
     "state": "running" | "finished" | "interrupted" | "diverged",
     "files": ["checkpoint.pt", "config.json", "data/train.csv", ...],
     "process": {"pid": 4242, "host": "laptop"},       (while running)
     "tidal_version": "0.1.0"}

The ownership rule: tidal replaces or deletes only the files listed in "files" (and its own
temporaries, `tidal._files.TEMPORARY`); it never deletes a folder it did not empty itself, and
never the run's folder. A name is listed *before* its file is first written, so a run killed at
any moment lists every file it wrote. A new run starts only in a missing or empty folder; a
file that exists but is not listed is never overwritten.

"running" with a process that no longer exists means the run was killed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from tidal._errors import InvalidArgumentError
from tidal._files import (
    TEMPORARY,
    atomic_path,
    json_text,
    make_folder,
    read_json,
    write_json,
)

MARKER = "tidal-run.json"
FORMAT = 1
KINDS = ("neural-ode", "flow", "sde", "sequence", "diffusion")
STATES = ("running", "finished", "interrupted", "diverged")
#: Per kind, the command that writes such a run and the one to use on it (error messages).
WRITTEN_BY = {"neural-ode": "tidal fit", "flow": "tidal flow fit", "sde": "tidal fit",
              "sequence": "tidal fit", "diffusion": "tidal diffusion fit"}
READ_BY = {"neural-ode": "tidal predict", "flow": "tidal flow sample", "sde": "tidal report",
           "sequence": "tidal predict --data", "diffusion": "tidal diffusion sample"}


class RunDirectory:
    """A run's folder and its marker. Build one with `create`, `open` or `open_or_create`."""

    def __init__(self, path: Path, marker: dict[str, Any]) -> None:
        self.path = path
        self._marker = marker
        self._cleaned = False  # stale temporaries are removed before this object's first write

    @classmethod
    def create(cls, path: str | Path, kind: str, *, command: str, overwrite: bool = False,
               keep: Iterable[str | Path] = ()) -> RunDirectory:
        """Start a new run in `path`: a missing or empty folder, or, with `overwrite`, a
        tidal run, whose listed files are deleted first (never one of `keep`: the input data).
        """
        path = _folder(path)
        if path.exists() and not path.is_dir():
            raise InvalidArgumentError(f"{path} is a file, not a folder; give a folder for "
                                       "the run (-o).")
        old = cls.find(path)
        if old is None and path.is_dir() and any(path.iterdir()):
            raise InvalidArgumentError(
                f"{path} is not empty and is not a tidal run (it has no {MARKER}); tidal "
                "starts a run only in a new or empty folder: choose another -o.")
        if old is not None:
            old.refuse_if_active()
            if not overwrite:
                resume = (", or --resume to continue it" if old.kind != "flow" else "")
                raise InvalidArgumentError(
                    f"{path} already holds a tidal run ({old.state}); pass --overwrite "
                    f"(overwrite=True) to replace it{resume}.")
            old._delete_files(keep)
        make_folder(path)
        run = cls(path, {"format": FORMAT, "kind": kind, "command": command,
                         "state": "running", "files": [], "process": _this_process()})
        run._write_marker()
        return run

    @classmethod
    def open(cls, path: str | Path, kind: str) -> RunDirectory:
        """The existing run of `kind` in `path`."""
        path = _folder(path)
        run = cls.find(path)
        if run is None:
            raise InvalidArgumentError(
                f"{path} is not a tidal run directory (no {MARKER}); give the folder written "
                f"by `{WRITTEN_BY[kind]} -o RUN`.")
        if run.kind != kind:
            raise InvalidArgumentError(f"{path} holds a {run.kind} run, not a {kind} run; use "
                                       f"`{READ_BY[run.kind]}` for it.")
        return run

    @classmethod
    def open_or_create(cls, path: str | Path, kind: str, *, command: str) -> RunDirectory:
        """The run of `kind` in `path`, or a new one when `path` is missing or empty."""
        if cls.find(_folder(path)) is None:
            return cls.create(path, kind, command=command)
        return cls.open(path, kind)

    @classmethod
    def find(cls, path: Path) -> RunDirectory | None:
        """The run in `path`, or None when `path` holds no marker."""
        marker_path = path / MARKER
        if not marker_path.is_file():
            return None
        try:
            marker = read_json(marker_path)
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidArgumentError(f"{marker_path} is not valid JSON ({error}); the run's "
                                       "marker is damaged.") from error
        return cls(path, _checked_marker(marker, marker_path))

    @property
    def kind(self) -> str:
        return self._marker["kind"]

    @property
    def command(self) -> str:
        return self._marker["command"]

    @property
    def state(self) -> str:
        return self._marker["state"]

    @property
    def files(self) -> frozenset[str]:
        return frozenset(self._marker["files"])

    def was_killed(self) -> bool:
        """True when the run says "running" but its process, on this host, has ended."""
        return self.state == "running" and not self._process_alive()

    def refuse_if_active(self) -> None:
        """Refuse to write into a run another live process is training."""
        if self._active_elsewhere():
            process = self._marker["process"]
            raise InvalidArgumentError(
                f"{self.path} is being trained by process {process['pid']} on "
                f"{process['host']}; wait for it to end, or stop it first.")

    def _active_elsewhere(self) -> bool:
        process = self._marker.get("process") or {}
        return (self.state == "running" and self._process_alive()
                and (process.get("pid"), process.get("host"))
                != (os.getpid(), socket.gethostname()))

    def take_over(self) -> None:
        """Continue this run in this process: refuse if another process is writing it, clean
        the temporaries a killed process left, and mark it running."""
        self.refuse_if_active()
        self.remove_stale_temporaries()
        self.set_state("running")

    def set_state(self, state: str) -> None:
        """Record `state` (one of `STATES`); "running" also records this process."""
        if state not in STATES:
            raise InvalidArgumentError(f"run state {state!r}: use one of {STATES}.")
        self._merge_from_disk()
        self._marker["state"] = state
        if state == "running":
            self._marker["process"] = _this_process()
        else:
            self._marker.pop("process", None)
        self._write_marker()

    def has(self, name: str) -> bool:
        """Whether `name` is one of the run's files and exists."""
        return name in self.files and (self.path / name).is_file()

    def file(self, name: str) -> Path:
        """The path of the run's file `name`; an error when it is missing."""
        if not self.has(name):
            raise InvalidArgumentError(
                f"{self.path / name} is missing; the run is incomplete or was changed by "
                "hand. Start it again with `--overwrite`.")
        return self.path / name

    @contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """Yield a temporary path; on success it replaces the run's file `name` (a relative
        path such as "data/train.csv"), which is listed in the marker first."""
        with atomic_path(self.claim(name)) as tmp:
            yield tmp

    def write_text(self, name: str, text: str) -> None:
        with self.writing(name) as tmp:
            tmp.write_text(text)

    def write_json(self, name: str, value: Any) -> None:
        """Strict JSON: non-finite numbers are written as null."""
        self.write_text(name, json_text(value))

    def remove_stale_temporaries(self) -> None:
        """Delete tidal's temporaries (`.NAME.XXXXXXXX.tidal-tmp`) left by a killed process, in
        the run's folder and the folders of its files. (Done before a process first writes
        into a run that no other live process is training.)"""
        folders = {self.path} | {(self.path / name).parent for name in self.files}
        for folder in folders:
            if folder.is_dir():
                for entry in folder.iterdir():
                    if TEMPORARY.match(entry.name) and entry.is_file():
                        entry.unlink(missing_ok=True)

    def claim(self, name: str) -> Path:
        """List `name` (a relative path such as "data/train.csv") as the run's file and return
        its path, for a writer that writes atomically itself. A file that exists but is not
        listed is refused: it is not tidal's."""
        _checked_name(name, self.path / MARKER)
        path = self.path / name
        self._merge_from_disk()
        if not self._cleaned and not self._active_elsewhere():
            self.remove_stale_temporaries()
        self._cleaned = True
        if name not in self.files:
            self._refuse_outside(path)
            if path.exists():
                raise InvalidArgumentError(
                    f"{path} exists and was not written by tidal; tidal does not replace it: "
                    "move it away, or choose another folder for the run.")
            self._marker["files"] = sorted(self.files | {name})
            self._write_marker()
        make_folder(path.parent)
        return path

    def _delete_files(self, keep: Iterable[str | Path]) -> None:
        """Delete the listed files (then the folders they leave empty, never the run's own);
        refuse first when one of them is a file in `keep`."""
        kept = [Path(k) for k in keep if Path(k).exists()]
        paths = [self.path / name for name in sorted(self.files)]
        for path in paths:
            self._refuse_outside(path)
            if path.exists() and any(path.samefile(k) for k in kept):
                raise InvalidArgumentError(
                    f"{path} is your input data and also a file of the run in {self.path}, "
                    "which --overwrite would delete; copy the data elsewhere first.")
        self.remove_stale_temporaries()
        for path in paths:
            path.unlink(missing_ok=True)
        root = self.path.resolve()
        for folder in sorted({p.parent.resolve() for p in paths}, key=lambda p: -len(p.parts)):
            if folder != root and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def _refuse_outside(self, path: Path) -> None:
        """A run's file must lie in the run's folder, even when a folder on its way is a
        link."""
        if not path.parent.resolve().is_relative_to(self.path.resolve()):
            raise InvalidArgumentError(
                f"{path} lies outside the run's folder {self.path} (through a link); tidal "
                "writes and deletes only inside it.")

    def _merge_from_disk(self) -> None:
        """Keep the names another process (e.g. `tidal report` during training) listed."""
        on_disk = RunDirectory.find(self.path)
        if on_disk is not None:
            self._marker["files"] = sorted(self.files | on_disk.files)

    def _write_marker(self) -> None:
        from tidal import __version__

        write_json(self.path / MARKER, {**self._marker, "tidal_version": __version__})

    def _process_alive(self) -> bool:
        process = self._marker.get("process") or {}
        if process.get("host") != socket.gethostname():
            return True  # another machine's process: assume it may still run
        try:
            os.kill(int(process["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # exists, owned by another user
        return True


def _folder(path: Any) -> Path:
    """A run folder's path, from a str or path-like."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgumentError(f"A run folder (`run_dir=`, `load_run(path)`) must be a path, "
                                   f"a str or pathlib.Path such as 'runs/first'; got "
                                   f"{type(path).__name__}.")
    return Path(path)


def _this_process() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _checked_marker(marker: Any, where: Path) -> dict[str, Any]:
    def fail(problem: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{where}: {problem}; the run's marker is damaged.")

    if not isinstance(marker, dict):
        raise fail(f"expected a JSON object, got {type(marker).__name__}")
    if marker.get("format") != FORMAT:
        raise fail(f"format {marker.get('format')!r} is not {FORMAT} (a run written by "
                   "another version of tidal?)")
    for key, allowed in (("kind", KINDS), ("state", STATES)):
        if marker.get(key) not in allowed:
            raise fail(f"{key} {marker.get(key)!r} is not one of {allowed}")
    if not isinstance(marker.get("command"), str):
        raise fail("command is not a string")
    files = marker.get("files")
    if not isinstance(files, list):
        raise fail("files is not a list of names")
    for name in files:
        _checked_name(name, where)
    process = marker.get("process")
    if marker["state"] == "running" and not (
            isinstance(process, dict) and isinstance(process.get("pid"), int)
            and isinstance(process.get("host"), str)):
        raise fail("a running run needs process {pid, host}")
    return marker


def _checked_name(name: Any, where: Path) -> None:
    """A run's file name: a relative path inside the run's folder, not the marker."""
    pure = PurePosixPath(name) if isinstance(name, str) else None
    if (pure is None or not name or pure.is_absolute() or ".." in pure.parts
            or "\\" in name or str(pure) != name or name == MARKER
            or TEMPORARY.match(pure.name)):
        raise InvalidArgumentError(f"{where}: {name!r} is not a file name inside the run; the "
                                   "run's marker is damaged.")
