"""Reading and writing trajectories as long tables: CSV or Parquet, one row per observation
time, a time column, an optional trajectory-id column and one column per state.

CSV is read in two ways with one result. The fast way hands the file to pyarrow's CSV reader;
pyarrow knows no line numbers, so at the first problem that needs one (a cell that is not a
number, a row with the wrong number of fields, a missing time, a repeated time, ...) the file
is read again the exact way, row by row with Python's `csv` module, which names the line and
the column. A valid file is read once, at pyarrow's speed and memory.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tidal._errors import InvalidArgumentError
from tidal._extras import require
from tidal._files import atomic_path
from tidal.data.trajectories import Trajectories, any_per_row

#: Cell texts that mean "not observed" (compared after stripping spaces, ignoring case).
MISSING_TEXTS = frozenset({"", "nan", "na"})

#: The largest magnitude accepted for a time or a value. Training standardizes each state by
#: its mean and standard deviation; below 1e150 the squares stay below 1e300, so the spread of
#: up to 10^8 observations is finite in float64.
MAX_MAGNITUDE = 1e150

_KINDS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}

#: Separators other than ',' that a header may reveal, with how messages name them.
_OTHER_SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}


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
            cell that is not a number, a missing or non-finite time, a time or value beyond
            `MAX_MAGNITUDE` (1e150), a time repeated within a trajectory, a trajectory with
            fewer than 2 observed times, or a CSV row with the wrong number of fields. The
            message names the file, the line and the column, and hints at a file that uses
            another separator than ',' or has no header row.
        MissingExtraError: pyarrow is not installed (it comes with the `cli` extra).
    """
    require(["pyarrow"], "tidal.read_table")
    if id is not None and id == time:
        raise InvalidArgumentError(
            f"`read_table(time={time!r}, id={id!r})` name the same column; `id` names the "
            "column saying which trajectory each row belongs to (None: the whole file is one "
            "trajectory).")
    path = Path(path)
    kind = _kind(path, "read_table")
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file.")
    if kind == "parquet":
        table: _Table = _ParquetTable(path)
        return _trajectories(table, time, id, _state_columns(table, time, id, states))
    try:
        table = _ArrowCsvTable(path)
        chosen = _state_columns(table, time, id, states)
        table.load(time, id, chosen)
        return _trajectories(table, time, id, chosen)
    except _Rescan:
        table = _CsvTable(path)
        return _trajectories(table, time, id, _state_columns(table, time, id, states))


def write_table(trajectories: Trajectories, path: str | os.PathLike[str], *, time: str = "t",
                id: str | None = "id") -> None:
    """Write trajectories as a long table (`.csv`, or `.parquet` / `.pq`), atomically.

    Columns: `time`, `id` (unless None, allowed for a single trajectory), then one per state.
    Floats are written exactly (shortest round-trip form) and unobserved entries as blank
    cells (CSV) or nulls (Parquet), so `read_table(path, time=time, id=id)` gives back equal
    trajectories. The table goes to a temporary file in the same directory, then replaces
    `path`. Needs pyarrow (the `cli` extra).
    """
    require(["pyarrow"], "tidal.write_table")
    if not isinstance(trajectories, Trajectories):
        raise InvalidArgumentError(
            f"`write_table(trajectories=...)` must be a tidal.Trajectories; got "
            f"{type(trajectories).__name__}. Build one with tidal.Trajectories(times, values).")
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


class _Rescan(Exception):
    """The fast CSV reader met something it cannot place in the file: read it the exact way."""


