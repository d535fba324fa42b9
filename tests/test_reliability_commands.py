"""The other commands under hostile input (issue 30's items 2, 6, 10, 11 and 13, one or more tests each).

``fbcnn export`` of someone else's checkpoint, ``fbcnn train --config`` with a bad file,
``fbcnn qf --plot`` onto its input, FIFOs and devices behind every file the commands read,
``fbcnn eval`` and ``fbcnn train`` on corrupt, tiny and 16-bit images, and a closed pipe.
Each test runs the real command (in this process through ``main``, or as a child process
where a hang or a pipe is the point) on real files; none of them may end in a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fbcnn_plugins.cli.main import main

from conftest import natural_image, needs_torch

FBCNN = [sys.executable, "-P", "-m", "fbcnn_plugins.cli.main"]


def run_cli(*args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def run_child(*args, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([*FBCNN, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def jpeg(path: Path, seed: int = 0) -> Path:
    Image.fromarray(natural_image(48, 64, seed=seed)).save(path, quality=25)
    return path


# -- items 2, 6 and 10: fbcnn export -----------------------------------------------------------------

@pytest.fixture
def checkpoint(tmp_path):
    """A real training run's checkpoint (a tiny network, no steps), and a way to edit what it says."""
    from fbcnn_plugins.training.config import TrainConfig
    from fbcnn_plugins.training.trainer import Trainer

    train = tmp_path / "train"
    train.mkdir()
    Image.fromarray(natural_image(96, 96)).save(train / "a.png")
    config = TrainConfig(name="fbcnn-color-test", network="tiny", gray=False, train_dirs=[str(train)],
                         val_dirs=[str(train)], patch_size=32, batch_size=2, steps=1, workers=0, threads=1,
                         val_images=1, val_crop=64)
    run = tmp_path / "run"
    path = Trainer(config, run, log=lambda _: None).save()

    def edit(**changes):
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        for key, value in changes.items():
            if value is None:
                del state[key]
            else:
                state[key] = value
        torch.save(state, path)
        return run
    return edit


@needs_torch
def test_export_refuses_a_checkpoint_name_that_is_a_path(tmp_path, capsys, checkpoint):
    from fbcnn_plugins.models import HERE as bundled

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    run = checkpoint(config_name=os.path.relpath(outside / "evil", bundled))
    code, _, err = run_cli("export", run, capsys=capsys)
    assert code == 2 and "not a plain file name" in err
    assert list(outside.iterdir()) == []


@needs_torch
def test_export_of_a_checkpoint_missing_keys_is_a_message(tmp_path, capsys, checkpoint):
    run = checkpoint(config_name=None)
    code, _, err = run_cli("export", run, "--out", tmp_path / "m.safetensors", capsys=capsys)
    assert code == 2 and "missing config_name" in err
    (run / "last.pt").write_bytes(b"not a checkpoint")
    code, _, err = run_cli("export", run, "--out", tmp_path / "m.safetensors", capsys=capsys)
    assert code == 2 and "cannot be read as a training checkpoint" in err
    assert not (tmp_path / "m.safetensors").exists()


@needs_torch
def test_export_never_replaces_unrelated_files_or_a_bundled_model_unasked(tmp_path, capsys, checkpoint):
    from fbcnn_plugins.models import HERE as bundled
    from fbcnn_plugins.training.export import check_export_target

    run = checkpoint()
    victim = jpeg(tmp_path / "victim.jpg")
    (tmp_path / "victim.json").write_text('{"mine": true}')
    code, _, err = run_cli("export", run, "--out", victim, capsys=capsys)
    assert code == 2 and ".safetensors" in err
    (tmp_path / "notes.json").write_text('{"mine": true}')
    code, _, err = run_cli("export", run, "--out", tmp_path / "notes.safetensors", "--overwrite", capsys=capsys)
    assert code == 2 and "not a weights card" in err
    assert (tmp_path / "victim.json").read_text() == '{"mine": true}' == (tmp_path / "notes.json").read_text()
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == []
    code, _, err = run_cli("export", run, "--out", tmp_path / "m.safetensors", capsys=capsys)
    assert code == 0, err
    first = (tmp_path / "m.safetensors").read_bytes()
    code, _, err = run_cli("export", run, "--out", tmp_path / "m.safetensors", capsys=capsys)
    assert code == 2 and "--overwrite" in err and (tmp_path / "m.safetensors").read_bytes() == first
    code, _, err = run_cli("export", run, "--out", tmp_path / "m.safetensors", "--overwrite", capsys=capsys)
    assert code == 0, err
    with pytest.raises(ValueError, match="--overwrite"):  # the default target of a bundled model's run
        check_export_target(bundled / "fbcnn-color-small.safetensors", overwrite=False)


