"""The GPU-window command on the CPU: data pack, training, validation, parts, collection, chaining.

The end-to-end test is the CI dry run of a GPU window: the same command as on the GPU, with the
`tiny` network, a 20-second budget and a pack built from scikit-image's photos.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

torch = pytest.importorskip("torch", reason="GPU windows train with PyTorch (pip install 'fbcnn-plugins[torch]')")

from fbcnn_plugins.core.model_card import WeightsError, read_card, sha256_of
from fbcnn_plugins.core.weights import load_weights, save_weights
from fbcnn_plugins.core.configs import create_network, get_config
from fbcnn_plugins.training.config import load_train_config
from fbcnn_plugins.training.data_pack import build_pack, central_crop, shrink
from fbcnn_plugins.training.gpu_collect import collect
from fbcnn_plugins.training.gpu_run import WindowPlan, gpu_settings, plan_window
from fbcnn_plugins.training.start_weights import read_start_weights
from fbcnn_plugins.training.trainer import cosine_factor
from fbcnn_plugins.training.weight_parts import join_weights, split_weights

from conftest import REPO

GPU_CONFIG = REPO / "training" / "configs" / "color-base-gpu.toml"


def write_sources(root):
    """A ../shared/data look-alike from scikit-image's photos: train/skimage, train/bsds_val32 (a once-JPEG folder), val/set."""
    for folder, names in {"train/skimage": ("astronaut", "chelsea"), "train/bsds_val32": ("coffee",),
                          "val/set": ("rocket", "immunohistochemistry")}.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            Image.fromarray(getattr(skimage.data, name)()).save(root / folder / f"{name}.png")


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    write_sources(root)
    out = tmp_path_factory.mktemp("pack") / "pack"
    manifest = build_pack(root / "train", root / "val", out, 4 << 20, min_side=72, val_crop=96, log=lambda _: None)
    return root, out, manifest


def test_the_pack_is_lossless_and_shrinks_only_the_once_jpeg_folders(pack):
    root, out, manifest = pack
    kept = np.asarray(Image.open(out / "train" / "skimage" / "astronaut.webp"))
    assert np.array_equal(kept, skimage.data.astronaut())  # lossless, full size
    shrunk = np.asarray(Image.open(out / "train" / "bsds_val32" / "coffee.webp"))
    assert shrunk.shape[:2] == (200, 300)  # coffee is 400x600: halved
    assert np.array_equal(shrunk, shrink(skimage.data.coffee(), 0.5, 72))
    crop = np.asarray(Image.open(out / "val" / "set" / "rocket.webp"))
    assert np.array_equal(crop, central_crop(skimage.data.rocket(), 96))
    assert manifest["train"]["skimage"]["images"] == 2 and manifest["val"]["set"]["images"] == 2
    files = sum(p.stat().st_size for p in out.rglob("*.webp"))
    assert files == manifest["bytes"] <= 4 << 20


def test_the_pack_stops_at_its_budget_and_balances_bytes(tmp_path):
    write_sources(tmp_path / "src")
    manifest = build_pack(tmp_path / "src" / "train", None, tmp_path / "pack", 450_000, min_side=72,
                          log=lambda _: None)
    assert manifest["bytes"] <= 450_000
    assert manifest["train"]["skimage"]["images"] < 2  # astronaut and chelsea do not both fit
    assert manifest["train"]["bsds_val32"]["images"] == 1  # the small folder still gets its image


def test_windows_of_a_plan_add_up_to_one_cosine():
    plan = [WindowPlan(k, 3, 420, 6e-4, 1e-6, 0, 1) for k in range(3)]
    floor = 1e-6 / 6e-4
    for k in range(2):
        assert plan[k].factor(10**6, 1.0) == pytest.approx(plan[k + 1].factor(10**6, 0.0))
    for progress in (0.1, 0.5, 0.9):
        window, fraction = int(progress * 3), progress * 3 % 1
        assert plan[window].factor(10**6, fraction) == pytest.approx(cosine_factor(progress, floor))
    rewarm = WindowPlan(1, 3, 420, 6e-4, 1e-6, 100, 2)
    assert rewarm.factor(49, 0.0) == pytest.approx(0.5 * rewarm.factor(10**6, 0.0))