class _ArrowCsvTable:
    """A CSV file read by pyarrow: the header first (with Python's `csv`, for its exact
    handling of blank lines, quotes and a byte-order mark), then, in `load`, the needed columns
    from the bytes after it. It cannot say where a cell is: `where` raises `_Rescan`."""

    def __init__(self, path: Path):
        self.path = path
        self.columns, self._data_start = _csv_header(path)
        _check_header(path, self.columns)
        self._table: Any = None

    def load(self, time: str, id: str | None, states: list[str]) -> None:
        """Read the time, id and state columns (ids dictionary-encoded). One thread: on 10^6
        rows pyarrow's threads cost more CPU and memory than they saved in wall time on the
        2-core machine it was measured on (docs/benchmarks.md, "Large tables")."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        types = {name: pa.float64() for name in [time, *states]}
        if id is not None:
            types[id] = pa.dictionary(pa.int32(), pa.string())
        options = (
            pacsv.ReadOptions(column_names=self.columns, use_threads=False),
            pacsv.ParseOptions(newlines_in_values=True),
            pacsv.ConvertOptions(column_types=types, include_columns=list(types),
                                 null_values=_MISSING_VARIANTS, strings_can_be_null=False,
                                 quoted_strings_can_be_null=True))
        try:
            with pa.OSFile(str(self.path)) as source:
                source.seek(self._data_start)
                self._table = pacsv.read_csv(source, *options)
        except (pa.ArrowException, OSError):
            raise _Rescan() from None

    def __len__(self) -> int:
        return self._table.num_rows

    def where(self, row: int, column: str) -> str:
        raise _Rescan()

    def numbers(self, column: str) -> np.ndarray:
        return self._table.column(column).to_numpy()

    def ids(self, column: str) -> tuple[np.ndarray, list[str]]:
        return _arrow_ids(self._table.column(column))


def _variants(text: str) -> list[str]:
    """Every upper/lower-case spelling of `text`."""
    spellings = [""]
    for char in text:
        spellings = [s + c for s in spellings for c in {char.lower(), char.upper()}]
    return spellings


_MISSING_VARIANTS = sorted({v for text in MISSING_TEXTS for v in _variants(text)})


def _csv_header(path: Path) -> tuple[list[str], int]:
    """The header's stripped names and the byte offset where the data rows begin. Raises
    `_Rescan` for anything unusual (an empty file, bad UTF-8, bad quoting)."""
    consumed = 0

    def lines(file: Any) -> Iterator[str]:
        nonlocal consumed
        for number, raw in enumerate(file):
            consumed += len(raw)
            yield raw.decode("utf-8-sig" if number == 0 else "utf-8")

    try:
        with open(path, "rb") as file:
            for record in csv.reader(lines(file)):
                if any(field.strip() for field in record):
                    return [field.strip() for field in record], consumed
    except (UnicodeDecodeError, csv.Error):
        pass
    raise _Rescan()


def _arrow_ids(column: Any) -> tuple[np.ndarray, list[str]]:
    """Trajectory ids as codes, numbered in order of first appearance, and the names they
    stand for (the cells as stripped text; "" for nulls). Dictionary encoding numbers the
    distinct cells in that order; each is converted to text once."""
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):
        encoded = column.unify_dictionaries().combine_chunks()
    else:
        encoded = column.combine_chunks().dictionary_encode()
    texts = ["" if v is None else str(v).strip() for v in encoded.dictionary.to_pylist()]
    indices = encoded.indices
    if indices.null_count:
        indices = indices.fill_null(len(texts))
    merged: dict[str, int] = {}
    renumber = np.array([merged.setdefault(text, len(merged)) for text in [*texts, ""]])
    return renumber[indices.to_numpy()], list(merged)


class _CsvTable:
    """A CSV file's header and cells (as text), with each row's first line in the file: the
    exact reader, which names the line of any cell."""

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
                    _check_header(self.path, self.columns)
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

    def ids(self, column: str) -> tuple[np.ndarray, list[str]]:
        """Codes numbered in order of first appearance, and the names (stripped cells)."""
        names: dict[str, int] = {}
        codes = [names.setdefault(cell.strip(), len(names)) for cell in self.cells[column]]
        return np.array(codes, dtype=np.int64), list(names)


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

    def ids(self, column: str) -> tuple[np.ndarray, list[str]]:
        return _arrow_ids(self.table.column(self.columns.index(column)))


_Table = _ArrowCsvTable | _CsvTable | _ParquetTable


def _at(table: _Table, row: int, column: str) -> str:
    """Where a cell is, for messages: "data.csv: line 7, column 'x'"."""
    return f"{table.path}: {table.where(row, column)}, column {column!r}"


def _line_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _check_header(path: Path, columns: list[str]) -> None:
    if len(columns) == 1:
        hint = _separator_hint(columns)
        if hint:
            raise DataFormatError(f"{path}: the header has one column, {columns[0]!r}; {hint}")
    if "" in columns:
        raise DataFormatError(f"{path}: column {columns.index('') + 1} of the header has no "
                              "name; name it, or remove the trailing separator.")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DataFormatError(f"{path}: the header names column(s) {repeated} more than once; "
                              "column names must be unique.")


def _separator_hint(columns: list[str]) -> str:
    """A hint when the column names hold another separator than ',' (else "")."""
    for separator, name in _OTHER_SEPARATORS.items():
        if any(separator in column for column in columns):
            return (f"the file seems to use {name} as separator. tidal reads comma-separated "
                    "files with '.' as the decimal point: save it as such (e.g. in pandas, "
                    f"read_csv(path, sep={separator!r}, decimal=',').to_csv(new_path, "
                    "index=False)).")
    return ""


def _headerless_hint(table: _Table) -> str:
    """A hint when most column names are numbers: the first row is probably data (else "")."""
    numbers = sum(_is_number(name) for name in table.columns)
    if 2 * numbers <= len(table.columns):
        return ""
    if isinstance(table, _ParquetTable):
        return (" Hint: the column names look like numbers; if the table was saved without "
                "names, give its columns names (the time, the id if several trajectories, one "
                "per state).")
    return (" Hint: the first row looks like data, not column names; if the file has no header "
            "row, add one naming the columns (the time, the id if several trajectories, one per "
            "state), e.g. t,id,x,y.")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _state_columns(table: _Table, time: str, id: str | None,
                   states: Sequence[str] | None) -> list[str]:
    available = ", ".join(repr(c) for c in table.columns)
    separator = _separator_hint(table.columns)
    hint = _headerless_hint(table) or (f" Hint: {separator}" if separator else "")
    for role, name in (("time", time), ("id", id)):
        if name is not None and name not in table.columns:
            raise DataFormatError(f"{table.path}: no {role} column {name!r}; the columns are "
                                  f"{available}. Name it with `{role}=...`.{hint}")
    if states is None:
        chosen = [c for c in table.columns if c not in (time, id)]
    else:
        chosen = [states] if isinstance(states, str) else list(states)
        unknown = [s for s in chosen if s not in table.columns]
        if unknown:
            raise DataFormatError(f"{table.path}: no state column(s) {unknown}; the columns "
                                  f"are {available}.{hint}")
        if len(set(chosen)) != len(chosen) or {time, id} & set(chosen):
            raise DataFormatError(f"{table.path}: `states={chosen}` must be distinct and must "
                                  f"not include the time or id column.")
    if not chosen:
        raise DataFormatError(f"{table.path}: no state columns (the columns are {available}); "
                              f"the table needs at least one column besides time and id.{hint}")
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
    _check_times(table, time, times)
    values = np.stack([table.numbers(s) for s in states], axis=1)
    _check_values(table, states, values)
    rank, names = _trajectory_ids(table, id)
    order = _row_order(times, rank)
    if order is not None:
        times, values, rank = times[order], values[order], rank[order]
    starts = np.flatnonzero(np.diff(rank, prepend=-1))
    _check_trajectories(table, id, time, times, values, rank, names, order, starts)
    never = np.isnan(values).all(axis=0)
    if never.any():
        raise DataFormatError(f"{table.path}: column {states[int(np.argmax(never))]!r} has no "
                              "values; leave it out with `states=[...]`.")
    lengths = np.diff([*starts.tolist(), len(times)]).tolist()
    return Trajectories._from_flat(times, values, lengths, names, states)


def _check_times(table: _Table, time: str, times: np.ndarray) -> None:
    """Every time finite and within `MAX_MAGNITUDE`."""
    if np.abs(times).max() <= MAX_MAGNITUDE:
        return
    bad = np.flatnonzero(~(np.abs(times) <= MAX_MAGNITUDE))
    value = float(times[bad[0]])
    if math.isfinite(value):
        raise DataFormatError(
            f"{_at(table, bad[0], time)}: the time {value!r} is too large in magnitude (the "
            f"limit is {MAX_MAGNITUDE:g}); express the times in a larger unit.")
    problem = "is missing" if math.isnan(value) else f"is {value}"
    raise DataFormatError(f"{_at(table, bad[0], time)}: the time {problem}; every row needs a "
                          "finite time.")


def _check_values(table: _Table, states: list[str], values: np.ndarray) -> None:
    """Every value NaN (not observed) or within `MAX_MAGNITUDE`: training standardizes each
    state by its mean and spread, and larger values would overflow them."""
    if -MAX_MAGNITUDE <= np.fmin.reduce(values, axis=None) <= np.fmax.reduce(values, axis=None) \
            <= MAX_MAGNITUDE or np.isnan(values).all():
        return
    bad = np.argwhere(np.abs(values) > MAX_MAGNITUDE)
    row, j = bad[0]
    value = float(values[row, j])
    if math.isinf(value):
        raise DataFormatError(f"{_at(table, row, states[j])}: the value is infinite; leave the "
                              "cell blank if it was not observed.")
    raise DataFormatError(
        f"{_at(table, row, states[j])}: the value {value!r} is too large in magnitude (the "
        f"limit is {MAX_MAGNITUDE:g}): training standardizes each state by its mean and spread, "
        "whose squares would overflow. Express the column in a larger unit (e.g. divide it by "
        "a power of ten).")


def _row_order(times: np.ndarray, rank: np.ndarray) -> np.ndarray | None:
    """The rows sorted by trajectory, then time (stable), or None when they already are (the
    usual case, and what `write_table` writes)."""
    step = np.diff(rank)
    if (step >= 0).all() and ((step > 0) | (np.diff(times) > 0)).all():
        return None
    return np.lexsort((times, rank))


def _trajectory_ids(table: _Table, id: str | None) -> tuple[np.ndarray, list[str]]:
    """Each row's trajectory, numbered in the order in which the ids first appear, and the
    trajectories' ids in that order."""
    if id is None:
        return np.zeros(len(table), dtype=np.int64), ["0"]
    codes, names = table.ids(id)
    if "" in names:
        empty = np.flatnonzero(codes == names.index(""))
        if empty.size:
            raise DataFormatError(f"{_at(table, empty[0], id)}: the trajectory id is missing; "
                                  "every row needs one.")
        names = names[:names.index("")]  # only the nulls' code, which no row uses
    return codes, names