# -- item 6: fbcnn train --config --------------------------------------------------------------------

@needs_torch
def test_train_with_a_missing_invalid_or_special_config_is_a_message(tmp_path, capsys):
    code, _, err = run_cli("train", "--config", tmp_path / "nope.toml", capsys=capsys)
    assert code == 2 and "nope.toml" in err
    (tmp_path / "bad.toml").write_text("name = [unclosed\n")
    code, _, err = run_cli("train", "--config", tmp_path / "bad.toml", capsys=capsys)
    assert code == 2 and "bad.toml" in err and "TOML" in err
    code, _, err = run_cli("train", "--config", tmp_path, capsys=capsys)
    assert code == 2 and "not a regular file" in err


def bad_image_folder(folder: Path, kind: str, side: int) -> Path:
    """A folder holding one a.png: a PNG cut after its signature ("corrupt"), or a side x side photo ("tiny")."""
    folder.mkdir()
    if kind == "corrupt":
        (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    else:
        Image.fromarray(natural_image(side, side)).save(folder / "a.png")
    return folder


@needs_torch
def test_train_on_corrupt_or_tiny_images_is_a_message(tmp_path, capsys):
    for kind in ("corrupt", "tiny"):
        folder = bad_image_folder(tmp_path / kind, kind, 8)
        config = tmp_path / f"{kind}.toml"
        config.write_text(f'name = "t"\n[model]\nnetwork = "tiny"\n[data]\ntrain_dirs = ["{folder}"]\n'
                          f'[validation]\nval_dirs = ["{folder}"]\n[run]\nworkers = 0\n')
        code, _, err = run_cli("train", "--config", config, "--run-dir", tmp_path / f"run-{kind}", "--steps", 1,
                               "--device", "cpu", capsys=capsys)
        assert code == 2 and ("a.png" if kind == "corrupt" else "at least") in err, err


# -- item 10: fbcnn qf --plot ---------------------------------------------------------------------------

def test_qf_plot_onto_its_input_is_refused(tmp_path, capsys):
    photo = jpeg(tmp_path / "a.jpg")
    before = photo.read_bytes()
    code, _, err = run_cli("qf", photo, "--plot", photo, capsys=capsys)
    assert code == 2 and "input" in err
    code, _, err = run_cli("qf", photo, "--plot", tmp_path / "plot.jpg", capsys=capsys)
    assert code == 2 and "png" in err
    assert photo.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg"]


# -- item 11: FIFOs, devices, planar float TIFFs --------------------------------------------------------

def test_fifos_behind_xcf_model_and_eval_inputs_are_refused_without_hanging(tmp_path):
    jpeg(tmp_path / "photo.jpg")
    os.mkfifo(tmp_path / "pipe.xcf")
    os.mkfifo(tmp_path / "pipe.safetensors")
    (tmp_path / "eval").mkdir()
    Image.fromarray(natural_image(64, 64)).save(tmp_path / "eval" / "good.png")
    os.mkfifo(tmp_path / "eval" / "pipe.png")
    done = run_child("restore", "pipe.xcf", cwd=tmp_path, timeout=240)
    assert done.returncode == 1 and "FIFO" in done.stderr
    done = run_child("restore", "photo.jpg", "--model", "pipe.safetensors", cwd=tmp_path, timeout=240)
    assert done.returncode == 2 and "not a regular file" in done.stderr
    os.symlink("/dev/zero", tmp_path / "zero.safetensors")
    done = run_child("restore", "photo.jpg", "--model", "zero.safetensors", cwd=tmp_path, timeout=240)
    assert done.returncode == 2 and "not a regular file" in done.stderr
    done = run_child("eval", "--images", "eval", "--qf", "30", "--jpeg-only", cwd=tmp_path, timeout=240)
    assert done.returncode == 0 and "1 images" in done.stdout


def test_a_planar_float_tiff_is_held_to_the_pixel_limit(tmp_path):
    import tifffile

    from fbcnn_plugins.files.images import ImageFileError, read_image

    planes = np.random.default_rng(0).random((3, 100, 120), dtype=np.float32)
    tifffile.imwrite(tmp_path / "planar.tif", planes, photometric="rgb", planarconfig="separate")
    assert read_image(tmp_path / "planar.tif").pixels.shape == (100, 120, 3)
    with pytest.raises(ImageFileError, match="decompression bomb"):
        read_image(tmp_path / "planar.tif", max_pixels=100 * 120 - 1)


# -- item 13: fbcnn eval, a closed pipe -------------------------------------------------------------------

def test_eval_scales_sixteen_bit_gray_instead_of_clipping_it(tmp_path):
    from fbcnn_plugins.training.image_files import load_training_image

    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    loaded = load_training_image(tmp_path / "deep.png", gray=True)
    assert loaded.dtype == np.uint8
    assert np.abs(loaded.astype(int) - np.rint(ramp / 257).astype(int)).max() <= 1


def test_eval_on_corrupt_or_tiny_images_is_a_message(tmp_path, capsys):
    for kind in ("corrupt", "tiny"):
        folder = bad_image_folder(tmp_path / kind, kind, 6)
        code, _, err = run_cli("eval", "--images", folder, "--qf", 30, "--jpeg-only", capsys=capsys)
        assert code == 2 and "a.png" in err, err


def test_a_closed_pipe_ends_a_command_quietly(tmp_path):
    reader, writer = os.pipe()
    os.close(reader)  # the reader went away before the command printed anything, as `| head -0` does
    done = subprocess.run([*FBCNN, "models", "--json"], stdout=writer, stderr=subprocess.PIPE, text=True, timeout=120,
                          cwd=tmp_path)
    os.close(writer)
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert done.returncode == 141


# -- items 6, 7, 10 and 11 of fbcnn restore's planning ------------------------------------------------------

def test_an_output_name_longer_than_the_file_system_allows_is_an_error_before_any_work(tmp_path, capsys):
    long_input = jpeg(tmp_path / ("a" * 248 + ".jpg"))  # legal; its output "a..._fbcnn.png" (258 bytes) is not
    short_input = jpeg(tmp_path / "b.jpg", seed=1)
    code, _, err = run_cli("restore", long_input, short_input, "--qf", 30, capsys=capsys)
    assert code == 1 and "longer than the 255" in err and str(long_input) in err
    assert (tmp_path / "b_fbcnn.png").exists()  # the other file is still done


def test_an_output_name_at_the_limit_is_written_with_a_shorter_temporary_name(tmp_path, capsys):
    source = jpeg(tmp_path / ("c" * 245 + ".jpg"))  # output: 245 + "_fbcnn.png" = 255 bytes exactly
    code, _, err = run_cli("restore", source, "--qf", 30, capsys=capsys)
    assert code == 0, err
    assert (tmp_path / ("c" * 245 + "_fbcnn.png")).exists()
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]


def test_overwrite_replaces_only_files_this_project_wrote(tmp_path, capsys):
    jpeg(tmp_path / "a.jpg")
    original = natural_image(48, 64, seed=3)
    Image.fromarray(original).save(tmp_path / "a.png")  # the user's own original, not an output
    before = (tmp_path / "a.png").read_bytes()
    code, _, err = run_cli("restore", tmp_path, "--suffix", "", "--overwrite", "--qf", 30, capsys=capsys)
    assert code == 1 and "not written by fbcnn-plugins" in err
    assert (tmp_path / "a.png").read_bytes() == before


def test_a_recursive_glob_through_links_to_parent_folders_ends(tmp_path):
    folder = tmp_path / "shots" / "day"
    folder.mkdir(parents=True)
    jpeg(folder / "a.jpg")
    for name in ("up", "up2", "up3"):  # each a way back up: glob.glob would walk these without end
        os.symlink("../" * (1 + len(name) % 2), folder / name)
    done = run_child("restore", "shots/**/*.jpg", "--recursive", "--qf", "30", cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr
    assert (folder / "a_fbcnn.png").exists()
