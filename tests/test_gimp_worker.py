"""The GIMP plug-in's worker protocol and installer, without GIMP: the real worker process and core."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fbcnn_plugins.core.restorer import Restorer
from fbcnn_plugins.gimp import install
from fbcnn_plugins.gimp.protocol import (
    WorkerClient, WorkerError, WorkerGone, read_message, worker_command, write_message,
)
from fbcnn_plugins.gimp.worker import pixels_from

from conftest import natural_image, pillow_jpeg

WORKER = [sys.executable, "-P", "-m", "fbcnn_plugins.gimp.worker"]


def test_messages_round_trip_through_a_pipe_buffer():
    stream = io.BytesIO()
    payload = np.arange(12, dtype="<f4").tobytes()
    write_message(stream, {"op": "restore", "width": 2}, payload)
    write_message(stream, {"op": "quit"})
    stream.seek(0)
    header, data = read_message(stream)
    assert header == {"op": "restore", "width": 2, "payload": 48} and data == payload
    assert read_message(stream) == ({"op": "quit", "payload": 0}, b"")
    with pytest.raises(EOFError):
        read_message(stream)


def test_a_payload_cut_short_is_an_error_not_a_hang():
    stream = io.BytesIO()
    write_message(stream, {"op": "x"}, b"12345678")
    stream = io.BytesIO(stream.getvalue()[:-3])
    with pytest.raises(EOFError, match="3 bytes before the end"):
        read_message(stream)


def test_pixels_from_checks_sizes():
    block = np.zeros((4, 5, 3), np.float32)
    header = {"width": 5, "height": 4, "channels": 3}
    assert pixels_from(header, block.tobytes()).shape == (4, 5, 3)
    with pytest.raises(ValueError, match="needs 240 bytes, got 236"):
        pixels_from(header, block.tobytes()[:-4])
    with pytest.raises(ValueError, match="bad pixel block"):
        pixels_from({"width": 5, "height": 4, "channels": 5}, b"")
    with pytest.raises(ValueError, match="lacks integer"):
        pixels_from({"width": 5}, b"")


@pytest.fixture(scope="module")
def worker(bundled_color_model):
    with WorkerClient(WORKER) as client:
        yield client


def _request(worker, op, pixels, **fields):
    height, width, channels = pixels.shape
    header = {"op": op, "width": width, "height": height, "channels": channels, "device": "cpu", **fields}
    return worker.request(header, np.ascontiguousarray(pixels, "<f4").tobytes())


def test_worker_hello_answers_without_loading_torch(worker):
    from fbcnn_plugins import __version__
    from fbcnn_plugins.gimp.protocol import PROTOCOL_VERSION

    assert worker.info["protocol"] == PROTOCOL_VERSION and worker.info["version"] == __version__
    # The dialog shows the header's QF as soon as the worker says hello: that path must not import torch.
    probe = subprocess.run(
        [sys.executable, "-P", "-c",
         "import sys, io\n"
         "from fbcnn_plugins.gimp.worker import Worker\n"
         "w = Worker()\n"
         "w.hello({}, b'', None)\n"
         "print(w.header({'jpeg_settings': [3, 61, 3, 0, 2, 2, 1, 1, 1, 1]}, b'', None)[0]['qf']['value'])\n"
         "print('torch' in sys.modules)\n"],
        capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["61", "False"]


def test_worker_header_reads_gimps_jpeg_settings(worker):
    found = worker.request({"op": "header", "jpeg_settings": [3, 44, 3, 0, 2, 2, 1, 1, 1, 1]})[0]["qf"]
    assert found["value"] == 44 and found["source"] == "header"
    assert worker.request({"op": "header"})[0]["qf"] is None  # no parasite: nothing to say yet


def test_worker_preview_is_the_cores_output_for_the_view(worker):
    """The dialog's preview: a region restored at the QF, cropped to the view, as the 8-bit values drawn."""
    decoded = pillow_jpeg(natural_image(), 20).astype(np.float32) / 255.0
    view = [16, 8, 64, 48]  # x, y, w, h inside the 128x96 region
    reply, data = _request(worker, "preview", decoded, qf=20, view=view)
    shown = np.frombuffer(data, np.uint8).reshape(48, 64, 3)
    restored = Restorer(device="cpu").restore(decoded, 20).image[8:56, 16:80]
    assert np.array_equal(shown, np.clip(np.rint(restored * 255), 0, 255).astype(np.uint8))
    assert reply["view"] == view
    # Split view: the left half is the input, the right half the restoration.
    split = np.frombuffer(_request(worker, "preview", decoded, qf=20, view=view, split=True)[1], np.uint8)
    split = split.reshape(48, 64, 3)
    assert np.array_equal(split[:, 32:], shown[:, 32:])
    assert np.array_equal(split[:, :32], np.rint(decoded[8:56, 16:48] * 255).astype(np.uint8))
    # Another QF gives another preview; alpha travels through.
    with_alpha = np.concatenate([decoded, np.full(decoded.shape[:2] + (1,), 0.5, np.float32)], axis=2)
    other = np.frombuffer(_request(worker, "preview", with_alpha, qf=60, view=view)[1], np.uint8).reshape(48, 64, 4)
    assert np.abs(other[:, :, :3].astype(int) - shown).max() > 3 and np.all(other[:, :, 3] == 128)
    with pytest.raises(WorkerError, match="outside the 128x96 region"):
        _request(worker, "preview", decoded, qf=20, view=[100, 8, 64, 48])
    with pytest.raises(WorkerError, match="needs a qf in 1..100"):
        _request(worker, "preview", decoded, qf="auto", view=view)


