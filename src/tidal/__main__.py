"""`python -m tidal` runs the command line."""

from tidal.cli.main import main

main()
