"""Reading and writing trajectories as long tables: CSV or Parquet, one row per observation
time, a time column, an optional trajectory-id column and one column per state."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tidal._errors import InvalidArgumentError
from tidal._files import atomic_path
from tidal.data.trajectories import Trajectories

#: Cell texts that mean "not observed" (compared after stripping spaces, ignoring case).
MISSING_TEXTS = frozenset({"", "nan", "na"})

_KINDS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class DataFormatError(InvalidArgumentError):
    """A data file that cannot be read as trajectories. The message names the file and, for a
    cell, its line (CSV; the header is line 1) or data row (Parquet) and its column."""


def read_table(path: str | os.PathLike[str], *, time: str = "t", id: str | None = None,
               states: Sequence[str] | None = None) -> Trajectories:
    """Read trajectories from a long table (`.csv`, or `.parquet` / `.pq`).

    Rows may come in any order: each trajectory's rows are sorted by time, and trajectories
    keep the order in which their ids first appear. A blank cell, `NaN` or `NA` (any case)
    means "not observed"; rows whose cells are all blank are skipped. Spaces around cells are
    ignored. CSV is read as UTF-8, comma-separated, with a header row.

    Args:
        path: the file.
        time: name of the time column.
        id: name of the trajectory-id column; None means the whole file is one trajectory
            (with id "0").
        states: names of the state columns, in order; default every other column.

    Returns:
        The trajectories, with the state columns' names as `state_names`.

    Raises:
        DataFormatError: a missing file, an unknown extension, unknown or missing columns, a
            cell that is not a number, a missing or non-finite time, a time repeated within a
            trajectory, a trajectory with fewer than 2 observed times, or a CSV row with the
            wrong number of fields. The message names the file, the line and the column.
    """
    path = Path(path)
    kind = _kind(path, "read_table")
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file.")
    table = _CsvTable(path) if kind == "csv" else _ParquetTable(path)
    return _trajectories(table, time, id, _state_columns(table, time, id, states))


def write_table(trajectories: Trajectories, path: str | os.PathLike[str], *, time: str = "t",
                id: str | None = "id") -> None:
    """Write trajectories as a long table (`.csv`, or `.parquet` / `.pq`), atomically.

    Columns: `time`, `id` (unless None, allowed for a single trajectory), then one per state.
    Floats are written exactly (shortest round-trip form) and unobserved entries as blank
    cells (CSV) or nulls (Parquet), so `read_table(path, time=time, id=id)` gives back equal
    trajectories. The table goes to a temporary file in the same directory, then replaces
    `path`.
    """
    path = Path(path)
    kind = _kind(path, "write_table")
    names = [time, *([] if id is None else [id]), *trajectories.state_names]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(
            f"`write_table(time={time!r}, id={id!r})` clashes with the state names "
            f"{trajectories.state_names}; choose other column names.")
    if id is None and len(trajectories) > 1:
        raise InvalidArgumentError(
            f"`write_table(id=None)` can only write one trajectory; got {len(trajectories)}. "
            "Give an id column name, e.g. id='id'.")
    if not path.parent.is_dir():
        raise DataFormatError(f"{path}: the directory {path.parent} does not exist; create it "
                              "first.")
    with atomic_path(path) as temporary:
        writer = _write_csv if kind == "csv" else _write_parquet
        writer(trajectories, temporary, names, id is not None)


def _kind(path: Path, function: str) -> str:
    kind = _KINDS.get(path.suffix.lower())
    if kind is None:
        raise DataFormatError(
            f"{path}: `{function}` does not know the extension {path.suffix!r}; use one of "
            f"{', '.join(_KINDS)}.")
    return kind


class _CsvTable:
    """A CSV file's header and cells (as text), with each row's first line in the file."""

    def __init__(self, path: Path):
        self.path = path
        self.columns: list[str] = []
        rows: list[list[str]] = []
        self.lines: list[int] = []
        try:
            with open(path, newline="", encoding="utf-8-sig") as file:
                self._read(csv.reader(file), rows)
        except UnicodeDecodeError as error:
            raise DataFormatError(f"{path}: not UTF-8 text ({error}); save it as UTF-8 "
                                  "CSV.") from None
        if not self.columns:
            raise DataFormatError(f"{path}: the file is empty; it needs a header row naming "
                                  "the columns, then one row per observation.")
        _check_header(path, self.columns)
        self.cells = dict(zip(self.columns, (list(c) for c in zip(*rows)))) if rows else {}

    def _read(self, reader: Any, rows: list[list[str]]) -> None:
        previous = 0
        try:
            for record in reader:
                line, previous = previous + 1, reader.line_num
                if all(not field.strip() for field in record):
                    continue
                if not self.columns:
                    self.columns = [field.strip() for field in record]
                elif len(record) != len(self.columns):
                    raise DataFormatError(
                        f"{self.path}: line {line} has {len(record)} fields but the header has "
                        f"{len(self.columns)}; every row needs one field per column (leave a "
                        "field empty for a missing value).")
                else:
                    rows.append(record)
                    self.lines.append(line)
        except csv.Error as error:
            raise DataFormatError(f"{self.path}: line {reader.line_num}: not valid CSV "
                                  f"({error}).") from None

    def __len__(self) -> int:
        return len(self.lines)

    def where(self, row: int, column: str) -> str:
        """The line of a cell: its row's first line, plus line breaks in quoted cells before it."""
        before = self.columns[:self.columns.index(column)]
        breaks = sum(_line_breaks(self.cells[c][row]) for c in before)
        return f"line {self.lines[row] + breaks}"

    def numbers(self, column: str) -> np.ndarray:
        return _parse_numbers(self, column, self.cells[column])

    def texts(self, column: str) -> list[str]:
        return [cell.strip() for cell in self.cells[column]]


