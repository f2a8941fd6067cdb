"""The `tidal` command (`python -m tidal` and the console script). It checks first that the
`cli` extra is installed: without it, one line on stderr names the extra, exit code 2."""

import sys

from tidal._extras import CLI_MODULES, missing, missing_message

EXIT_USAGE = 2


def main() -> None:
    absent = missing(CLI_MODULES)
    if absent:
        print(f"tidal: error: {missing_message(absent, 'the tidal command')}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    from tidal.cli.main import main as cli

    cli()


if __name__ == "__main__":
    main()
