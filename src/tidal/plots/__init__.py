"""Plots: functions that take arrays and return matplotlib Figures (never `show()`)."""