@pytest.mark.parametrize("channels", [3, 4, 1, 2])
def test_worker_restores_exactly_like_the_core(worker, channels):
    decoded = pillow_jpeg(natural_image(), 20).astype(np.float32) / 255.0
    if channels in (1, 2):
        decoded = decoded.mean(axis=2, keepdims=True)
    if channels in (2, 4):
        alpha = np.linspace(0, 1, decoded.shape[0] * decoded.shape[1], dtype=np.float32)
        decoded = np.concatenate([decoded, alpha.reshape(decoded.shape[0], -1, 1)], axis=2)
    fractions = []
    reply, data = worker.request(
        {"op": "restore", "width": 128, "height": 96, "channels": channels, "qf": 20, "device": "cpu"},
        decoded.astype("<f4").tobytes(), progress=fractions.append,
    )
    restored = np.frombuffer(data, "<f4").reshape(decoded.shape)
    expected = Restorer(device="cpu").restore(decoded, 20).image
    assert np.abs(restored - expected).max() < 1e-6
    assert reply["qf"]["value"] == 20 and reply["qf"]["source"] == "given"
    assert fractions and fractions[-1] == 1.0
    if channels in (2, 4):
        assert np.array_equal(restored[:, :, -1], decoded[:, :, -1])


def test_worker_self_ensemble_restores_like_the_core(worker):
    decoded = pillow_jpeg(natural_image(), 20).astype(np.float32) / 255.0
    plain = np.frombuffer(_request(worker, "restore", decoded, qf=20)[1], "<f4").reshape(decoded.shape)
    reply, data = _request(worker, "restore", decoded, qf=20, self_ensemble=True)
    restored = np.frombuffer(data, "<f4").reshape(decoded.shape)
    expected = Restorer(device="cpu", self_ensemble=True).restore(decoded, 20).image
    assert np.abs(restored - expected).max() < 1e-6
    assert np.abs(restored - plain).max() > 1e-3
    with pytest.raises(WorkerError, match="self_ensemble must be true or false"):
        _request(worker, "restore", decoded, qf=20, self_ensemble="yes")


def test_worker_estimate_prefers_the_jpeg_header(worker, tmp_path):
    from PIL import Image

    path = tmp_path / "photo.jpg"
    Image.fromarray(natural_image()).save(path, quality=33)
    pixels = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
    size = [pixels.shape[1], pixels.shape[0]]
    from_file = _request(worker, "estimate", pixels, jpeg_path=str(path), image_size=size)[0]["qf"]
    assert from_file["source"] == "header" and from_file["value"] == 33
    assert from_file["predicted"] is not None
    # A selection's region of that image: still the file's compression.
    region = _request(worker, "estimate", pixels[8:72, 16:80], jpeg_path=str(path), image_size=size)[0]["qf"]
    assert region["source"] == "header" and region["value"] == 33
    # The same pixels with no file behind them: FBCNN-D reads the QF from their JPEG grid.
    alone = _request(worker, "estimate", pixels)[0]["qf"]
    assert alone["source"] == "dominant" and abs(alone["value"] - 33) <= 2 and not alone["double_compressed"]
    # Pixels with no JPEG grid at all (never compressed): whatever the core's rule decides for them.
    from fbcnn_plugins.core.qf_choice import choose_qf

    never_compressed = natural_image().astype(np.float32) / 255.0
    clean = _request(worker, "estimate", never_compressed)[0]["qf"]
    assert clean == choose_qf(Restorer(device="cpu"), never_compressed).to_dict()
    # The image was scaled since it was opened: the file's header no longer applies.
    scaled = _request(worker, "estimate", pixels[:64, :64], jpeg_path=str(path), image_size=[64, 64])[0]["qf"]
    assert scaled["source"] != "header"
    # The dialog sends 8-bit pixels for the estimate (a quarter of the bytes): same answer for 8-bit sources.
    eight_bit = np.rint(pixels * 255).astype(np.uint8)
    header = {"op": "estimate", "width": 128, "height": 96, "channels": 3, "device": "cpu", "format": "u8"}
    assert worker.request(header, eight_bit.tobytes())[0]["qf"] == alone
    with pytest.raises(WorkerError, match="unknown pixel format 'u16'"):
        worker.request(dict(header, format="u16"), eight_bit.tobytes())
    # No file on disk any more: GIMP's jpeg-settings parasite speaks for it.
    parasite = _request(worker, "estimate", pixels, jpeg_path=str(tmp_path / "gone.jpg"), image_size=size,
                        jpeg_settings=[3, 33, 3, 0, 2, 2, 1, 1, 1, 1])[0]["qf"]
    assert parasite["source"] == "header" and parasite["value"] == 33


