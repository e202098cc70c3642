"""The ``pflnas`` command line: one module per subcommand, each with ``add_parser`` and ``run``.

Only the subcommand named on the command line is imported and given its flags (the others appear in the
top-level help by their one-line summary), and a subcommand imports torch inside ``run``: help texts,
listings and record checks start in a fraction of a second. Every user error (:class:`PflnasError`, an
``OSError`` from the file system, running out of memory, bad flags) prints one line to stderr and exits
with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Collection, Sequence
from typing import Any

from pflnas.errors import PflnasError

DESCRIPTION = """\
pflnas searches neural-network architectures in which every layer may choose between a parameter-free
operation (max-pool, average-pool, identity) and a trainable one (convolution, attention). It records how
often each kind wins, writes the chosen network as a found.json, and profiles, retrains and reports on it."""

EPILOG = """\
start with:
  pflnas list spaces                                             the search spaces (and ops, strategies, ...)
  pflnas search --space cell_v1 --preset quick --out runs/quick  a real search, a few minutes on a CPU
  pflnas arch show runs/quick/found.json                         what the search found

'pflnas COMMAND --help' shows the flags of a command, each with its default."""

# subcommand -> (module under pflnas.cli defining add_parser(subparsers) and run(args) -> int, summary)
COMMANDS = {
    "list": ("pflnas.cli.cmd_list", "list the search spaces, ops, strategies, retrain recipes or presets"),
    "search": ("pflnas.cli.cmd_search", "search an architecture in a supernet; writes found.json"),
    "arch": ("pflnas.cli.cmd_arch", "show, validate or import an architecture record (found.json)"),
    "profile": (
        "pflnas.cli.cmd_profile",
        "parameters, MACs and measured latency, throughput and memory of found.json networks, "
        "or (--ops) a per-op benchmark of a space's candidate ops",
    ),
    "retrain": (
        "pflnas.cli.cmd_retrain",
        "retrain a found architecture under a recipe (torchrun for many GPUs)",
    ),
    "evaluate": ("pflnas.cli.cmd_evaluate", "top-1/top-5 of a retrained checkpoint"),
    "export": ("pflnas.cli.cmd_export", "export a retrained network to ONNX (dynamic batch axis)"),
    "study": (
        "pflnas.cli.cmd_study",
        "run a grid of searches (spaces x strategies x settings x seeds), or a layer or swap study",
    ),
    "report": (
        "pflnas.cli.cmd_report",
        "write a Markdown + HTML report (tables, CIs, figures) of runs or a study",
    ),
    "bench": ("pflnas.cli.cmd_bench", "score search strategies against ground truth (NAS-Bench-201)"),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every flag's help ends with its default: the value argparse holds, ``off`` for switches, or the
    help's own words when it already says what the default is (a flag whose default comes from a config)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or "default" in text.lower():
            return text
        if action.nargs == 0:  # a switch: store_true, store_const
            return f"{text} (default: off)".strip()
        if action.default == []:  # a repeatable flag given no times
            return f"{text} (default: none)".strip()
        if action.default is None:
            return text  # the help must say it (tests check every flag)
        return f"{text} (default: %(default)s)".strip()


class Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line (exit 2) and shows every flag's default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _Commands(argparse._SubParsersAction):
    """Subcommands take their summary (help and description) from :data:`COMMANDS`."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        summary = COMMANDS[name][1] if name in COMMANDS else None
        if summary is not None:
            kwargs.setdefault("help", summary)
            kwargs.setdefault("description", summary[0].upper() + summary[1:] + ".")
        return super().add_parser(name, **kwargs)


def build_parser(only: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, just those subcommands get their flags (the rest are listed)."""
    parser = Parser(prog="pflnas", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"pflnas {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser, action=_Commands)
    sub.required = True
    for name, (module, _) in COMMANDS.items():
        if only is None or name in only:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand argv names (its first word that is not a flag), if it is one."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def _version() -> str:
    from pflnas import __version__

    return __version__


HINTS = {  # errno -> what to do
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
    errno.ENOSPC: "free some space or write somewhere else",
    errno.EDQUOT: "free some space or write somewhere else",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.ENOTDIR: "a part of the path is a file, not a folder; fix the path",
    errno.EISDIR: "it is a folder; give a file path",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EMFILE: "raise the open-file limit (ulimit -n) or run fewer jobs",
}


def describe_os_error(exc: OSError) -> str:
    """One line: what failed, on which path, and what to do."""
    what = exc.strerror or type(exc).__name__
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    where = f": {' -> '.join(paths)}" if paths else ""
    hint = HINTS.get(exc.errno or 0, "check the path and the file system, then try again")
    return f"{what}{where} ({hint})"


def _message(exc: BaseException) -> str:
    if isinstance(exc, PflnasError):
        text = str(exc)
    elif isinstance(exc, OSError):
        text = describe_os_error(exc)
    else:  # MemoryError
        text = (
            "out of memory; use a smaller batch, network (--set space.init_channels=...) or data subset, "
            "or a machine with more memory"
        )
    return _bounded(" ".join(text.split()))  # one line, whatever a value quoted in it holds


MAX_MESSAGE = 800  # a value quoted in a message may be megabytes long; the head and the advice are enough


def _bounded(line: str) -> str:
    """``line`` with its middle left out when it is longer than :data:`MAX_MESSAGE` characters."""
    if len(line) <= MAX_MESSAGE:
        return line
    head, tail = line[: MAX_MESSAGE // 2], line[-MAX_MESSAGE // 4 :]
    return f"{head} ... [{len(line) - len(head) - len(tail)} characters left out] ... {tail}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    args = build_parser([command] if command else []).parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:  # the reader went away (`pflnas list | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (PflnasError, OSError, MemoryError) as exc:
        if args.debug:
            raise
        print(f"pflnas {args.command}: error: {_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signals = sys.modules.get("pflnas.train.signals")  # a run that saved itself has said how to resume
        if signals is None or not isinstance(exc, signals.RunInterrupted):
            print(f"pflnas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