def test_a_window_continues_the_one_its_weights_came_from_and_refuses_past_the_plan():
    config = load_train_config(GPU_CONFIG)
    settings = gpu_settings(GPU_CONFIG)
    first = plan_window(config, None, settings, 420, None)
    assert (first.index, first.planned, first.warmup_steps) == (0, settings["planned_runs"], config.warmup_steps)
    card = {"training": {"gpu_run": first.to_dict()}}
    second = plan_window(config, card, settings, 420, None)
    assert (second.index, second.warmup_steps, second.seed) == (1, settings["rewarm_steps"], config.seed + 1)
    last = {"training": {"gpu_run": {"index": 2, "planned": 3}}}
    with pytest.raises(ValueError, match="planned-runs"):
        plan_window(config, last, settings, 420, None)
    assert plan_window(config, last, settings, 420, 4).index == 3


def test_split_weights_rejoin_exactly_and_refuse_a_damaged_part(tmp_path):
    weights = save_weights(create_network("tiny", 3), tmp_path / "w" / "m.safetensors", get_config("tiny"))
    card = split_weights(weights, tmp_path / "out", tag="s0000001", part_bytes=1_000_000)
    parts = read_card(card)["parts"]
    assert len(parts) == 3 and all((tmp_path / "out" / p["file"]).stat().st_size <= 1_000_000 for p in parts)
    joined = join_weights(card, tmp_path / "back")
    assert joined.read_bytes() == weights.read_bytes()
    assert load_weights(joined).verified
    # A newer export replaces the older parts.
    split_weights(weights, tmp_path / "out", tag="s0000002", part_bytes=2_000_000)
    assert sorted(p.name for p in (tmp_path / "out").glob("m.*.part*")) == ["m.s0000002.part0", "m.s0000002.part1"]
    damaged = tmp_path / "out" / "m.s0000002.part1"
    data = bytearray(damaged.read_bytes())
    data[100] ^= 1
    damaged.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="part1"):
        collect(tmp_path / "out", tmp_path / "never")
    assert not (tmp_path / "never").exists()