class _ParquetTable:
    """A Parquet file's columns, converted when asked for; rows are counted from 1."""

    def __init__(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = path
        try:
            self.table = pq.read_table(path)
        except (pa.ArrowException, OSError) as error:
            raise DataFormatError(f"{path}: not a readable Parquet file ({error}).") from None
        self.columns = [str(name) for name in self.table.column_names]
        _check_header(path, self.columns)

    def __len__(self) -> int:
        return self.table.num_rows

    def where(self, row: int, column: str) -> str:
        return f"row {row + 1}"

    def numbers(self, column: str) -> np.ndarray:
        import pyarrow as pa

        values = self.table.column(self.columns.index(column))
        kind = values.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            return values.cast(pa.float64()).to_numpy()
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
            return _parse_numbers(self, column, values.to_pylist())
        raise DataFormatError(f"{self.path}: column {column!r} has type {kind}; it must hold "
                              "numbers (integers or floats).")

    def texts(self, column: str) -> list[str]:
        cells = self.table.column(self.columns.index(column)).to_pylist()
        return ["" if cell is None else str(cell).strip() for cell in cells]


_Table = _CsvTable | _ParquetTable


def _at(table: _Table, row: int, column: str) -> str:
    """Where a cell is, for messages: "data.csv: line 7, column 'x'"."""
    return f"{table.path}: {table.where(row, column)}, column {column!r}"


def _line_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _check_header(path: Path, columns: list[str]) -> None:
    if "" in columns:
        raise DataFormatError(f"{path}: column {columns.index('') + 1} of the header has no "
                              "name; name it, or remove the trailing separator.")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DataFormatError(f"{path}: the header names column(s) {repeated} more than once; "
                              "column names must be unique.")


def _state_columns(table: _Table, time: str, id: str | None,
                   states: Sequence[str] | None) -> list[str]:
    available = ", ".join(repr(c) for c in table.columns)
    for role, name in (("time", time), ("id", id)):
        if name is not None and name not in table.columns:
            raise DataFormatError(f"{table.path}: no {role} column {name!r}; the columns are "
                                  f"{available}. Name it with `{role}=...`.")
    if states is None:
        chosen = [c for c in table.columns if c not in (time, id)]
    else:
        chosen = [states] if isinstance(states, str) else list(states)
        unknown = [s for s in chosen if s not in table.columns]
        if unknown:
            raise DataFormatError(f"{table.path}: no state column(s) {unknown}; the columns "
                                  f"are {available}.")
        if len(set(chosen)) != len(chosen) or {time, id} & set(chosen):
            raise DataFormatError(f"{table.path}: `states={chosen}` must be distinct and must "
                                  f"not include the time or id column.")
    if not chosen:
        raise DataFormatError(f"{table.path}: no state columns (the columns are {available}); "
                              "the table needs at least one column besides time and id.")
    return chosen


def _parse_numbers(table: _Table, column: str, cells: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(cells))
    for row, cell in enumerate(cells):
        text = "" if cell is None else cell.strip()
        if text.lower() in MISSING_TEXTS:
            out[row] = math.nan
            continue
        try:
            if "_" in text:
                raise ValueError(text)
            out[row] = float(text)
        except ValueError:
            raise DataFormatError(
                f"{_at(table, row, column)}: {cell!r} is not a number; write a number, or leave "
                "the cell blank if it was not observed.") from None
    return out


def _trajectories(table: _Table, time: str, id: str | None, states: list[str]
                  ) -> Trajectories:
    if len(table) == 0:
        raise DataFormatError(f"{table.path}: the table has a header but no data rows.")
    times = table.numbers(time)
    bad = np.flatnonzero(~np.isfinite(times))
    if bad.size:
        problem = "is missing" if np.isnan(times[bad[0]]) else f"is {times[bad[0]]}"
        raise DataFormatError(f"{_at(table, bad[0], time)}: the time {problem}; every row "
                              "needs a finite time.")
    values = np.stack([table.numbers(s) for s in states], axis=1)
    bad = np.argwhere(np.isinf(values))
    if bad.size:
        row, j = bad[0]
        raise DataFormatError(f"{_at(table, row, states[j])}: the value is infinite; leave the "
                              "cell blank if it was not observed.")
    labels = _labels(table, id)
    _, first, code = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))[code]
    order = np.lexsort((times, rank))
    starts = np.flatnonzero(np.diff(rank[order], prepend=-1))
    groups = np.split(order, starts[1:])
    for rows in groups:
        _check_trajectory(table, id, labels[rows[0]], time, times[rows], values[rows], rows)
    never = np.isnan(values).all(axis=0)
    if never.any():
        raise DataFormatError(f"{table.path}: column {states[int(np.argmax(never))]!r} has no "
                              "values; leave it out with `states=[...]`.")
    return Trajectories([times[r] for r in groups], [values[r] for r in groups],
                        [str(labels[r[0]]) for r in groups], states)