def test_worker_reports_bad_requests_and_stays_up(worker):
    with pytest.raises(WorkerError, match="needs 48 bytes"):
        worker.request({"op": "restore", "width": 2, "height": 2, "channels": 3, "qf": 10}, b"\0" * 12)
    with pytest.raises(WorkerError, match="no model named"):
        _request(worker, "restore", np.zeros((16, 16, 3), np.float32), qf=10, model="no-such-model")
    with pytest.raises(WorkerError, match="unknown device"):
        _request(worker, "restore", np.zeros((16, 16, 3), np.float32), qf=10, device="tpu")
    with pytest.raises(WorkerError, match="qf must be in 1..100"):
        _request(worker, "restore", np.zeros((16, 16, 3), np.float32), qf=0)
    assert _request(worker, "restore", np.zeros((16, 16, 3), np.float32), qf=50)[0]["kind"] == "result"


def test_a_worker_that_dies_mid_request_is_reported_with_its_output(tmp_path):
    script = tmp_path / "dying_worker.py"
    script.write_text(
        "import sys, json\n"
        "from fbcnn_plugins.gimp.protocol import read_message, write_message\n"
        "out = sys.stdout.buffer\n"
        "read_message(sys.stdin.buffer)\n"
        "from fbcnn_plugins.gimp.protocol import PROTOCOL_VERSION\n"
        "write_message(out, {'kind': 'result', 'protocol': PROTOCOL_VERSION})\n"
        "read_message(sys.stdin.buffer)\n"
        "print('out of memory while restoring', file=sys.stderr)\n"
        "sys.exit(9)\n"
    )
    client = WorkerClient([sys.executable, str(script)])
    with pytest.raises(WorkerGone, match=r"exit code 9(.|\n)*out of memory while restoring"):
        client.request({"op": "restore"}, b"")
    client.close()


def test_a_python_without_the_package_says_to_run_install_gimp_again(tmp_path):
    """The recorded environment exists but lost fbcnn-plugins (uninstalled, or a new venv at the same path)."""
    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = str(bare / "bin" / "python")
    settings = tmp_path / "fbcnn-worker.json"
    settings.write_text(json.dumps({"python": python}))
    with pytest.raises(WorkerGone, match=r"fbcnn-plugins is not installed in .*run 'fbcnn install-gimp' again"):
        WorkerClient(worker_command(str(settings)))


def test_a_worker_that_cannot_start_says_how_to_fix_it(tmp_path):
    with pytest.raises(WorkerGone, match="could not start the FBCNN worker.*install-gimp"):
        WorkerClient([str(tmp_path / "missing-python"), "-m", "x"])
    settings = tmp_path / "fbcnn-worker.json"
    settings.write_text(json.dumps({"python": str(tmp_path / "gone" / "python")}))
    with pytest.raises(WorkerGone, match="does not exist"):
        worker_command(str(settings))
    with pytest.raises(WorkerGone, match="cannot read"):
        worker_command(str(tmp_path / "nothing.json"))