#: column names that usually hold trajectory ids (named in the hint for repeated times)
_ID_NAMES = ("id", "trajectory", "trajectory_id", "series", "series_id", "run", "sample")


def _check_trajectories(table: _Table, id: str | None, time: str, times: np.ndarray,
                        values: np.ndarray, rank: np.ndarray, names: list[str],
                        order: np.ndarray | None, starts: np.ndarray) -> None:
    """The first trajectory with a repeated time or fewer than 2 observed times. The arrays are
    sorted by trajectory and time; `order` holds each sorted row's row in the table (None: the
    table was in that order)."""
    repeated = np.flatnonzero((np.diff(rank) == 0) & (np.diff(times) == 0))
    observed = np.add.reduceat(any_per_row(~np.isnan(values)).astype(np.int64), starts)
    few = np.flatnonzero(observed < 2)
    if repeated.size and (not few.size or rank[repeated[0]] <= few[0]):
        pair = [repeated[0], repeated[0] + 1]
        pair = pair if order is None else sorted(order[pair])
        lines = " and ".join(table.where(r, time) for r in pair)
        likely = [name for name in table.columns if name.lower() in _ID_NAMES][:1]
        hint = (" Merge the two rows or correct one of the times." if id is not None else
                " If the file holds several trajectories, name the id column with `id=...`"
                + "".join(f" (column {name!r} looks like one)" for name in likely) + ".")
        raise DataFormatError(f"{table.path}: trajectory {names[rank[repeated[0]]]!r} has the "
                              f"time {float(times[repeated[0]])!r} (column {time!r}) twice, at "
                              f"{lines}.{hint}")
    if few.size:
        raise DataFormatError(f"{table.path}: trajectory {names[few[0]]!r} has "
                              f"{int(observed[few[0]])} observed time(s); each trajectory needs "
                              "at least 2. Remove it or add observations.")


