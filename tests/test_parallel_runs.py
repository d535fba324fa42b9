"""Several ``fbcnn restore --skip-existing`` runs on one folder: each file restored once, by one of them.

Real processes on real JPEG files.  The runs are started together: each child imports the
command (the OpenVINO engine and all) first and then waits for one shared signal, so that they plan and
restore at the same moment instead of one finishing before the next has loaded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from fbcnn_plugins.batch import (
    WRITTEN_BY_ANOTHER_RUN, RestoreOptions, claim_path, plan_batch, run_plan, try_claim,
)

from conftest import natural_image

#: A child: the real command, entered once the test creates the "go" file.
RUN_WHEN_TOLD = """
import sys, time
from pathlib import Path
from fbcnn_plugins.cli.main import main
import openvino  # the engine, loaded before the start, as every run would have it loaded by then
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.01)
sys.exit(main(sys.argv[2:]))
"""

#: A child that holds the claim on an output (another run at work) until told, then writes it (or not) and lets go.
HOLD_CLAIM = """
import sys, time
from pathlib import Path
from fbcnn_plugins.batch import try_claim
target, ready, release, write = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "write"
claim = try_claim(target)
assert claim is not None
ready.write_text("held")
while not release.exists():
    time.sleep(0.02)
if write:
    from PIL import Image
    Image.new("RGB", (8, 8)).save(target)
claim.release()
"""


def photo_folder(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        Image.fromarray(natural_image(192, 256, seed=i)).save(folder / f"p{i}.jpg", quality=15 + 5 * i)
    return folder


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def wait_for(path: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def hold_claim(target: Path, tmp_path: Path, *, write: bool) -> tuple[subprocess.Popen, Path]:
    """Another run's claim on ``target``, held until the returned release file is made."""
    ready, release = tmp_path / "ready", tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-P", "-c", HOLD_CLAIM, str(target), str(ready), str(release),
                               "write" if write else "give-up"])
    wait_for(ready)
    return holder, release


def release_once_written(output: Path, release: Path) -> threading.Thread:
    """Let the holder go once this run has written ``output``, a file it reaches after the held one."""
    def watch() -> None:
        wait_for(output, timeout_s=600)
        release.touch()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
@pytest.mark.parametrize("runs", [2, 3])
def test_concurrent_runs_on_one_folder_restore_every_file_exactly_once(tmp_path, runs):
    folder = photo_folder(tmp_path / "shots", 6)
    go = tmp_path / "go"
    children = [
        subprocess.Popen([sys.executable, "-P", "-c", RUN_WHEN_TOLD, str(go), "restore", str(folder), "--qf", "25",
                          "--skip-existing", "--json", "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
        for _ in range(runs)
    ]
    time.sleep(1.0)
    go.touch()
    reports = []
    for child in children:
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err  # a file another run finished is done work, not a failure
        reports.append(json.loads(out))
    inputs = sorted(f"p{i}.jpg" for i in range(6))
    restored_by: dict[str, list[int]] = {name: [] for name in inputs}
    for number, report in enumerate(reports):
        assert report["failed"] == 0
        assert sorted(Path(f["input"]).name for f in report["files"]) == inputs  # every file settled by every run
        for record in report["files"]:
            if "seconds" in record:  # this run did the work of this file (even if another wrote first)
                restored_by[Path(record["input"]).name].append(number)
            else:
                assert record["skipped"] in ("output exists", WRITTEN_BY_ANOTHER_RUN)
    assert all(len(by) == 1 for by in restored_by.values()), restored_by  # once, not twice, not never
    assert len({by[0] for by in restored_by.values()}) >= 2, restored_by  # the runs shared the folder's work
    for name in inputs:
        with Image.open(folder / name.replace(".jpg", "_fbcnn.png")) as output:
            output.load()
            assert output.size == (256, 192)
    assert leftovers(folder) == []  # no claim file, no temporary file


def test_a_file_another_run_holds_is_left_to_it_and_counted_as_skipped_once_written(tmp_path):
    folder = photo_folder(tmp_path / "shots", 3)
    held_target = folder / "p1_fbcnn.png"
    holder, release = hold_claim(held_target, tmp_path, write=True)
    release_once_written(folder / "p2_fbcnn.png", release)
    plan = plan_batch([folder], skip_existing=True)
    assert len(plan.jobs) == 3
    report = run_plan(plan, RestoreOptions(qf=30, skip_existing=True))
    assert holder.wait(timeout=60) == 0
    by_name = {Path(f["input"]).name: f for f in report.files}
    assert by_name["p1.jpg"] == {"input": str(folder / "p1.jpg"), "output": str(held_target),
                                 "skipped": WRITTEN_BY_ANOTHER_RUN}
    assert "seconds" in by_name["p0.jpg"] and "seconds" in by_name["p2.jpg"]
    assert [Path(f["input"]).name for f in report.files] == ["p0.jpg", "p2.jpg", "p1.jpg"]  # put off, then settled
    assert report.ok and report.restored == 2 and report.skipped == 1
    with Image.open(held_target) as theirs:
        assert theirs.size == (8, 8)  # the other run's output, not replaced
    assert leftovers(folder) == []


def test_a_held_file_whose_holder_gives_up_is_restored_by_the_waiting_run(tmp_path):
    folder = photo_folder(tmp_path / "shots", 2)
    holder, release = hold_claim(folder / "p0_fbcnn.png", tmp_path, write=False)
    release_once_written(folder / "p1_fbcnn.png", release)
    report = run_plan(plan_batch([folder], skip_existing=True), RestoreOptions(qf=30, skip_existing=True))
    assert holder.wait(timeout=60) == 0
    assert [Path(f["input"]).name for f in report.files] == ["p1.jpg", "p0.jpg"]
    assert report.restored == 2 and report.ok
    with Image.open(folder / "p0_fbcnn.png") as ours:
        assert ours.size == (256, 192)
    assert leftovers(folder) == []


def test_a_claim_left_by_a_killed_run_blocks_nothing_and_is_removed(tmp_path):
    folder = photo_folder(tmp_path / "shots", 2)
    target = folder / "p0_fbcnn.png"
    holder, _ = hold_claim(target, tmp_path, write=True)
    assert try_claim(target) is None  # held by a live process
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert claim_path(target).exists()  # SIGKILL left the file, but not its lock
    done = subprocess.run([sys.executable, "-P", "-m", "fbcnn_plugins.cli.main", "restore", folder, "--qf", "30",
                           "--skip-existing", "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["restored"] == 2
    assert target.exists() and leftovers(folder) == []
