"""How fast the GIMP dialog answers: open time on a 24 MP JPEG, and the preview's latency.

    python benchmarks/bench_gimp_dialog.py preview          # worker only: a 512x512 view, warm model
    python benchmarks/bench_gimp_dialog.py open --gimp 3.2  # real GIMP (root; tests/gimp3_chroot.py)

``preview`` starts the worker as the plug-in does on every run, times its first
preview request for a 512x512 view (576x576 read with its context), split into
the stages the worker reports (loading PyTorch, loading the model, the rest is
the restoration), then three more QFs with the model loaded: what the dialog
waits for after a change, less the few milliseconds GIMP takes to read the view
and draw it.

``open`` runs the real dialog under Xvfb on a 6000x4000 JPEG with a header
(QF 85) and reports, in seconds from the plug-in's start: when GIMP called the
procedure, when the dialog was on screen, when it showed the header's QF, the
first preview and the final estimate; then presses Cancel.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def preview_latency() -> None:
    from conftest import natural_image

    from fbcnn_plugins.gimp.protocol import WorkerClient

    encoded = io.BytesIO()
    Image.fromarray(natural_image(576, 576, seed=3)).save(encoded, "JPEG", quality=30)
    region = np.asarray(Image.open(encoded).convert("RGB"), np.float32) / 255.0
    header = {"op": "preview", "width": 576, "height": 576, "channels": 3, "qf": 30, "view": [32, 32, 512, 512],
              "device": "cpu"}
    start = time.perf_counter()
    with WorkerClient([sys.executable, "-m", "fbcnn_plugins.gimp.worker"]) as worker:
        print(f"worker answers (Python and numpy up): {time.perf_counter() - start:.2f} s")
        stages = []
        worker.request(header, region.tobytes(), stage=lambda text: stages.append((text, time.perf_counter())))
        done = time.perf_counter()
        for (text, at), (_, until) in zip(stages, [*stages[1:], ("", done)]):
            print(f"  {text}: {until - at:.2f} s")
        print(f"first preview, from the worker's start (what every run of the filter waits for): {done - start:.2f} s")
        times = []
        for qf in (20, 40, 60):
            start = time.perf_counter()
            worker.request(dict(header, qf=qf), region.tobytes())
            times.append(time.perf_counter() - start)
    print(f"512x512 preview after a change: median {statistics.median(times):.2f} s "
          f"({', '.join(f'{t:.2f}' for t in times)})")


def open_time(version: str) -> None:
    import gimp3_chroot
    from conftest import natural_image

    release = gimp3_chroot.RELEASES[version]
    root = gimp3_chroot.build(release)
    gimp3_chroot.warm_up(release)
    subprocess.run([sys.executable, "-m", "fbcnn_plugins.cli.main", "install-gimp", "--gimp-dir",
                    str(root / release.profile)], check=True, capture_output=True)
    folder = root / "root" / "fbcnn-bench"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    photo = Image.fromarray(natural_image(500, 750, seed=2)).resize((6000, 4000), Image.BICUBIC)
    photo.save(folder / "photo-24mp.jpg", quality=85)
    (folder / "job.json").write_text(json.dumps({"action": "open", "input": "/root/fbcnn-bench/photo-24mp.jpg"}))
    env = {"FBCNN_GIMP_JOB": "/root/fbcnn-bench/job.json", "FBCNN_GIMP_REPORT": "/root/fbcnn-bench/report.jsonl",
           "FBCNN_GIMP_TEST_STEPS": "[]", "FBCNN_GIMP_TEST_FINISH": "cancel"}
    command = gimp3_chroot.gimp_command(release, str(HERE.parent / "tests" / "gimp_batch.py"), display=True, env=env)
    subprocess.run(command, capture_output=True, text=True, timeout=1800)
    report = [json.loads(line) for line in (folder / "report.jsonl").read_text().splitlines()]
    timings = next(entry["timings"] for entry in report if "timings" in entry)
    estimate = next(entry["estimate"] for entry in report if "estimate" in entry)
    print(f"GIMP {version}, 6000x4000 JPEG (QF 85 header), seconds from the plug-in's start:")
    for stage, seconds in sorted(timings.items(), key=lambda item: item[1]):
        print(f"  {stage:>16}: {seconds:6.2f}")
    print(f"  estimate: {estimate['value']} ({estimate['source']})")
    shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["preview", "open"])
    parser.add_argument("--gimp", default="3.2", choices=["3.0", "3.2"])
    args = parser.parse_args()
    preview_latency() if args.what == "preview" else open_time(args.gimp)


if __name__ == "__main__":
    main()