def _write_csv(data: Trajectories, path: Path, names: list[str], with_id: bool) -> None:
    """The header by Python's `csv` (quoted only where needed), the rows by pyarrow: floats
    in their shortest round-trip form, NaN as blank cells; ids quoted when any needs it."""
    import io as text_io

    import pyarrow.csv as pacsv

    header = text_io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(names)
    plain = all(not _NEEDS_QUOTES.intersection(name) and name == name.strip()
                for name in data.ids)
    options = pacsv.WriteOptions(include_header=False,
                                 quoting_style="none" if plain or not with_id else "needed")
    with open(path, "wb") as file:
        file.write(header.getvalue().encode("utf-8"))
        pacsv.write_csv(_arrow_table(data, names, with_id), file, options)


_NEEDS_QUOTES = frozenset(',"\n\r')


def _write_parquet(data: Trajectories, path: Path, names: list[str], with_id: bool) -> None:
    import pyarrow.parquet as pq

    pq.write_table(_arrow_table(data, names, with_id), path)


def _arrow_table(data: Trajectories, names: list[str], with_id: bool) -> Any:
    """The long table as a pyarrow Table: times, ids (strings), states (nulls where NaN)."""
    import pyarrow as pa

    values = np.concatenate(data.values)
    columns = [pa.array(np.concatenate(data.times))]
    if with_id:
        lengths = [len(t) for t in data.times]
        columns.append(pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)),
            pa.array(data.ids, type=pa.string())).cast(pa.string()))
    columns += [pa.array(np.ascontiguousarray(v), mask=np.isnan(v)) for v in values.T]
    return pa.table(columns, names=names)
