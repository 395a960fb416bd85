"""`streamrestore` command line: dispatches to the subcommand modules in `streamrestore.commands`."""
from __future__ import annotations

import argparse
import importlib
import sys

from streamrestore.errors import UserError

# Explicit registry: subcommand name -> module in streamrestore.commands.
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="streamrestore", description="Real-time video restoration with IR-CM.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module in COMMANDS.items():
        importlib.import_module(f"streamrestore.commands.{module}").add_parser(sub, name)
    return parser


def _quiet_opencv() -> None:
    """OpenCV prints its own warnings for unreadable files; we report those ourselves in one line."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def main(argv: list[str] | None = None) -> int:
    _quiet_opencv()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        sys.stderr.write(f"streamrestore: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("streamrestore: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
