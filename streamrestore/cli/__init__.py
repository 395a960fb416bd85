"""`streamrestore` command line: dispatches to the subcommand modules in `streamrestore.cli`."""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from streamrestore.errors import UserError

# Explicit registry: subcommand name -> module in streamrestore.cli.
COMMANDS = {
    "train": "train",
    "eval": "evaluate",
    "run": "run",
    "export": "export",
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        sys.stderr.write(f"streamrestore: error: {message} (see --help)\n")
        raise SystemExit(2)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand, or `only` that one (its module alone is imported: `train` runs where PyAV is not
    installed, as on a lent GPU machine)."""
    parser = _Parser(prog="streamrestore", description="Real-time video restoration with IR-CM.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module in COMMANDS.items():
        if only in (None, name):
            importlib.import_module(f"streamrestore.cli.{module}").add_parser(sub, name)
    return parser


def _quiet_opencv() -> None:
    """OpenCV prints its own warnings for unreadable files; we report those ourselves in one line."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _name_too_long(path: str) -> str:
    """The message for ENAMETOOLONG: raised by the first look at a path (the write guard), before any work."""
    longest = max(path.split(os.sep), key=lambda part: len(os.fsencode(part)))
    try:
        limit = os.pathconf(".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    return (f"{path}: file name too long ({len(os.fsencode(longest))} bytes in one name; this file system takes "
            f"at most {limit}); choose a shorter name")


def setup_logging(quiet: bool = False) -> None:
    """The package's one log channel: the `streamrestore` logger (every module logs under it by __name__)
    to stderr as `streamrestore: message` lines; INFO and up, WARNING and up with --quiet. Set once."""
    import logging

    logger = logging.getLogger("streamrestore")
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    if not any(getattr(h, "streamrestore_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("streamrestore: %(message)s"))
        handler.streamrestore_cli = True
        logger.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    _quiet_opencv()
    typed = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(typed[0] if typed and typed[0] in COMMANDS else None)
    args = parser.parse_args(typed)
    args.command_line = typed  # as typed, for model cards
    setup_logging(getattr(args, "quiet", False))
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        sys.stderr.write(f"streamrestore: error: {exc}\n")
        return 2
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG or not exc.filename:
            raise
        sys.stderr.write(f"streamrestore: error: {_name_too_long(str(exc.filename))}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("streamrestore: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
