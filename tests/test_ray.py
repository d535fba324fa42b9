"""``fbcnn restore --ray`` and chunked VapourSynth rendering on a real local Ray cluster.

The cluster is a ``ray start --head`` of this machine's own (node address
127.0.0.1, two CPUs, a random authentication token); every file the Ray run
writes is compared byte for byte with the local run's.  Only the last test
needs no Ray: it checks what ``--ray`` says when Ray is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fbcnn_plugins.cli.main import main

from conftest import clip_from_arrays, natural_image

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason='Ray is not installed (pip install -e ".[ray]" to run the Ray tests)',
)
RAY_WORKER_TITLE = "ray::MapWorker(MapBatches(RestoreWorker))"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _session_processes(session: int) -> dict[int, str]:
    """pid -> command line of every process in the session the test cluster was started in."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ProcessLookupError):
            continue
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A two-CPU Ray head on this machine; yields (address, environment for drivers, session id)."""
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path_factory.mktemp("ray") / "head.log"
    ray = Path(sys.executable).with_name("ray")
    with open(log, "wb") as sink:
        head = subprocess.Popen(
            [str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats"],
            env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not any("raylet" in cmd for cmd in _session_processes(head.pid).values()):
        if head.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"ray start did not come up:\n{log.read_text()}")
        time.sleep(0.5)
    try:
        yield address, env, head.pid
    finally:
        head.send_signal(signal.SIGTERM)  # --block: ray start stops the processes it started
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:  # what is left of the test cluster is ended below
            pass
        for pid in _session_processes(head.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _jpeg_folder(folder: Path, count: int, size: int) -> Path:
    """``count`` real photo crops saved as JPEG at different qualities."""
    folder.mkdir(parents=True)
    for i in range(count):
        pixels = natural_image(size, size, seed=i)
        Image.fromarray(pixels).save(folder / f"photo{i}.jpg", quality=12 + 11 * i)
    return folder


def _run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-P", "-m", "fbcnn_plugins.cli.main", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _restore_locally(inputs: Path, out: Path, capsys, *extra: str) -> None:
    assert main(["restore", str(inputs), "-o", str(out), "--device", "cpu", *extra]) == 0
    capsys.readouterr()


def _report(run: subprocess.CompletedProcess) -> dict:
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


@needs_ray
def test_ray_run_writes_the_local_files_byte_for_byte_and_a_rerun_skips_all(cluster, tmp_path, capsys):
    address, env, _ = cluster
    inputs = _jpeg_folder(tmp_path / "in", 6, 96)
    _restore_locally(inputs, tmp_path / "local", capsys)

    command = ["restore", "in", "-o", "out", "--device", "cpu", "--json", f"--ray={address}"]
    report = _report(_run_cli(command, env, tmp_path))
    assert (report["restored"], report["skipped"], report["failed"]) == (6, 0, 0)
    local = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == local  # no .part files either
    for name in local:
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    assert [Path(f["input"]).name for f in report["files"]] == [f"photo{i}.jpg" for i in range(6)]  # plan order

    written = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    again = _report(_run_cli(command, env, tmp_path))
    assert (again["restored"], again["skipped"], again["failed"]) == (0, 6, 0)
    assert all(f["skipped"] == "output exists" for f in again["files"])
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == written


@needs_ray
def test_a_worker_killed_mid_job_costs_nothing_but_a_retry(cluster, tmp_path, capsys):
    address, env, session = cluster
    count = 8
    inputs = _jpeg_folder(tmp_path / "in", count, 256)
    out = tmp_path / "out"
    killed: dict[str, object] = {}

    def kill_a_worker_after_the_first_output() -> None:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:
            finished = list(out.glob("*_fbcnn.png")) if out.is_dir() else []
            if finished:
                workers = [pid for pid, cmd in _session_processes(session).items() if cmd.startswith(RAY_WORKER_TITLE)]
                if workers:
                    killed["outputs_before"] = len(finished)
                    killed["pid"] = workers[0]
                    os.kill(workers[0], signal.SIGKILL)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_worker_after_the_first_output, daemon=True)
    killer.start()
    run = _run_cli(["restore", "in", "-o", "out", "--device", "cpu", "--json", f"--ray={address}"], env, tmp_path)
    killer.join(timeout=5)
    report = _report(run)
    assert "pid" in killed, "no Ray worker was found to kill"
    assert killed["outputs_before"] < count, "the job ended before the worker was killed"
    assert not Path(f"/proc/{killed['pid']}").exists()
    assert report["failed"] == 0 and report["restored"] + report["skipped"] == count

    _restore_locally(inputs, tmp_path / "local", capsys)
    local = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert sorted(p.name for p in out.iterdir()) == local  # every file, and no leftover .part file
    for name in local:
        assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name


@needs_ray
def test_sigterm_stops_a_ray_run_cleanly_and_reports_what_was_written(cluster, tmp_path):
    address, env, _ = cluster
    count = 8
    _jpeg_folder(tmp_path / "in", count, 256)
    out = tmp_path / "out"
    command = [sys.executable, "-P", "-m", "fbcnn_plugins.cli.main", "restore", "in", "-o", "out", "--device", "cpu",
               "--json", f"--ray={address}"]
    driver = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 200
    while not (out.is_dir() and list(out.glob("*_fbcnn.png"))) and time.monotonic() < deadline:
        time.sleep(0.02)
    driver.send_signal(signal.SIGTERM)
    stdout, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    report = json.loads(stdout)
    assert report["interrupted"] == "SIGTERM"
    written = sorted(p.name for p in out.iterdir())
    assert all(name.endswith("_fbcnn.png") for name in written)  # no temporary file left
    assert report["restored"] == len(written) >= 1


@needs_ray
def test_a_bad_file_is_reported_like_the_local_run_and_the_others_are_restored(cluster, tmp_path, capsys, monkeypatch):
    address, env, _ = cluster
    inputs = _jpeg_folder(tmp_path / "in", 2, 64)
    (inputs / "broken.jpg").write_bytes((inputs / "photo0.jpg").read_bytes()[:200])
    monkeypatch.chdir(tmp_path)  # both runs name the files as "in/..."
    assert main(["restore", "in", "-o", "local", "--device", "cpu", "--json"]) == 1
    local = json.loads(capsys.readouterr().out)
    run = _run_cli(["restore", "in", "-o", "out", "--device", "cpu", "--json", f"--ray={address}"], env, tmp_path)
    assert run.returncode == 1, run.stderr[-3000:]
    remote = json.loads(run.stdout)
    assert (remote["restored"], remote["failed"]) == (local["restored"], local["failed"]) == (2, 1)
    local_error = next(f["error"] for f in local["files"] if "error" in f)
    remote_error = next(f["error"] for f in remote["files"] if "error" in f)
    assert remote_error == local_error
    assert f"error: {remote_error}" in run.stderr


@needs_ray
def test_workers_that_cannot_start_stop_the_job_with_their_error(cluster, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU; the test needs a device the workers lack")
    address, env, _ = cluster
    _jpeg_folder(tmp_path / "in", 2, 64)
    run = _run_cli(["restore", "in", "-o", "out", "--device", "cuda", f"--ray={address}"], env, tmp_path)
    assert run.returncode == 2, run.stderr[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("fbcnn restore: the job stopped on the cluster: DeviceError: device 'cuda'"), last
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@needs_ray
def test_video_chunks_on_ray_join_into_the_single_vspipe_output(cluster, tmp_path, monkeypatch):
    pytest.importorskip("vapoursynth")
    from fbcnn_plugins.ray.video import vspipe_path

    address, env, _ = cluster
    frames = [natural_image(48, 64, seed=i) for i in range(3)]
    for i, pixels in enumerate(frames):
        Image.fromarray(pixels).save(tmp_path / f"f{i}.jpg", quality=10 + 30 * i)
    script = tmp_path / "clip.vpy"
    script.write_text(
        "import numpy as np\nimport vapoursynth as vs\nfrom PIL import Image\n"
        "from fbcnn_plugins.vapoursynth import fbcnn\n"
        "core = vs.core\n"
        f"frames = [np.asarray(Image.open(r'{tmp_path}/f{{}}.jpg'.format(i % 3))) for i in range(6)]\n"
        "blank = core.std.BlankClip(width=64, height=48, format=vs.RGB24, length=6, fpsnum=24)\n"
        "def load(n, f):\n"
        "    out = f.copy()\n"
        "    for p in range(3):\n"
        "        np.copyto(np.asarray(out[p]), frames[n][:, :, p])\n"
        "    return out\n"
        # QF smoothing over +-2 frames: the frames at chunk borders need frames of the next chunk.
        "restored = fbcnn(core.std.ModifyFrame(blank, blank, load), qf_smoothing=2, device='cpu')\n"
        "core.resize.Bicubic(restored, format=vs.YUV444P8, matrix_s='709').set_output()\n"
    )
    # The PyTorch engine keeps this test to what it checks, whatever optional engines are installed;
    # the chunk workers get it from the driver's environment as a local vspipe would.
    env = {**env, "FBCNN_BACKEND": "pytorch"}
    whole = tmp_path / "whole.y4m"
    single = subprocess.run([vspipe_path(), "-c", "y4m", str(script), str(whole)], capture_output=True, text=True,
                            env=env)
    assert single.returncode == 0, single.stderr

    chunked = subprocess.run(
        [sys.executable, "-P", "-m", "fbcnn_plugins.ray.video", str(script), "chunked.y4m", "--chunk", "2", "--ray", address],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert chunked.returncode == 0, chunked.stderr[-3000:]
    assert (tmp_path / "chunked.y4m").read_bytes() == whole.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # parts cleaned up

    # The chunk borders matter: a chunker that trimmed the source (frames 2..3 alone) would smooth the
    # border frames' QF over other neighbours and restore them differently.
    monkeypatch.setenv("FBCNN_BACKEND", "pytorch")
    from fbcnn_plugins.vapoursynth import fbcnn

    source = clip_from_arrays([np.asarray(Image.open(tmp_path / f"f{i % 3}.jpg")) for i in range(6)])
    in_whole = fbcnn(source, qf_smoothing=2, device="cpu").get_frame(2).props["FBCNN_QF"]
    in_trimmed = fbcnn(source[2:4], qf_smoothing=2, device="cpu").get_frame(0).props["FBCNN_QF"]
    assert in_whole != in_trimmed


def test_without_ray_the_flag_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    image = tmp_path / "photo.jpg"
    Image.fromarray(natural_image(64, 64)).save(image, quality=20)
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    monkeypatch.setitem(sys.modules, "ray.data", None)
    assert main(["restore", str(image), "-o", str(tmp_path / "out"), "--ray"]) == 2
    assert 'pip install "fbcnn-plugins[ray]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_input_after_a_bare_ray_flag_is_not_taken_for_an_address(tmp_path, capsys):
    image = tmp_path / "photo.jpg"
    Image.fromarray(natural_image(64, 64)).save(image, quality=20)
    other = tmp_path / "other.jpg"
    other.write_bytes(image.read_bytes())
    assert main(["restore", str(other), "-o", str(tmp_path / "out"), "--ray", str(image)]) == 2
    assert "put --ray after the inputs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_workers_fit_the_cluster_and_a_gpu_cluster_gets_one_gpu_per_worker():
    from argparse import Namespace

    from fbcnn_plugins.ray.restore import RaySetupError, _worker_shape

    def options(**kw):
        return Namespace(**{"ray_cpus_per_worker": 1.0, "ray_gpus_per_worker": None, "ray_workers": None,
                            "device": "auto", **kw})

    gpu_node = {"CPU": 16.0, "GPU": 2.0}
    assert _worker_shape(gpu_node, options()) == (2, {"num_cpus": 1.0, "num_gpus": 1.0})
    assert _worker_shape(gpu_node, options(device="cpu")) == (16, {"num_cpus": 1.0, "num_gpus": 0.0})
    assert _worker_shape(gpu_node, options(device="cpu", ray_cpus_per_worker=4.0)) == (4, {"num_cpus": 4.0, "num_gpus": 0.0})
    assert _worker_shape({"CPU": 2.0}, options(ray_workers=1)) == (1, {"num_cpus": 1.0, "num_gpus": 0.0})
    with pytest.raises(RaySetupError, match="holds 1..2 workers"):
        _worker_shape({"CPU": 2.0}, options(ray_workers=3))
    with pytest.raises(RaySetupError, match="no room for one worker"):
        _worker_shape({"CPU": 2.0}, options(ray_cpus_per_worker=4.0))
