"""The ``pflnas`` command line: one module per subcommand, each with ``add_parser`` and ``run``.

Every user error (:class:`~pflnas.errors.PflnasError`, bad flags) prints one line to stderr and exits with
code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pflnas.errors import PflnasError
from pflnas.train.signals import RunInterrupted

# subcommand -> module under pflnas.cli that defines add_parser(subparsers) and run(args) -> int
COMMANDS = {
    "search": "pflnas.cli.cmd_search",
    "arch": "pflnas.cli.cmd_arch",
    "profile": "pflnas.cli.cmd_profile",
    "retrain": "pflnas.cli.cmd_retrain",
    "evaluate": "pflnas.cli.cmd_evaluate",
    "export": "pflnas.cli.cmd_export",
    "study": "pflnas.cli.cmd_study",
    "report": "pflnas.cli.cmd_report",
    "bench": "pflnas.cli.cmd_bench",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line (exit 2) instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pflnas", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"pflnas {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def _version() -> str:
    from pflnas import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except PflnasError as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split())  # one line, whatever a value quoted in it holds
        print(f"pflnas {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if not isinstance(exc, RunInterrupted):  # a run that saved itself has said how to resume
            print(f"pflnas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