def _labels(table: _Table, id: str | None) -> np.ndarray:
    if id is None:
        return np.full(len(table), "0", dtype=object)
    labels = np.array(table.texts(id), dtype=object)
    empty = np.flatnonzero(labels == "")
    if empty.size:
        raise DataFormatError(f"{_at(table, empty[0], id)}: the trajectory id is missing; "
                              "every row needs one.")
    return labels


def _check_trajectory(table: _Table, id: str | None, name: str, time: str, times: np.ndarray,
                      values: np.ndarray, rows: np.ndarray) -> None:
    repeated = np.flatnonzero(np.diff(times) == 0)
    if repeated.size:
        pair = sorted(rows[repeated[0]:repeated[0] + 2])
        lines = " and ".join(table.where(r, time) for r in pair)
        hint = (" If the file holds several trajectories, name the id column with `id=...`."
                if id is None else " Merge the two rows or correct one of the times.")
        raise DataFormatError(f"{table.path}: trajectory {name!r} has the time "
                              f"{float(times[repeated[0]])!r} (column {time!r}) twice, at "
                              f"{lines}.{hint}")
    observed = int((~np.isnan(values)).any(axis=1).sum())
    if observed < 2:
        raise DataFormatError(f"{table.path}: trajectory {name!r} has {observed} observed "
                              "time(s); each trajectory needs at least 2. Remove it or add "
                              "observations.")


def _write_csv(data: Trajectories, path: Path, names: list[str], with_id: bool) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(names)
        for name, times, values in zip(data.ids, data.times, data.values):
            for t, row in zip(times.tolist(), values.tolist()):
                cells = ["" if math.isnan(x) else repr(x) for x in row]
                writer.writerow([repr(t), *([name] if with_id else []), *cells])


def _write_parquet(data: Trajectories, path: Path, names: list[str], with_id: bool) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = np.concatenate(data.values)
    columns = [pa.array(np.concatenate(data.times))]
    if with_id:
        columns.append(pa.array(np.repeat(data.ids, [len(t) for t in data.times]).tolist(),
                                type=pa.string()))
    columns += [pa.array(np.ascontiguousarray(v), mask=np.isnan(v)) for v in values.T]
    pq.write_table(pa.table(columns, names=names), path)
