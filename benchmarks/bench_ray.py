"""Throughput of ``fbcnn restore --ray`` against the plain command on the same files (a benchmark, not a test).

A Ray head is started on this machine (``ray start --head``, node address
127.0.0.1, a random auth token); then the plain command and the ``--ray``
command restore the same folder of generated JPEGs, each as a fresh process,
for every ``--cores`` setting and ``--reps`` rounds.  On N cores the plain run
has N threads (``OMP_NUM_THREADS``) and the Ray run N one-CPU workers; on one
core the two do exactly the same work, so their difference is Ray's own cost.
Reported per run:

- wall: the whole command, process start to exit (Ray: connecting, starting
  the workers and loading one model per worker included);
- steady: files per second once every worker has finished its first file,
  up to the last one (output file times), which is what a long job sees once
  it is running;
- overhead: how much lower the Ray run's rate is than the plain run's
  (negative: Ray is faster).

    python benchmarks/bench_ray.py                         # 24 files of 384x384, on 1 and 2 cores, 1 round
    python benchmarks/bench_ray.py --files 48 --size 512 --cores 2 --reps 2

Every run uses the PyTorch engine by default (``--backend``): it keeps to the
thread count it is given, so a plain run and a Ray run use the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_inputs(folder: Path, count: int, size: int) -> None:
    """``count`` photo crops from scikit-image's samples, JPEG at qualities 10..60."""
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = photos[i % len(photos)]
        top = int(rng.integers(0, max(1, photo.shape[0] - size)))
        left = int(rng.integers(0, max(1, photo.shape[1] - size)))
        crop = np.ascontiguousarray(photo[top : top + size, left : left + size])
        Image.fromarray(crop).resize((size, size)).save(folder / f"photo{i:03d}.jpg", quality=10 + 5 * (i % 11))


def start_head(cpus: int, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", f"--num-cpus={cpus}", "--num-gpus=0", "--include-dashboard=false",
         "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    time.sleep(8)  # the head is up well before the first driver needs it; a driver also waits for it
    return head, f"127.0.0.1:{port}"


def stop_head(head: subprocess.Popen) -> None:
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def run(command: list[str], env: dict[str, str], cwd: Path, out: Path, workers: int) -> dict:
    started = time.time()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.time() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    times = sorted(p.stat().st_mtime for p in out.iterdir())
    first = workers - 1  # the moment every worker has finished one file
    span = times[-1] - times[first] if len(times) > workers else 0.0
    steady = (len(times) - 1 - first) / span if span > 0 else float("nan")
    return {"wall_s": round(wall, 2), "files_per_s_wall": round(report["restored"] / wall, 3),
            "files_per_s_steady": round(steady, 3), "restored": report["restored"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2],
                        help="compare on this many cores: the plain run with that many threads, "
                        "the Ray run with that many 1-CPU workers (default: 1 2)")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--backend", default="pytorch", help="FBCNN_BACKEND for every run (default: pytorch)")
    args = parser.parse_args()

    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0", "FBCNN_BACKEND": args.backend}
    env.pop("RAY_ADDRESS", None)
    fbcnn = [sys.executable, "-m", "fbcnn_plugins.cli.main", "restore", "in", "--device", "cpu", "--json", "-q"]
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_ray.") as tmp:
        root = Path(tmp)
        make_inputs(root / "in", args.files, args.size)
        head, address = start_head(max(args.cores), env)
        try:
            for _ in range(args.reps):
                for cores in args.cores:
                    runs = (
                        (f"plain-{cores}", [], 1, {"OMP_NUM_THREADS": str(cores)}),
                        (f"ray-{cores}", [f"--ray={address}", f"--ray-workers={cores}"], cores, {}),
                    )
                    for name, extra, workers, threads in runs:
                        out = root / f"out_{name}"
                        shutil.rmtree(out, ignore_errors=True)
                        result = run([*fbcnn, "-o", out.name, *extra], {**env, **threads}, root, out, workers)
                        results.setdefault(name, []).append(result)
                        print(name, result, file=sys.stderr)
        finally:
            stop_head(head)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    overhead = {
        f"{cores} core(s)": {
            key: round(1 - median(f"ray-{cores}", f"files_per_s_{key}") / median(f"plain-{cores}", f"files_per_s_{key}"), 3)
            for key in ("wall", "steady")
        }
        for cores in args.cores
    }
    summary = {"files": args.files, "size": args.size, "reps": args.reps, "backend": args.backend,
               "runs": results, "overhead": overhead, "load_average": os.getloadavg()}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