def run_window(out, pack, *extra):
    command = [sys.executable, "-P", "-m", "fbcnn_plugins.training.gpu_run", "--config", str(GPU_CONFIG), "--data", str(pack),
               "--out", str(out), "--network", "tiny", "--batch-size", "4", "--patch-size", "48", "--workers", "0",
               "--device", "cpu", "--probe-seconds", "0.5", "--part-bytes", "1000000", *extra]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "OUT": ""}, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_a_gpu_window_runs_end_to_end_on_the_cpu_and_the_next_one_continues_it(pack, tmp_path):
    _, pack_dir, _ = pack
    first = run_window(tmp_path / "out1", pack_dir, "--budget", "20", "--export-every", "4", "--init", "none")
    assert first["status"] == "complete" and first["plan"]["index"] == 0
    training = first["training"]
    assert training["steps"] >= 1 and training["mp_per_s"] > 0 and first["matmul_bf16_tflops"] > 0
    assert 0 < first["percent_of_matmul_bf16"] < 100
    assert first["data"]["patches_per_s_per_core"] > 0 and first["exports"] >= 2
    losses = [r["l1"] for r in first["log"] if r["kind"] == "train"]
    assert all(np.isfinite(losses))
    validation = first["validation_all"]
    assert validation["images"] == 2 and set(validation["model"]) == {"10", "20", "30", "40", "90"}
    assert set(validation["gain_over_bundled_db"]) == set(validation["model"])
    assert first["inference"] == {"skipped": "no CUDA device"}
    returned = sorted(p.name for p in (tmp_path / "out1").iterdir())
    assert len(returned) <= 8 and all((tmp_path / "out1" / n).stat().st_size <= 16 << 20 for n in returned)
    assert len(read_card(tmp_path / "out1" / "fbcnn-color-base.json")["parts"]) == 3  # tiny fp16: 2.5 MB in 1 MB parts

    history = tmp_path / "history"
    done = subprocess.run([sys.executable, "-P", "-m", "fbcnn_plugins.training.gpu_collect", str(tmp_path / "out1"),
                           "--into", str(history), "--keep-weights"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    weights = history / "fbcnn-color-base.safetensors"
    loaded = load_weights(weights)
    assert loaded.verified and loaded.config.name == "tiny"
    assert (history / "fbcnn-color-base.report.json").is_file()
    # The next window starts from the 8-bit form: about half the bytes, the same network within rounding.
    start = history / "fbcnn-color-base.start.safetensors"
    assert start.stat().st_size < 0.6 * weights.stat().st_size
    state, card = read_start_weights(start)
    assert card["sha256"] == sha256_of(weights) == read_card(history / "fbcnn-color-base.json")["sha256"]
    reference = loaded.network.float().state_dict()
    for name, value in state.items():
        assert torch.allclose(value, reference[name], rtol=0, atol=float(reference[name].abs().max()) / 250 + 1e-3), name

    second = run_window(tmp_path / "out2", pack_dir, "--budget", "3", "--init", str(start), "--final-val-qfs", "10")
    assert second["plan"]["index"] == 1 and second["init_sha256"] == sha256_of(weights)
    assert second["plan"]["lr_start"] == pytest.approx(first["plan"]["lr_end"])
    card = read_card(tmp_path / "out2" / "fbcnn-color-base.json")
    assert card["training"]["gpu_run"]["index"] == 1
    assert card["training"]["previous_stage"]["gpu_run"]["index"] == 0
    assert card["training"]["previous_stage"]["sha256"] == sha256_of(weights)
    assert set(second["validation_all"]["model"]) == {"10"}


def test_a_missing_pack_is_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, "-P", "-m", "fbcnn_plugins.training.gpu_run", "--data", str(tmp_path / "nothing"),
                           "--out", str(tmp_path / "out"), "--device", "cpu"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and "not a data pack" in done.stderr


def test_parts_of_damaged_weights_are_refused_before_anything_is_written(tmp_path):
    network = create_network("tiny", 3)
    with torch.no_grad():
        network.m_head.weight[0, 0, 0, 0] = float("nan")  # a diverged run: the sha256 is right, the weights are not
    weights = save_weights(network, tmp_path / "w" / "m.safetensors", get_config("tiny"))
    card = split_weights(weights, tmp_path / "out", tag="s0000001", part_bytes=1_000_000)
    with pytest.raises(WeightsError, match="NaN"):
        join_weights(card, tmp_path / "into")
    assert not (tmp_path / "into").exists()


def test_the_inference_benchmark_times_the_photo_and_both_frame_paths(monkeypatch):
    """The window's inference benchmark, on the CPU at small sizes: the ``fbcnn bench`` child runs
    from the repository root (as on the GPU machine, where the checkout's own folders must not shadow
    the installed package) and the frames are timed through the tiled and the whole-frame paths."""
    from fbcnn_plugins.training.gpu_measure import inference_benchmarks

    monkeypatch.chdir(REPO)
    report = inference_benchmarks(120, lambda _: None, device="cpu", photo_size=(160, 96), frame_size=(200, 120),
                                  precisions=("fp32",), batches=(1, 2), min_seconds=0.0)
    assert "error" not in report["photo"], report["photo"]
    assert report["photo_command"].startswith("fbcnn bench --device cpu --size 160 96")
    frames = report["frames"]
    assert [(f["tile"], f["batch_size"]) for f in frames] == [(512, 1), (200, 1), (200, 2)]
    assert all(f["fps"] > 0 and f["mp_per_s"] == pytest.approx(f["fps"] * 0.024) for f in frames)
