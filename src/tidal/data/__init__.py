"""Data: `Trajectories` (per-trajectory times, values and missing entries) and `Scaling`,
long-table readers and writers (CSV, Parquet), built-in systems and `simulate()`."""

from tidal.data.io import DataFormatError, read_table, write_table
from tidal.data.systems import SYSTEMS, System, simulate, toggle_switch_stable_states
from tidal.data.trajectories import Scaling, Trajectories

__all__ = [
    "SYSTEMS",
    "DataFormatError",
    "Scaling",
    "System",
    "Trajectories",
    "read_table",
    "simulate",
    "toggle_switch_stable_states",
    "write_table",
]
