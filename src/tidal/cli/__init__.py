"""The `tidal` command line (see `tidal --help`)."""
