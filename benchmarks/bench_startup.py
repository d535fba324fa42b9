"""Import-to-first-result time of `fbcnn restore` in several installs, measured side by side.

What a GIMP user or a script pays on every cold start: the interpreter starts, the package
and its engine load, the bundled model is built, and the example is restored.  Each install
is given by its Python; the runs alternate between them so that a busy machine slows all
alike, and the median of ``--repeats`` runs is reported with its ratio to the first install.

    python benchmarks/bench_startup.py /tmp/base-venv/bin/python .venv/bin/python
    python benchmarks/bench_startup.py --repeats 7 --json startup.json A/bin/python B/bin/python

Each run is a fresh process in a fresh temporary folder, outside the repository, so the
checkout never shadows an installed package.  OpenVINO's compiled-model cache stays warm
(a user's second start); run once with ``--cold-cache`` to time the very first start too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "blocky.jpg"
#: What each run does: import the CLI, restore the example, and say whether PyTorch was imported.
PROGRAM = """
import sys, time
started = time.perf_counter()
from fbcnn_plugins.cli.main import main
imported = time.perf_counter()
code = main(["restore", sys.argv[1], "-o", "out.png", "--overwrite", "--quiet"])
done = time.perf_counter()
print(code, imported - started, done - started, "torch" in sys.modules)
"""


def one_run(python: str, folder: Path, env: dict[str, str]) -> dict:
    started = time.perf_counter()
    done = subprocess.run([python, "-P", "-c", PROGRAM, str(EXAMPLE)], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=900)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench_startup: {python} failed:\n{done.stderr[-2000:]}")
    code, imported, first_result, torch_loaded = done.stdout.split()[-4:]
    if code != "0":
        raise SystemExit(f"bench_startup: {python}: fbcnn restore exited {code}:\n{done.stderr[-2000:]}")
    return {"wall_s": wall, "import_s": float(imported), "first_result_s": float(first_result),
            "torch_imported": torch_loaded == "True"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pythons", nargs="+", help="the Python of each install (its bin/python)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold-cache", action="store_true", help="a new OpenVINO cache folder for every run")
    parser.add_argument("--json", type=Path, help="also write the runs here")
    args = parser.parse_args(argv)

    runs: dict[str, list[dict]] = {python: [] for python in args.pythons}
    with tempfile.TemporaryDirectory(prefix="fbcnn-startup-") as scratch:
        for repeat in range(args.repeats):
            for python in args.pythons:
                env = dict(os.environ)
                if args.cold_cache:
                    env["FBCNN_CACHE_DIR"] = tempfile.mkdtemp(dir=scratch)
                folder = Path(tempfile.mkdtemp(dir=scratch))
                runs[python].append(one_run(python, folder, env))

    first = None
    print(f"fbcnn restore {EXAMPLE.name}, median of {args.repeats} runs each (alternating), "
          f"{'cold' if args.cold_cache else 'warm'} OpenVINO cache")
    print("| install (python) | PyTorch imported | import s | import to first result s | process s | vs first |")
    print("|---|---|---|---|---|---|")
    for python, results in runs.items():
        median = {key: statistics.median(r[key] for r in results) for key in ("import_s", "first_result_s", "wall_s")}
        first = first or median["wall_s"]
        torch_loaded = "yes" if any(r["torch_imported"] for r in results) else "no"
        print(f"| {python} | {torch_loaded} | {median['import_s']:.2f} | {median['first_result_s']:.2f} | "
              f"{median['wall_s']:.2f} | {median['wall_s'] / first:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"example": str(EXAMPLE), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
