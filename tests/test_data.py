"""tidal.data: Trajectories, Scaling, and the CSV / Parquet readers and writers.

Expected values are written by hand (line numbers counted in the files as written here, grids
and statistics computed on paper or with numpy directly)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tidal
from tidal.data import DataFormatError, Scaling, Trajectories, io, read_table, write_table

NAN = math.nan


def _write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _example() -> Trajectories:
    """Two trajectories with irregular times and missing entries."""
    return Trajectories(
        times=[[0.0, 0.5, 2.0], [0.25, 0.5, 1.0, 3.0]],
        values=[[[1.0, 10.0], [2.0, NAN], [3.0, 30.0]],
                [[NAN, 5.0], [4.0, 6.0], [NAN, NAN], [8.0, 7.0]]],
        ids=["a", "b"], state_names=["p", "q"])


# --- Trajectories ------------------------------------------------------------------------------


def test_trajectories_defaults_and_properties():
    data = Trajectories([[0.0, 1.0], [0.0, 2.0, 3.0]],
                        [[[1.0], [2.0]], [[1.0], [NAN], [3.0]]])
    assert data.ids == ("0", "1")
    assert data.state_names == ("x0",)
    assert data.n_trajectories == len(data) == 2 and data.n_states == 1
    assert data.t_span == (0.0, 3.0)
    assert data.times[1].dtype == np.float64 and data.values[1].shape == (3, 1)
    assert data.masks[1][:, 0].tolist() == [True, False, True]
    with pytest.raises(ValueError):
        data.values[0][0, 0] = 5.0  # read-only


@pytest.mark.parametrize(("times", "values", "match"), [
    ([[0.0, 1.0, 1.0]], [[[1.0], [2.0], [3.0]]], r"Trajectory '0'.*index 2"),
    ([[0.0, NAN]], [[[1.0], [2.0]]], r"Trajectory '0'.*index 1.*finite"),
    ([[0.0, 1.0]], [[[1.0], [2.0], [3.0]]], r"shape \[2, 1\]"),
    ([[0.0, 1.0], [0.0, 1.0]], [[[1.0], [2.0]], [[1.0, 2.0], [3.0, 4.0]]], r"Trajectory '1'"),
    ([[0.0, 1.0]], [[[1.0], [NAN]]], r"Trajectory '0' has 1 observed time"),
    ([[0.0, 1.0]], [[[1.0], [math.inf]]], r"index \(1, 0\) is infinite"),
    ([[0.0, 1.0]], [np.zeros((2, 0))], r"D >= 1"),
    # several trajectories: the first one at fault is named, with its own indices
    ([[0.0, 1.0], [5.0, 6.0, 5.5], [0.0, NAN]], [[[1.0], [2.0]], [[1.0], [2.0], [3.0]],
                                                 [[1.0], [2.0]]],
     r"Trajectory '1'.*index 2 \(5.5\) is not after index 1 \(6.0\)"),
    ([[0.0, 1.0], [], [2.0, 1.0]], [[[1.0], [2.0]], np.zeros((0, 1)), [[1.0], [2.0]]],
     r"Trajectory '2'.*index 1 \(1.0\) is not after index 0"),
    ([[0.0, 1.0], [0.0, 1.0, 2.0]], [[[1.0], [2.0]], [[1.0], [NAN], [-math.inf]]],
     r"Trajectory '1': value at index \(2, 0\) is infinite"),
    ([[0.0, 1.0], [], [0.0, 1.0]], [[[1.0], [2.0]], np.zeros((0, 1)), [[1.0], [2.0]]],
     r"Trajectory '1' has 0 observed time"),
])
def test_trajectories_validation(times, values, match):
    with pytest.raises(tidal.InvalidArgumentError, match=match):
        Trajectories(times, values)


def test_trajectories_rejects_repeated_ids():
    with pytest.raises(tidal.InvalidArgumentError, match="distinct"):
        Trajectories([[0.0, 1.0]] * 2, [[[1.0], [2.0]]] * 2, ids=["a", "a"])


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_trajectories_reject_a_missing_id_or_state_name(missing):
    """str() made them the names "None" and "nan"."""
    with pytest.raises(tidal.InvalidArgumentError, match=r"ids=\.\.\.\)`: entry 1 is"):
        Trajectories([[0.0, 1.0]] * 2, [[[1.0], [2.0]]] * 2, ids=["a", missing])
    with pytest.raises(tidal.InvalidArgumentError, match=r"state_names=\.\.\.\)`: entry 0"):
        Trajectories([[0.0, 1.0]], [[[1.0], [2.0]]], state_names=[missing])


def test_getitem_keeps_ids():
    data = _example()
    assert data[1].ids == ("b",) and len(data[-1]) == 1
    assert data[[1, 0]].ids == ("b", "a")
    assert data[np.array([False, True])].ids == ("b",)
    assert data[1:] == data[[1]]
    np.testing.assert_array_equal(data[1].times[0], [0.25, 0.5, 1.0, 3.0])
    with pytest.raises(IndexError):
        data[2]
    with pytest.raises(IndexError):
        data[2:]


def test_equality_treats_nan_as_equal():
    assert _example() == _example()
    other = Trajectories(_example().times, [v + 0.0 for v in _example().values], ["a", "c"],
                         ["p", "q"])
    assert other != _example()


def test_split_fractions_cover_everything_and_are_deterministic():
    data = Trajectories([[0.0, 1.0]] * 10, [[[1.0], [2.0]]] * 10)
    parts = data.split(0.75, 0.125, 0.125, seed=3)
    assert [len(p) for p in parts] == [8, 1, 1]  # 7.5, 1.25, 1.25 -> largest remainder first
    assert sorted(i for p in parts for i in p.ids) == sorted(data.ids)
    assert all(list(p.ids) == sorted(p.ids, key=int) for p in parts)  # original order kept
    assert parts == data.split(0.75, 0.125, 0.125, seed=3)
    assert any(a != b for a, b in zip(parts, data.split(0.75, 0.125, 0.125, seed=4)))


def test_split_counts_may_leave_some_out():
    data = Trajectories([[0.0, 1.0]] * 10, [[[1.0], [2.0]]] * 10)
    train, val = data.split(6, 3, seed=0)
    assert (len(train), len(val)) == (6, 3)
    assert not set(train.ids) & set(val.ids)


@pytest.mark.parametrize(("parts", "match"), [
    ((0.9, 0.05, 0.05), "empty part"),
    ((8, 3), "sum to at most"),
    ((5, 0.5), "not a mix"),
    ((0.7, 0.7), "sum to at most 1"),
    ((), "at least one"),
])
def test_split_errors(parts, match):
    data = Trajectories([[0.0, 1.0]] * 10, [[[1.0], [2.0]]] * 10)
    with pytest.raises(tidal.InvalidArgumentError, match=match):
        data.split(*parts, seed=0)


def test_to_grid_on_a_hand_made_example():
    ts, ys, mask = _example().to_grid(dtype=torch.float32)
    assert ts.dtype == torch.float64 and ys.dtype == torch.float32 and mask.dtype == torch.bool
    assert ts.tolist() == [0.0, 0.25, 0.5, 1.0, 2.0, 3.0]
    expected_a = [[1, 10], [0, 0], [2, 0], [0, 0], [3, 30], [0, 0]]
    expected_b = [[0, 0], [0, 5], [4, 6], [0, 0], [0, 0], [8, 7]]
    assert ys[:, 0].tolist() == expected_a and ys[:, 1].tolist() == expected_b
    assert mask[:, 0].tolist() == [[True, True], [False, False], [True, False],
                                   [False, False], [True, True], [False, False]]
    assert mask[:, 1].tolist() == [[False, False], [False, True], [True, True],
                                   [False, False], [False, False], [True, True]]


def test_initial_states_fill_from_first_observation():
    np.testing.assert_array_equal(_example().initial_states(), [[1.0, 10.0], [4.0, 5.0]])
    data = Trajectories([[0.0, 1.0], [0.0, 1.0]], [[[1.0, NAN], [2.0, NAN]],
                                                   [[NAN, 4.0], [3.0, 6.0]]])
    np.testing.assert_array_equal(data.initial_states(), [[1.0, 5.0], [3.0, 4.0]])  # mean 5
    np.testing.assert_array_equal(data[0].initial_states(), [[1.0, 0.0]])  # never observed


# --- Scaling -----------------------------------------------------------------------------------


def test_scaling_fit_uses_observed_entries():
    scaling = Scaling.fit(_example())
    p = [1.0, 2.0, 3.0, 4.0, 8.0]
    q = [10.0, 30.0, 5.0, 6.0, 7.0]
    assert scaling.state_offset == pytest.approx((np.mean(p), np.mean(q)))
    assert scaling.state_scale == pytest.approx((np.std(p), np.std(q)))
    assert scaling.time_scale == 1.0


def test_scaling_floors_a_constant_state():
    data = Trajectories([[0.0, 1.0]], [[[2.0, 1.0], [2.0, 3.0]]])
    scaling = Scaling.fit(data, time_scale=5.0)
    assert scaling.state_scale[0] == pytest.approx(2e-8) and scaling.time_scale == 5.0
    scaled = data.scaled(scaling)
    np.testing.assert_array_equal(scaled.times[0], [0.0, 0.2])
    np.testing.assert_allclose(scaled.values[0], [[0.0, -1.0], [0.0, 1.0]])


def test_scaling_round_trips_arrays_tensors_and_json():
    scaling = Scaling((1.0, -2.0), (0.5, 4.0), time_scale=3.0)
    x = np.array([[1.5, 2.0], [NAN, -6.0]])
    np.testing.assert_allclose(scaling.scale_values(x), [[1.0, 1.0], [NAN, -1.0]])
    np.testing.assert_allclose(scaling.unscale_values(scaling.scale_values(x)), x)
    xt = torch.tensor(x, dtype=torch.float32)
    back = scaling.unscale_values(scaling.scale_values(xt))
    assert back.dtype == torch.float32
    torch.testing.assert_close(back, xt, equal_nan=True)
    assert scaling.unscale_times(scaling.scale_times(torch.tensor([1.5]))).item() == 1.5
    again = Scaling.from_dict(json.loads(json.dumps(scaling.to_dict())))
    assert again == scaling


def test_scaling_errors():
    with pytest.raises(tidal.InvalidArgumentError, match="> 0"):
        Scaling((0.0,), (0.0,))
    with pytest.raises(tidal.InvalidArgumentError, match="keys"):
        Scaling.from_dict({"state_offset": [0.0], "state_scale": [1.0]})
    with pytest.raises(tidal.InvalidArgumentError, match="for 1 states"):
        Scaling((0.0,), (1.0,)).scale_values(np.zeros((3, 2)))
    with pytest.raises(tidal.InvalidArgumentError, match="for 1 states"):
        _example().scaled(Scaling((0.0,), (1.0,)))
    never = Trajectories([[0.0, 1.0]], [[[1.0, NAN], [2.0, NAN]]])  # fine as data
    with pytest.raises(tidal.InvalidArgumentError, match="state 'x1' is never observed"):
        Scaling.fit(never)
    huge = Trajectories([[0.0, 1.0, 2.0]], [[[1.0, 1.0], [2.0, 1e300], [3.0, -1e300]]])
    with pytest.raises(tidal.InvalidArgumentError,
                       match="state 'x1' has values up to 1e\\+300 in magnitude, so its mean or "
                             "spread overflows float64"):
        Scaling.fit(huge)


# --- read_table --------------------------------------------------------------------------------


def test_read_unsorted_rows_with_ids(tmp_path):
    path = _write(tmp_path, "t,cell,P1,P2\n"
                            "1.5,B,3,4\n"
                            "0.5,A,1,\n"
                            "0,B,,2\n"
                            "2,A,NaN,7\n"
                            " 1 , A , 2 , NA\n")
    data = read_table(path, id="cell")
    assert data.ids == ("B", "A")  # order of first appearance
    assert data.state_names == ("P1", "P2")
    np.testing.assert_array_equal(data.times[0], [0.0, 1.5])
    np.testing.assert_array_equal(data.values[0], [[NAN, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(data.times[1], [0.5, 1.0, 2.0])
    np.testing.assert_array_equal(data.values[1], [[1.0, NAN], [2.0, NAN], [NAN, 7.0]])


def test_read_without_id_is_one_trajectory_and_states_select_columns(tmp_path):
    path = _write(tmp_path, "x,time,y,notes\n1,0,2,7\n3,1,4,8\n\n5,2,6,9\n")
    data = read_table(path, time="time", states=["y", "x"])
    assert data.ids == ("0",) and data.state_names == ("y", "x")
    np.testing.assert_array_equal(data.times[0], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(data.values[0], [[2.0, 1.0], [4.0, 3.0], [6.0, 5.0]])


def test_read_skips_blank_rows(tmp_path):
    path = _write(tmp_path, "t,x\n\n0,1\n,\n1,2\n")
    np.testing.assert_array_equal(read_table(path).values[0], [[1.0], [2.0]])


# Each file is written out line by line so that the expected line numbers can be counted.
QUOTED = (
    't,id,x,y\n'            # line 1
    '0,"a,1",1.0,2.0\n'     # line 2
    '1,"a,1",,3.0\n'        # line 3
    '0,"two\n'              # line 4
    'lines",1,2\n'          # line 5
    '1,"two\n'              # line 6
    'lines",{cell},2\n'     # line 7: the x cell of the record starting on line 6
)


def test_non_numeric_cell_names_line_and_column_after_quoted_fields(tmp_path):
    path = _write(tmp_path, QUOTED.format(cell='"ab c"'))
    with pytest.raises(DataFormatError) as info:
        read_table(path, id="id")
    message = str(info.value)
    assert message.startswith(f"{path}: line 7, column 'x': 'ab c' is not a number")
    assert "\n" not in message


def test_quoted_multiline_ids_read_fine(tmp_path):
    data = read_table(_write(tmp_path, QUOTED.format(cell="5")), id="id")
    assert data.ids == ("a,1", "two\nlines")
    np.testing.assert_array_equal(data.values[1], [[1.0, 2.0], [5.0, 2.0]])


@pytest.mark.parametrize(("text", "kwargs", "expected"), [
    ("t,x\n0,1\n1,2\n0.5,3,4\n", {}, "line 4 has 3 fields but the header has 2"),
    ('t,id,x\n0,"a\nb",1\n1,"a\nb"\n', {"id": "id"}, "line 4 has 2 fields"),
    ("t,x\n0,1\n,2\n3,4\n", {}, "line 3, column 't': the time is missing"),
    ("t,x\n0,1\ninf,2\n3,4\n", {}, "line 3, column 't': the time is inf"),
    ("t,x\n0,1\n1,-inf\n", {}, "line 3, column 'x': the value is infinite"),
    ("t,x\n0,1\n1,1_000\n", {}, "line 3, column 'x': '1_000' is not a number"),
    ("t,id,x\n0,a,1\n1,,2\n", {"id": "id"}, "line 3, column 'id': the trajectory id is missing"),
    ("t,id,x\n0,a,1\n1,b,5\n0,a,2\n2,b,3\n", {"id": "id"},
     "trajectory 'a' has the time 0.0 (column 't') twice, at line 2 and line 4"),
    ("t,x\n0,1\n1,2\n0,3\n", {}, "at line 2 and line 4. If the file holds several trajectories"),
    ("t,id,x\n0,1,1\n1,1,2\n0,2,3\n1,2,4\n", {}, "with `id=...` (column 'id' looks like one)."),
    ("t,id,x\n0,a,1\n1,a,2\n0,b,3\n1,b,\n", {"id": "id"},
     "trajectory 'b' has 1 observed time(s)"),
    ("t,id\n0,a\n1,a\n", {"id": "id"}, "no state columns (the columns are 't', 'id')"),
    ("t,x\n0,1\n1,2\n", {"time": "time"}, "no time column 'time'; the columns are 't', 'x'"),
    ("t,x\n0,1\n1,2\n", {"id": "cell"}, "no id column 'cell'; the columns are 't', 'x'"),
    ("t,x\n0,1\n1,2\n", {"states": ["x", "P3"]}, "no state column(s) ['P3']; the columns are"),
    ("t,x,y\n0,1,\n1,2,\n", {}, "column 'y' has no values"),
    ("t,x,x\n0,1,2\n", {}, "names column(s) ['x'] more than once"),
    ("t,x,\n0,1,\n1,2,\n", {}, "column 3 of the header has no name"),
    ("t,x\n", {}, "header but no data rows"),
    ("", {}, "the file is empty"),
    ("t,x\n0,1\n1,1e151\n", {}, "line 3, column 'x': the value 1e+151 is too large in magnitude"),
    ("t,x\n0,1\n1,-2e300\n", {}, "line 3, column 'x': the value -2e+300 is too large"),
    ("t,x\n0,1\n1e200,2\n", {}, "line 3, column 't': the time 1e+200 is too large in magnitude"),
    ("t;x;y\n0;1;2\n1;2;3\n", {}, "the file seems to use ';' as separator"),
    ("t;x\n0,5;1,2\n1,0;2,5\n", {}, "header has one column, 't;x'; the file seems to use ';'"),
    ("t\tx\n0\t1\n1\t2\n", {}, "the file seems to use tabs as separator"),
    ("t;id,x\n0;a,1\n", {"id": "id"}, "no time column 't'; the columns are 't;id', 'x'. Name "
     "it with `time=...`. Hint: the file seems to use ';'"),
    ("0,1.5,2.5\n1,2.5,3.5\n", {}, "no time column 't'; the columns are '0', '1.5', '2.5'. "
     "Name it with `time=...`. Hint: the first row looks like "
     "data, not column names"),
    ("0,a,1\n1,a,2\n", {"id": "id"}, "the first row looks like data, not column names"),
])
def test_read_errors_name_file_line_and_column(tmp_path, text, kwargs, expected):
    path = _write(tmp_path, text)
    with pytest.raises(DataFormatError) as info:
        read_table(path, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message
    assert "\n" not in message
    assert isinstance(info.value, tidal.InvalidArgumentError)


def test_read_errors_for_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(DataFormatError, match="no such file"):
        read_table(tmp_path / "absent.csv")
    path = _write(tmp_path, "t,x\n0,1\n", name="data.txt")
    with pytest.raises(DataFormatError, match=r"data\.txt.*'\.txt'.*\.csv, \.parquet, \.pq"):
        read_table(path)


def test_read_refuses_one_column_as_both_time_and_id(tmp_path):
    # TypeError: bad operand type for abs(): 'str', from inside the reader
    path = _write(tmp_path, "t,x\n0,1\n1,2\n")
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`read_table\(time='t', id='t'\)` name the same column"):
        read_table(path, id="t")


def test_crlf_line_endings_count_lines(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"t,x\r\n0,1\r\n1,oops\r\n")
    with pytest.raises(DataFormatError, match="line 3, column 'x': 'oops'"):
        read_table(path)


# --- the fast CSV reader and the exact one ------------------------------------------------------
# read_table parses CSV with pyarrow and re-reads the file row by row with Python's csv module
# only at the first problem that needs a line number (or at a cell pyarrow does not take, such
# as " NA " with spaces, which the exact reader reads). Both must give the same trajectories.

VALID = [
    "t,cell,P1,P2\n1.5,B,3,4\n0.5,A,1,\n0,B,,2\n2,A,NaN,7\n 1 , A , 2 ,Na\n",
    "\ufefft,x\r\n0,1\r\n1,2.5e-3\r\n",
    "\n\nt,x\n\n0,-0.0\n2,+4\n1,.5\n",
    't,id,x\n0,"a,1",1\n1,"a,1",nA\n2,"a,1",3\n0,"two\nlines",5\n1,"two\nlines",6\n',
    "t,id,x,notes\n0,a,1,anything\n1,a,2,\n0,b,inf0,x\n",
]


def _exact_reader_only(monkeypatch):
    monkeypatch.setattr(io._ArrowCsvTable, "__init__", _refuse_fast)


def _fast_reader_only(monkeypatch):
    monkeypatch.setattr(io._CsvTable, "__init__", _refuse_exact)


def _refuse_fast(self, path):
    raise io._Rescan()


def _refuse_exact(self, path):
    raise AssertionError("the exact reader was used")


@pytest.mark.parametrize("text", VALID[:4])
def test_fast_and_exact_readers_agree_on_valid_files(tmp_path, monkeypatch, text):
    path = _write(tmp_path, text)
    kwargs = {"id": "cell"} if "cell" in text else {"id": "id"} if ",id," in text else {}
    with monkeypatch.context() as patch:
        _fast_reader_only(patch)
        fast = read_table(path, **kwargs)
    with monkeypatch.context() as patch:
        _exact_reader_only(patch)
        exact = read_table(path, **kwargs)
    assert fast == exact


def test_the_exact_reader_takes_over_at_a_bad_cell(tmp_path, monkeypatch):
    path = _write(tmp_path, VALID[4])
    with pytest.raises(DataFormatError, match="line 4, column 'x': 'inf0' is not a number"):
        read_table(path, id="id")
    _fast_reader_only(monkeypatch)
    with pytest.raises(AssertionError, match="exact reader"):
        read_table(path, id="id")


_CELL_TEXT = st.text(alphabet="ab ,\"\n1", min_size=1, max_size=4).filter(str.strip)


@st.composite
def _tables(draw):
    """A long table as rows of text cells, with the trajectories it should read as."""
    n = draw(st.integers(1, 3))
    ids = draw(st.lists(_CELL_TEXT, min_size=n, max_size=n, unique_by=str.strip))
    number = st.floats(-1e150, 1e150, allow_nan=False, width=64)
    missing = st.sampled_from(["", "NA", "nan", " NaN ", "na"])
    rows, times, values = [], [], []
    for name in ids:
        t = draw(st.lists(number, min_size=2, max_size=5, unique=True))
        v = draw(st.lists(st.lists(st.one_of(number, st.none()), min_size=2, max_size=2),
                          min_size=len(t), max_size=len(t)))
        v[0][0], v[1][0], v[0][1] = 1.0, 2.0, 3.0  # 2 observed times, every state seen
        for ti, vi in zip(t, v):
            cells = [draw(missing) if x is None else draw(st.sampled_from(["", " "])) + repr(x)
                     for x in vi]
            rows.append([repr(ti), name, *cells])
        order = np.argsort(t)
        times.append(np.array(t)[order])
        values.append(np.array([[NAN if x is None else x for x in row] for row in v])[order])
    shuffled = draw(st.permutations(rows))
    first_seen = list(dict.fromkeys(row[1].strip() for row in shuffled))
    which = [first_seen.index(name.strip()) for name in ids]
    expected = Trajectories([times[which.index(i)] for i in range(n)],
                            [values[which.index(i)] for i in range(n)],
                            first_seen, ["x", "y"])
    return shuffled, expected


@given(_tables())
def test_read_table_gives_back_the_table_written(table):
    """Reference: the trajectories the rows were made from (sorted by hand), for random ids
    (quotes, commas, line breaks, spaces), missing-value spellings and row orders; read by the
    fast reader alone and by the exact reader alone."""
    import csv
    import tempfile

    rows, expected = table
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.csv"
        with open(path, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["t", "id", "x", "y"])
            writer.writerows(rows)
        with mock.patch.object(io._CsvTable, "__init__", _refuse_exact):
            assert read_table(path, id="id") == expected
        with mock.patch.object(io._ArrowCsvTable, "__init__", _refuse_fast):
            assert read_table(path, id="id") == expected


# --- write_table and Parquet -------------------------------------------------------------------


def _awkward() -> Trajectories:
    return Trajectories(
        times=[[0.1, 1 / 3, 2.0], [-1e-300, 0.0, 7.5e10]],
        values=[[[0.1, NAN], [1 / 3, 2.0], [-0.0, 5e-324]], [[NAN, 1.0], [1e150, NAN], [3.0, 4.0]]],
        ids=['x,"y"', "line\nbreak"], state_names=["first state", "s2"])


@pytest.mark.parametrize("name", ["out.csv", "out.parquet", "out.pq"])
def test_write_read_round_trip_is_exact(tmp_path, name):
    data = _awkward()
    path = tmp_path / name
    write_table(data, path, time="time", id="cell")
    assert read_table(path, time="time", id="cell") == data
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_write_replaces_an_existing_file_and_single_trajectory_without_id(tmp_path):
    path = _write(tmp_path, "old contents\n")
    single = _awkward()[0]
    write_table(single, path, id=None)
    assert path.read_text().splitlines()[0] == "t,first state,s2"
    assert read_table(path) == Trajectories(single.times, single.values, ["0"],
                                            single.state_names)


def test_write_errors(tmp_path):
    with pytest.raises(tidal.InvalidArgumentError, match="clashes with the state names"):
        write_table(_awkward(), tmp_path / "a.csv", id="s2")
    with pytest.raises(tidal.InvalidArgumentError, match="only write one trajectory"):
        write_table(_awkward(), tmp_path / "a.csv", id=None)
    with pytest.raises(DataFormatError, match="does not exist"):
        write_table(_awkward(), tmp_path / "missing" / "a.csv")
    with pytest.raises(DataFormatError, match="extension"):
        write_table(_awkward(), tmp_path / "a.xlsx")


def test_parquet_from_another_writer(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"cell": [2, 1, 2, 1], "t": [1, 0, 0, 2], "x": [1.5, None, 3.0, 4.0],
                      "y": pa.array(["1", "2", "", "NaN"])})
    path = tmp_path / "data.parquet"
    pq.write_table(table, path)
    data = read_table(path, id="cell")
    assert data.ids == ("2", "1")
    np.testing.assert_array_equal(data.times[0], [0.0, 1.0])
    np.testing.assert_array_equal(data.values[0], [[3.0, NAN], [1.5, 1.0]])
    np.testing.assert_array_equal(data.values[1], [[NAN, 2.0], [4.0, NAN]])


def test_parquet_errors_name_the_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"t": [0.0, 1.0, 2.0], "x": ["1", "2", "three"]}), path)
    with pytest.raises(DataFormatError, match=r"data\.parquet: row 3, column 'x': 'three'"):
        read_table(path)
    pq.write_table(pa.table({"t": [0.0, 1.0, 2.0], "x": [1.0, 1e200, 2.0]}), path)
    with pytest.raises(DataFormatError, match=r"data\.parquet: row 2, column 'x': the value "
                                              r"1e\+200 is too large in magnitude"):
        read_table(path)
    pq.write_table(pa.table({"0": [0.0, 1.0], "1": [1.0, 2.0]}), path)
    with pytest.raises(DataFormatError, match="column names look like numbers"):
        read_table(path)
    pq.write_table(pa.table({"t": [0.0, 1.0], "x": [True, False]}), path)
    with pytest.raises(DataFormatError, match="column 'x' has type bool"):
        read_table(path)
    path.write_bytes(b"not parquet")
    with pytest.raises(DataFormatError, match="not a readable Parquet file"):
        read_table(path)


def test_rates_follow_the_chain_rule_of_the_scaling() -> None:
    """A trajectory's rate in scaled units is the derivative of the scaled trajectory in
    scaled time (central differences); unscale_rates inverts it, for arrays and tensors."""
    scaling = Scaling((2.0, -1.0), (3.0, 0.5), time_scale=2.0)

    def y(t: np.ndarray) -> np.ndarray:  # data units
        return np.stack([np.sin(t), 3.0 * np.cos(2.0 * t)], -1)

    def dy(t: np.ndarray) -> np.ndarray:
        return np.stack([np.cos(t), -6.0 * np.sin(2.0 * t)], -1)

    s, h = np.linspace(0.1, 1.0, 7), 1e-6  # scaled times
    scaled_y = lambda s: scaling.scale_values(y(scaling.unscale_times(s)))  # noqa: E731
    numeric = (scaled_y(s + h) - scaled_y(s - h)) / (2 * h)
    rates = scaling.scale_rates(dy(scaling.unscale_times(s)))
    np.testing.assert_allclose(rates, numeric, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(scaling.unscale_rates(rates), dy(scaling.unscale_times(s)),
                               rtol=1e-14)
    tensor = scaling.scale_rates(torch.as_tensor(dy(s)))
    np.testing.assert_allclose(tensor.numpy(), scaling.scale_rates(dy(s)), rtol=1e-14)


def test_trajectories_select_by_id_and_name_a_bad_index():
    # a string gave numpy's "arrays used as indices must be of integer (or boolean) type"
    data = Trajectories([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]], [[[1.0], [2.0]]] * 3,
                        ids=["a", "b", "c"])
    assert data["b"] == data[1]
    assert data[["c", "a"]].ids == ("c", "a")
    with pytest.raises(tidal.InvalidArgumentError, match=r"`Trajectories\['z'\]`: no trajectory "
                       r"has that id; the ids are 'a', 'b', 'c'"):
        data["z"]
    for bad in ([True, False], 1.0):  # a mask of another length, a float
        with pytest.raises(tidal.InvalidArgumentError, match=r"boolean mask of length 3"):
            data[bad]


def test_small_argument_checks_name_the_argument(tmp_path):
    # numpy's "expected non-negative integer" and an AttributeError came from inside tidal;
    # MLP(final_scale=nan) built a network of NaN weights
    with pytest.raises(tidal.InvalidArgumentError, match=r"`simulate\(seed=-1\)` must be"):
        tidal.simulate("toggle-switch", 2, seed=-1)
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`write_table\(trajectories=\.\.\.\)` must be a tidal.Trajectories"):
        write_table(np.zeros((2, 2)), tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(tidal.InvalidArgumentError, match=r"`MLP\(final_scale=nan\)`"):
        tidal.nn.MLP(2, final_scale=float("nan"))
