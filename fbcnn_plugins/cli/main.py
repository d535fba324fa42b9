"""The ``fbcnn`` command: one sub-command module per job, all thin layers over the core."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

from fbcnn_plugins import __version__

from . import bench_cmd, eval_cmd, export_onnx_cmd, gimp_cmd, models_cmd, qf_cmd, restore_cmd, train_cmd

COMMANDS = (restore_cmd, qf_cmd, models_cmd, bench_cmd, eval_cmd, train_cmd, gimp_cmd, export_onnx_cmd)


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
    """Run one command; the exit status: 0 done, 1 some files failed, 2 usage error, 128+N stopped by signal N."""
    from .signals import Interrupted, stop_on_signals

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # argparse: --help (0) or a bad option (2, message already printed)
        return int(done.code or 0)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            with stop_on_signals():
                status = int(args.run(args) or 0)
                sys.stdout.flush()
                return status
        except BrokenPipeError:  # the reader went away (``fbcnn models --json | head``): not an error of ours
            _silence_stdout()
            return 141  # 128 + SIGPIPE, as a shell reports a command stopped by a closed pipe
        except (ModuleNotFoundError, RuntimeError) as error:
            needed = _missing_torch(error)
            if needed is None:
                raise
            print(f"fbcnn {args.command}: {needed}", file=sys.stderr)
            return 2
        except Interrupted as stop:
            print(f"fbcnn {args.command}: stopped by {stop.name}", file=sys.stderr)
            return stop.exit_status
        except KeyboardInterrupt:
            print(f"fbcnn {args.command}: interrupted", file=sys.stderr)
            return 130


def _missing_torch(error: BaseException) -> str | None:
    """The message for a command that needs PyTorch where the install has none (the base install)."""
    from fbcnn_plugins.core.torch_extra import TORCH_EXTRA, TorchMissing

    if isinstance(error, TorchMissing):
        return str(error)
    if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] == "torch":
        return f"this command needs PyTorch, which this install does not have: {TORCH_EXTRA}"
    return None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush does not fail on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout replaced by something without a descriptor (tests)
        pass
    finally:
        os.close(devnull)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one plain line on stderr (the message names the file), not Python's source excerpt."""
    print(f"warning: {message}", file=file or sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
