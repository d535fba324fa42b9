"""The ``fbcnn`` command: one sub-command module per job, all thin layers over the core."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fbcnn_plugins import __version__

from . import bench_cmd, eval_cmd, gimp_cmd, models_cmd, qf_cmd, restore_cmd, train_cmd

COMMANDS = (restore_cmd, qf_cmd, models_cmd, bench_cmd, eval_cmd, train_cmd, gimp_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fbcnn",
        description="Remove JPEG artifacts with FBCNN (flexible blind JPEG artifact removal).",
    )
    parser.add_argument("--version", action="version", version=f"fbcnn-plugins {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
