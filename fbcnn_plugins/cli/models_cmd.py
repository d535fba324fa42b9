"""``fbcnn models``: what the installed packages register, and what each model is."""

from __future__ import annotations

import argparse
import json


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("models", help="list the registered models and network configs")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fbcnn_plugins.core.catalog import registered_models
    from fbcnn_plugins.core.configs import list_configs

    entries = registered_models()
    if args.json:
        print(json.dumps([
            {"name": e.name, "path": str(e.path), "provider": e.provider, "available": e.available,
             "color": e.card.get("color"), "config": e.card.get("config", {}).get("name"),
             "training_steps": e.card.get("training", {}).get("steps")}
            for e in entries
        ], indent=2))
        return 0
    print("registered models (entry-point group fbcnn_plugins.models):")
    for e in entries:
        status = "" if e.available else "  [weights missing]"
        config = e.card.get("config", {}).get("name", "?")
        print(f"  {e.name:<22} {e.card.get('color', '?'):<5} config={config:<7} from {e.provider}{status}")
    if not entries:
        print("  (none)")
    print("network configs:")
    for c in list_configs():
        print(f"  {c.name:<7} channels={'/'.join(map(str, c.channels))} blocks={c.blocks}  {c.summary}")
    return 0
