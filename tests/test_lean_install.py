"""The base install restores photos and video without PyTorch; what needs PyTorch says which extra.

Each check runs in a fresh interpreter, the way a user's command does.  In the full environment
the default paths run with ``--device cpu`` (``auto`` asks PyTorch for a GPU where it is
installed); in the base install (CI's second venv) with the defaults.  The second test hides an
installed PyTorch from the interpreter, so the base install's behaviour is checked here too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fbcnn_plugins.core.torch_extra import torch_installed

from conftest import REPO, natural_image, pillow_jpeg

EXAMPLE = REPO / "examples" / "blocky.jpg"
#: Makes ``import torch`` fail (and find_spec report it absent), as in an install without it.
HIDE_TORCH = "import sys; sys.modules['torch'] = None\n"


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    # -P: the working directory must not shadow the installed package.
    return subprocess.run([sys.executable, "-P", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_every_default_path_runs_without_importing_torch(tmp_path):
    device = ["--device", "cpu"] if torch_installed() else []
    photo = pillow_jpeg(natural_image(120, 160, seed=3), 25)
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=25)
    folder = tmp_path / "val"
    folder.mkdir()
    Image.fromarray(natural_image(64, 64, seed=1)).save(folder / "clean.png")
    code = f"""
import json, sys
import numpy as np
from fbcnn_plugins.cli.main import main
from fbcnn_plugins.core.restorer import Restorer

device = {device!r}
codes = {{
    "restore": main(["restore", {str(EXAMPLE)!r}, "-o", "out.png", "--overwrite", *device]),
    "restore-auto-tiles": main(["restore", "photo.jpg", "-o", "tiled.png", "--tile", "64", *device]),
    "qf": main(["qf", "photo.jpg", *device]),
    "models": main(["models"]),
    "eval": main(["eval", "--images", "val", "--qf", "30", *device]),
    "bench": main(["bench", "--size", "64", "48", "--repeats", "1", "--backend", "openvino", *device]),
}}
restorer = Restorer(device="cpu")
rng = np.random.default_rng(0)
shapes = {{}}
for name, image in {{
    "gray": rng.integers(0, 256, (40, 48), dtype=np.uint8),
    "rgba": rng.integers(0, 256, (40, 48, 4), dtype=np.uint8),
    "rgb16": rng.integers(0, 65536, (40, 48, 3), dtype=np.uint16),
    "float": rng.random((40, 48, 3), dtype=np.float32),
}}.items():
    result = restorer.restore(image)
    shapes[name] = [list(result.image.shape), str(result.image.dtype), result.qf.source]
strength = restorer.predict_qf_and_strength(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))[1]

import vapoursynth as vs
from fbcnn_plugins.vapoursynth import fbcnn
clip = vs.core.std.BlankClip(width=64, height=48, format=vs.RGBS, length=2, color=[0.4, 0.5, 0.6])
frame = fbcnn(clip, device="cpu").get_frame(1)
imported = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
# Last: where PyTorch is installed, install-gimp asks it which GPUs the dialog may offer.
codes["install-gimp"] = main(["install-gimp", "--gimp-dir", "profile"])
print(json.dumps({{"codes": codes, "shapes": shapes, "strength": strength, "vs_qf": frame.props["FBCNN_QF"],
                  "torch": imported[:5]}}))
"""
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["torch"] == [], f"the default paths imported {report['torch']}"
    assert report["codes"] == dict.fromkeys(report["codes"], 0), done.stderr[-3000:]
    assert report["shapes"] == {
        "gray": [[40, 48], "uint8", "predicted"], "rgba": [[40, 48, 4], "uint8", "predicted"],
        "rgb16": [[40, 48, 3], "uint16", "predicted"], "float": [[40, 48, 3], "float32", "predicted"],
    }
    assert report["strength"] is not None and 1 <= report["vs_qf"] <= 100  # the strength head, the filter's QF
    restored = np.asarray(Image.open(tmp_path / "out.png"))
    assert restored.shape == np.asarray(Image.open(EXAMPLE)).shape
    assert (tmp_path / "tiled.png").is_file()
    assert (tmp_path / "profile" / "plug-ins" / "fbcnn-jpeg-artifacts" / "fbcnn-worker.json").is_file()


def test_without_torch_the_defaults_work_and_torch_commands_name_the_extra(tmp_path):
    code = HIDE_TORCH + f"""
import contextlib, io, json, os
from fbcnn_plugins.cli.main import main

results = {{}}
for name, argv in {{
    "restore": ["restore", {str(EXAMPLE)!r}, "-o", "out.png"],
    "train": ["train", "--config", "missing.toml"],
    "export": ["export", "run"],
    "cuda": ["restore", {str(EXAMPLE)!r}, "-o", "cuda.png", "--device", "cuda"],
    "pytorch": ["restore", {str(EXAMPLE)!r}, "-o", "pt.png"],
}}.items():
    err = io.StringIO()
    if name == "pytorch":
        os.environ["FBCNN_BACKEND"] = "pytorch"  # what a user sets to have every front end use PyTorch
    with contextlib.redirect_stderr(err):
        results[name] = [main(argv), err.getvalue()]
    os.environ.pop("FBCNN_BACKEND", None)
print(json.dumps(results))
"""
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["restore"][0] == 0 and (tmp_path / "out.png").is_file()
    for name in ("train", "export", "cuda", "pytorch"):
        code, message = results[name]
        assert code == 2 and "pip install 'fbcnn-plugins[torch]'" in message, (name, message)
    assert not (tmp_path / "cuda.png").exists() and not (tmp_path / "pt.png").exists()
