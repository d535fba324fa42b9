"""``fbcnn train`` and ``fbcnn export``: run a training config, ship its weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train a network from a config under training/configs/")
    train.add_argument("--config", required=True, type=Path, help="training config (TOML)")
    train.add_argument("--run-dir", type=Path, help="where checkpoints and the log go (default: the config's run_dir, else runs/NAME)")
    train.add_argument("--steps", type=int, help="train at most this many more steps in this invocation")
    train.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in the run folder")
    train.add_argument("--time-budget", type=float, metavar="SECONDS",
                       help="stop after this much wall time, with the cosine schedule run over it instead of over steps")
    train.add_argument("--device", help="override the config's device: auto, cpu, cuda[:N]")
    train.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                       help="override the config's precision (bf16: autocast; auto: bf16 on CUDA and on CPUs with AVX-512-BF16 or AMX, else fp32)")
    train.add_argument("--workers", type=int, help="override the config's number of data-loading processes")
    train.add_argument("--init-from", metavar="WEIGHTS", help="override the config's init_from (last.pt or .safetensors)")
    train.add_argument("--plot", type=Path, metavar="PNG", help="only draw loss and validation PSNR of the run, then exit")
    train.set_defaults(run=run_train)

    export = commands.add_parser("export", help="export a run's checkpoint as bundled fp16 safetensors weights")
    export.add_argument("run_dir", type=Path, help="training run folder holding last.pt and log.jsonl")
    export.add_argument("--out", type=Path, help="output .safetensors (default: the package's bundled-model folder)")
    export.add_argument("--overwrite", action="store_true", help="replace existing weights of the same name and their card")
    export.set_defaults(run=run_export)


def run_train(args: argparse.Namespace) -> int:
    """Train, or say in one line why it cannot (a missing or invalid config, unreadable images): no traceback."""
    import tomllib

    try:
        return _train(args)
    except FileNotFoundError as error:
        print(f"fbcnn train: {error.filename or ''}{': ' if error.filename else ''}{error.strerror or error}",
              file=sys.stderr)
    except tomllib.TOMLDecodeError as error:
        print(f"fbcnn train: {args.config}: not valid TOML ({error})", file=sys.stderr)
    except (ValueError, KeyError, TypeError, IsADirectoryError, PermissionError) as error:
        print(f"fbcnn train: {error}", file=sys.stderr)
    return 2


def _train(args: argparse.Namespace) -> int:
    from fbcnn_plugins.training.config import load_train_config
    from fbcnn_plugins.training.trainer import Trainer

    if args.config.exists() and not args.config.is_file():
        raise ValueError(f"{args.config}: not a regular file (a folder, FIFO or device); give a TOML config")
    config = load_train_config(args.config)
    run_dir = args.run_dir or Path(config.run_dir or Path("runs") / config.name)
    if args.plot:
        from fbcnn_plugins.training.plot import plot_run

        plot_run(run_dir, args.plot)
        print(f"wrote {args.plot}")
        return 0
    if args.workers is not None:
        config.workers = args.workers
    if args.init_from is not None:
        config.init_from = args.init_from
    trainer = Trainer(config, run_dir, device=args.device, precision=args.precision)
    if not args.fresh and trainer.resume():
        print(f"resumed {run_dir} at step {trainer.step}")
    print(f"training {config.name} on {trainer.machine()}")
    trainer.train(max_steps=args.steps, time_budget=args.time_budget)
    print(f"checkpoint: {run_dir / 'last.pt'} (step {trainer.step})")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from fbcnn_plugins.training.export import export_run

    try:
        path = export_run(args.run_dir, args.out, overwrite=args.overwrite)
    except (FileNotFoundError, ValueError) as error:
        print(f"fbcnn export: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0