def test_profile_folders_per_platform(tmp_path):
    home = tmp_path
    linux = install.config_bases("linux", {"HOME": str(home)}, home)
    assert linux[0] == home / ".config" / "GIMP"
    assert home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" in linux
    assert install.config_bases("linux", {"XDG_CONFIG_HOME": "/x"}, home)[0] == Path("/x/GIMP")
    assert install.config_bases("darwin", {}, home) == [home / "Library" / "Application Support" / "GIMP"]
    assert install.config_bases("win32", {"APPDATA": r"C:\Users\a\AppData\Roaming"}, home) == [
        Path(r"C:\Users\a\AppData\Roaming") / "GIMP"]
    for version in ("2.10", "3.0", "3.2", "notes"):
        (home / ".config" / "GIMP" / version).mkdir(parents=True)
    assert [p.name for p in install.find_profiles(linux)] == ["3.2", "3.0"]


def test_install_and_uninstall_through_the_cli(tmp_path, bundled_color_model):
    from fbcnn_plugins.cli.main import main

    profile = tmp_path / "GIMP" / "3.0"
    assert main(["install-gimp", "--gimp-dir", str(profile)]) == 0
    folder = profile / "plug-ins" / "fbcnn-jpeg-artifacts"
    script = folder / "fbcnn-jpeg-artifacts.py"
    assert script.stat().st_mode & stat.S_IXUSR
    assert script.read_text().startswith("#!/usr/bin/env python3")
    assert (folder / "fbcnn_protocol.py").read_text() == (install.PACKAGE_DIR / "protocol.py").read_text()
    settings = json.loads((folder / "fbcnn-worker.json").read_text())
    assert settings["python"] == sys.executable and "fbcnn-color-small" in settings["models"]
    # What the dialog offers is what this environment has: gray models marked, only present devices.
    assert "fbcnn-gray-small" in settings["gray_models"] and "fbcnn-color-small" not in settings["gray_models"]
    from fbcnn_plugins.core.torch_extra import torch_installed

    cuda = torch_installed() and __import__("torch").cuda.is_available()
    assert settings["devices"][0] == "cpu" and ("cuda" in settings["devices"]) == cuda
    assert worker_command(str(folder / "fbcnn-worker.json"))[0] == sys.executable
    assert sorted(os.listdir(profile / "plug-ins")) == ["fbcnn-jpeg-artifacts"]  # no staging left behind
    assert main(["install-gimp", "--gimp-dir", str(profile)]) == 0  # reinstall replaces
    assert main(["uninstall-gimp", "--gimp-dir", str(profile)]) == 0
    assert not folder.exists()


def test_install_without_any_gimp_profile_fails_clearly(tmp_path, monkeypatch, capsys):
    from fbcnn_plugins.cli.main import main

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert main(["install-gimp"]) == 1
    assert "no GIMP 3 profile folder found" in capsys.readouterr().err


def test_a_busy_worker_whose_client_is_killed_exits(tmp_path):
    """GIMP kills the plug-in on a Cancel from its status bar; the worker must not run on for nobody.

    With the model loaded, the client asks for a restoration that sends nothing for a long time
    (one 768x768 tile, self-ensemble: eight passes) and is killed right away, with no quit
    message; the worker has to be gone within seconds, not when it next writes to the pipe.
    """
    script = tmp_path / "client.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "from fbcnn_plugins.gimp.protocol import read_message, write_message\n"
        f"worker = subprocess.Popen({WORKER!r}, stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
        "def ask(side, **fields):\n"
        "    write_message(worker.stdin, {'op': 'restore', 'width': side, 'height': side, 'channels': 3, 'qf': 30,\n"
        "                                 'device': 'cpu', **fields}, bytes(side * side * 12))\n"
        "ask(16)\n"
        "while read_message(worker.stdout)[0]['kind'] != 'result':  # PyTorch and the model loaded\n"
        "    pass\n"
        "ask(768, tile=768, self_ensemble=True)\n"
        "print(worker.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    client = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker_pid = int(client.stdout.readline())
    time.sleep(1)  # the worker is inside the restoration
    client.kill()  # as GIMP does: no quit message, the pipes close with the process
    client.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running(worker_pid):
        time.sleep(0.2)
    alive = _running(worker_pid)
    if alive:
        os.kill(worker_pid, 9)
    assert not alive, "the worker outlived the client that started it"


def test_a_worker_whose_client_only_closes_the_pipe_answers_and_ends():
    """A client that sends its last request and closes stdin still gets the answer (no orphan exit)."""
    done = subprocess.run(WORKER, input=b'{"op":"hello","payload":0}\n', capture_output=True, timeout=120)
    assert done.returncode == 0 and json.loads(done.stdout.splitlines()[0])["kind"] == "result"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
