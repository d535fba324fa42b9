"""Training pipeline: degradations, labels, learning, exact resume, export, evaluation metrics."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (pip install 'fbcnn-plugins[torch]')")
from PIL import Image

from fbcnn_plugins.core.jpeg import double_jpeg, jpeg_roundtrip, rgb_to_y
from fbcnn_plugins.core.metrics import blocking_effect_factor, psnr, psnr_b
from fbcnn_plugins.core.weights import load_weights
from fbcnn_plugins.training.config import TrainConfig, load_train_config
from fbcnn_plugins.training.data import (
    ColorAugmentation, DegradationConfig, Downscale, PatchBatches, QualityDistribution, degrade_chain,
    load_training_image, scale_saturation,
)
from fbcnn_plugins.training.evaluation import Condition, evaluate
from fbcnn_plugins.training.export import export_run
from fbcnn_plugins.training.trainer import (
    Trainer, WeightAverage, load_checkpoint, prepare_batch, read_log, training_loss,
)

from conftest import REPO, natural_image


def block_edge_column(image: np.ndarray) -> int:
    """The column phase (0..7) with the strongest horizontal steps: where the 8x8 block edges lie."""
    steps = np.abs(np.diff(image.astype(float), axis=1)).mean(axis=0)
    return int(np.argmax([steps[phase::8].mean() for phase in range(8)]))


@pytest.mark.parametrize("shift", [0, 3, 5])
def test_double_jpeg_shift_really_moves_the_first_grid(shift):
    clean = natural_image(128, 160)[:, :, 1]
    degraded = double_jpeg(clean, 10, 95, (shift, shift))
    assert degraded.shape == (128 - shift, 160 - shift)
    # The first (strong) compression's edges sit after columns 7, 15, ... of the unshifted image.
    assert block_edge_column(degraded) == (7 - shift) % 8


def test_single_jpeg_is_libjpeg_and_matches_pillow_at_the_same_quality():
    import io

    image = natural_image(64, 64)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=30)
    pillow = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    assert psnr(pillow, jpeg_roundtrip(image, 30)) > 45


def test_gray_training_uses_matlab_y(tmp_path):
    assert rgb_to_y(np.array([[[255, 255, 255], [0, 0, 0]]], np.uint8)).tolist() == [[235, 16]]
    rgb = natural_image(40, 40)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert np.array_equal(load_training_image(tmp_path / "c.png", gray=True), rgb_to_y(rgb))


def make_batches(images, **degradation):
    config = DegradationConfig(**degradation)
    return PatchBatches(images, patch_size=32, batch_size=6, degradation=config, seed=1, total_steps=10)


def test_qf_labels_and_double_flags():
    images = [natural_image(80, 80, seed=s) for s in range(2)]
    single = make_batches(images, single=QualityDistribution([(1.0, 37, 37)]))[0]
    assert single["qf"].tolist() == [37.0] * 6 and not single["double"].any()
    assert single["clean"].shape == single["degraded"].shape == (6, 3, 32, 32)
    double = make_batches(images, double_ratio=1.0, double_first=QualityDistribution([(1.0, 20, 20)]),
                          double_second=QualityDistribution([(1.0, 60, 60)]))[0]
    assert double["double"].all() and double["qf"].tolist() == [20.0] * 6
    assert torch.equal(make_batches(images)[3]["degraded"], make_batches(images)[3]["degraded"])  # pure in (seed, step)


def test_label_control_switches_on_at_its_step_and_keeps_the_patches():
    images = [natural_image(96, 96, seed=s) for s in range(3)]
    plain = make_batches(images, double_ratio=0.5)
    config = DegradationConfig(double_ratio=0.5)
    labelled = PatchBatches(images, patch_size=32, batch_size=6, degradation=config, seed=1, total_steps=10,
                            label_control=0.5, label_control_from_step=4)
    assert "use_label" not in labelled[3]
    for step in (3, 4, 7):
        assert torch.equal(plain[step]["degraded"], labelled[step]["degraded"])
    assert labelled[4]["use_label"].dtype == torch.bool and len(labelled[4]["use_label"]) == 6


def test_labels_drive_the_decoder_and_keep_the_image_loss_out_of_the_qf_head():
    from fbcnn_plugins.core.configs import create_network

    network = create_network("tiny", 3)
    batch = prepare_batch(make_batches([natural_image(96, 96, seed=s) for s in range(2)])[0])

    def qf_head_gradient(batch) -> float:
        network.zero_grad(set_to_none=False)
        loss, _ = training_loss(network, batch, qf_weight=0.0)  # the image loss alone
        loss.backward()
        return sum(float(p.grad.abs().sum()) for p in network.qf_pred.parameters())

    assert qf_head_gradient(batch) > 0  # the paper's recipe: the image loss trains the QF head too
    mixed = dict(batch, use_label=torch.tensor([True, False] * 3))
    assert qf_head_gradient(mixed) == 0
    # The labelled samples are restored exactly as with their QF given.
    labelled = dict(batch, use_label=torch.ones(6, dtype=torch.bool))
    with torch.no_grad():
        given, _ = network(batch["degraded"], (1 - batch["qf"] / 100).unsqueeze(1))
        restored, _ = network(labelled["degraded"], lambda p: torch.where(labelled["use_label"].unsqueeze(1),
                                                                        (1 - batch["qf"] / 100).unsqueeze(1), p))
    assert torch.equal(given, restored)


def test_saturation_scales_chroma_and_keeps_luma_and_grays():
    image = natural_image(64, 64, seed=4)
    image[:8, :8] = 120  # a gray patch has no chroma to scale
    doubled = scale_saturation(image, 2.0)
    assert np.array_equal(scale_saturation(image, 1.0), image)
    assert np.array_equal(doubled[:8, :8], image[:8, :8])
    chroma = lambda im: np.abs(im.astype(float) - im.astype(float).mean(axis=2, keepdims=True)).mean()
    assert chroma(doubled) > 1.6 * chroma(image)
    luma = lambda im: im.astype(float) @ [0.299, 0.587, 0.114]
    unclipped = (doubled > 0).all(axis=2) & (doubled < 255).all(axis=2)
    assert np.abs(luma(doubled) - luma(image))[unclipped].max() <= 1.0


def test_color_augmentation_changes_colours_only_when_configured():
    images = [natural_image(96, 96, seed=s) for s in range(3)]
    plain = make_batches(images)
    kwargs = dict(patch_size=32, batch_size=6, degradation=DegradationConfig(), seed=1, total_steps=10)
    inactive = PatchBatches(images, color_augmentation=ColorAugmentation(), **kwargs)
    shuffled = PatchBatches(images, color_augmentation=ColorAugmentation(channel_shuffle=1.0), **kwargs)
    for step in (0, 5):
        assert torch.equal(inactive[step]["clean"], plain[step]["clean"])  # old configs keep their batches
        assert torch.equal(shuffled[step]["clean"], shuffled[step]["clean"])  # still pure in (seed, step)
    # Same regions (drawn before the colours), other channel orders; the degraded patch is the JPEG of
    # the augmented one, so the target of restoration is the augmented colours.
    batch, original = shuffled[2], plain[2]["clean"]
    closer = [psnr(c.numpy(), d.numpy()) > psnr(o.numpy(), d.numpy())
              for c, o, d in zip(batch["clean"], original, batch["degraded"]) if not torch.equal(c, o)]
    assert len(closer) >= 3 and all(closer)


def grid_strength(patch: np.ndarray, period: int) -> float:
    """How much stronger the steps between columns are at the strongest phase of ``period`` than on average."""
    gray = patch.astype(float).mean(axis=2) if patch.ndim == 3 else patch.astype(float)
    steps = np.abs(np.diff(gray, axis=1)).mean(axis=0)
    return max(steps[phase::period].mean() for phase in range(period)) / steps.mean()


def test_downscaling_the_source_erases_an_old_jpeg_grid_and_is_off_by_default():
    # A training photo that was a JPEG once: its 8x8 grid is what the lever should average away.
    photos = [natural_image(224, 224, seed=s) for s in range(2)]
    once_jpeg = [jpeg_roundtrip(photo, 20) for photo in photos]
    kwargs = dict(patch_size=48, batch_size=8, degradation=DegradationConfig(), seed=2, total_steps=10)
    plain = PatchBatches(once_jpeg, **kwargs)
    assert torch.equal(PatchBatches(once_jpeg, downscale=Downscale(), **kwargs)[1]["clean"], plain[1]["clean"])
    shrink = Downscale(1.0, (0.5, 0.5))
    shrunk = PatchBatches(once_jpeg, downscale=shrink, **kwargs)
    assert torch.equal(shrunk[1]["clean"], shrunk[1]["clean"])  # still pure in (seed, step)
    strength = lambda batches: np.mean([grid_strength(p.permute(1, 2, 0).numpy(), 8)
                                        for step in range(3) for p in batches[step]["clean"]])
    never_jpeg = strength(PatchBatches(photos, downscale=shrink, **kwargs))  # what chance alone gives
    assert strength(plain) > never_jpeg + 0.3
    assert strength(shrunk) < never_jpeg + 0.1
    with pytest.raises(ValueError, match="downscale range"):
        Downscale(1.0, (0.5, 1.5))


def test_chain_compresses_resizes_and_compresses_again_with_the_first_qf_as_label():
    source = natural_image(80, 80, seed=4)  # resized by 1.5 to the 120-pixel region of a 104-pixel patch
    config = DegradationConfig(chain_first=QualityDistribution([(1.0, 10, 10)]),
                               chain_second=QualityDistribution([(1.0, 90, 90)]))
    sample = degrade_chain(source, np.random.default_rng(0), config, 104)
    assert sample.qf == 10 and sample.is_double  # the harsher, first QF; no QF loss for it
    assert sample.clean.shape == sample.degraded.shape == (104, 104, 3)
    # The target is the resized clean source, aligned with the degraded patch.
    assert psnr(sample.clean, sample.degraded) > psnr(np.roll(sample.clean, 2, axis=1), sample.degraded) + 2
    # The strong first grid was stretched to a 12-pixel period; the second, at QF 90, is faint.
    assert grid_strength(sample.degraded, 12) > 1.3 * grid_strength(sample.degraded, 8)
    # Control: on the same content a plain QF-10 JPEG shows the 8-pixel period instead.
    single = jpeg_roundtrip(sample.clean, 10)
    assert grid_strength(single, 8) > 1.2 * grid_strength(single, 12)


def test_chain_samples_in_batches_are_labelled_and_flagged_and_off_by_default():
    images = [natural_image(160, 160, seed=s) for s in range(2)]
    plain = make_batches(images, double_ratio=0.25)
    off = make_batches(images, double_ratio=0.25, chain_ratio=0.0)
    assert torch.equal(plain[4]["degraded"], off[4]["degraded"])
    chained = make_batches(images, chain_ratio=1.0, chain_first=QualityDistribution([(1.0, 15, 15)]))
    for step in (0, 1):
        batch = chained[step]
        assert batch["double"].all() and batch["qf"].tolist() == [15.0] * 6
        assert batch["clean"].shape == batch["degraded"].shape == (6, 3, 32, 32)


@pytest.mark.parametrize("section, message", [
    ("[data.downscale]\nprobability = 1.5", "downscale probability"),
    ("[data.downscale]\nprobability = 0.5\nrange = [0.0, 1.0]", "downscale range"),
    ("[data.jpeg]\nchain_ratio = 2.0", "chain_ratio"),
    ("[data.jpeg]\nchain_ratio = 0.2\nchain_scale = [1.5, 0.75]", "chain_scale"),
    ("[optim]\nema_decay = 1.0", "ema_decay"),
])
def test_bad_lever_settings_are_refused_when_the_config_is_read(tmp_path, section, message):
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\ntrain_dirs = []\n{section}\n')
    with pytest.raises(ValueError, match=message) as error:
        load_train_config(config)
    assert str(config) in str(error.value)


def test_lever_settings_are_read_and_default_to_off(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('[data]\ntrain_dirs = []\n[data.downscale]\nprobability = 0.5\nrange = [0.6, 0.9]\n'
                      '[data.jpeg]\nchain_ratio = 0.2\nchain_qf1 = [[1.0, 10, 40]]\nchain_scale = [0.8, 1.2]\n'
                      '[optim]\nema_decay = 0.995\n[validation]\nval_dirs = []\n')
    loaded = load_train_config(config)
    assert loaded.downscale == Downscale(0.5, (0.6, 0.9)) and loaded.ema_decay == 0.995
    assert loaded.degradation.chain_ratio == 0.2 and loaded.degradation.chain_scale == (0.8, 1.2)
    assert loaded.degradation.chain_first.components == [(1.0, 10, 40)]
    assert loaded.degradation.chain_second.components == [(1.0, 80, 95)]
    defaults = load_train_config(REPO / "training" / "configs" / "color-small-stage3.toml")
    assert not defaults.downscale.active and defaults.ema_decay == 0 and defaults.degradation.chain_ratio == 0


@pytest.mark.parametrize("color, message", [
    ("channel_shuffle = 0.5", "colour models"),  # on a gray model
    ("channel_shuffle = 1.5", "probability"),
    ("saturation_probability = 0.5\nsaturation_range = [0.0, 2.0]", "0 < low <= high"),
    ("saturation_probability = 0.5\nsaturation_range = [2.0, 1.0]", "0 < low <= high"),
    ("saturation_probability = 0.5\nsaturation_range = 2.0", "data.color"),
])
def test_bad_color_augmentation_settings_are_refused_when_the_config_is_read(tmp_path, color, message):
    config = tmp_path / "run.toml"
    gray = "true" if message == "colour models" else "false"
    config.write_text(f'[model]\ngray = {gray}\n[data]\ntrain_dirs = []\n[data.color]\n{color}\n')
    with pytest.raises(ValueError, match=message) as error:
        load_train_config(config)
    assert str(config) in str(error.value)


def test_run_dir_is_read_from_the_run_section(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('name = "m"\n[data]\ntrain_dirs = []\n[validation]\nval_dirs = []\n[run]\nrun_dir = "runs/m-stage2"\nseed = 4\n')
    assert load_train_config(config).run_dir == "runs/m-stage2"


@pytest.fixture()
def tiny_config(tmp_path):
    train, val = tmp_path / "train", tmp_path / "val"
    train.mkdir(), val.mkdir()
    for s in range(3):
        Image.fromarray(natural_image(96, 96, seed=s)).save(train / f"{s}.png")
    Image.fromarray(natural_image(64, 64, seed=9)).save(val / "v.png")
    (tmp_path / "tiny.toml").write_text('name = "fbcnn-color-test"\n')  # the run keeps a copy of its config
    return TrainConfig(
        name="fbcnn-color-test", network="tiny", gray=False, train_dirs=[str(train)], val_dirs=[str(val)],
        patch_size=32, batch_size=4, steps=40, lr=1e-3, warmup_steps=0, workers=0, threads=1,
        checkpoint_every=1000, val_every=20, val_crop=64, val_images=1, seed=3, source=str(tmp_path / "tiny.toml"),
    )


def test_a_few_steps_reduce_the_loss(tiny_config, tmp_path):
    trainer = Trainer(tiny_config, tmp_path / "run", log=lambda _: None)
    # Start from a random tail (not the identity the trainer sets up), so 40 steps have something to fix.
    torch.manual_seed(0)
    trainer.network.m_tail.reset_parameters()
    probe = prepare_batch(make_batches([natural_image(80, 80, seed=5)], single=QualityDistribution([(1.0, 10, 10)]))[0])
    with torch.no_grad():
        before, _ = training_loss(trainer.network.eval(), probe, 0.1)
    trainer.train(validate=False)
    with torch.no_grad():
        after, _ = training_loss(trainer.network.eval(), probe, 0.1)
    assert trainer.step == 40
    assert float(after) < 0.9 * float(before)


def test_resume_continues_exactly(tiny_config, tmp_path):
    straight = Trainer(tiny_config, tmp_path / "straight", log=lambda _: None)
    straight.train(max_steps=6, validate=False)
    first = Trainer(tiny_config, tmp_path / "split", log=lambda _: None)
    first.train(max_steps=3, validate=False)
    first.save()
    second = Trainer(tiny_config, tmp_path / "split", log=lambda _: None)
    assert second.resume() and second.step == 3
    second.train(max_steps=3, validate=False)
    for key, value in straight.network.state_dict().items():
        assert torch.equal(value, second.network.state_dict()[key]), key


def test_a_time_budget_ends_the_run_and_decays_the_rate_over_it(tiny_config, tmp_path):
    trainer = Trainer(tiny_config, tmp_path / "run", log=lambda _: None)
    trainer.train(time_budget=1.5, validate=False, report_every=1)
    assert 0 < trainer.step < 10**6 and (tmp_path / "run" / "last.pt").exists()
    rates = [r["lr"] for r in read_log(tmp_path / "run") if r["kind"] == "train"]
    assert rates[0] > rates[-1] and rates[-1] < 0.2 * tiny_config.lr  # the cosine ran to (near) its end


def test_a_second_stage_starts_from_the_first_stages_weights(tiny_config, tmp_path):
    first = Trainer(tiny_config, tmp_path / "first", log=lambda _: None)
    first.train(max_steps=3, validate=False)
    exported = export_run(tmp_path / "first", tmp_path / "first.safetensors")
    for init_from, exact in ((tmp_path / "first" / "last.pt", True), (exported, False)):
        second = Trainer(dataclasses.replace(tiny_config, init_from=str(init_from)), tmp_path / "second", log=lambda _: None)
        for key, value in first.network.state_dict().items():
            expected = value if exact else value.half().float()
            assert torch.equal(second.network.state_dict()[key], expected), (init_from, key)
        # Either way the new card tells where its starting weights came from, under the same keys.
        assert second.previous_stage["steps"] == 3 and second.previous_stage["config_file"] == tiny_config.source
    assert second.previous_stage["sha256"] == load_weights(exported).card["sha256"]
    second.train(max_steps=2, validate=False)
    card = load_weights(export_run(tmp_path / "second", tmp_path / "second.safetensors")).card
    assert card["training"]["init_from"] == str(exported) and card["training"]["previous_stage"]["steps"] == 3
    gray = dataclasses.replace(tiny_config, gray=True, init_from=str(exported))
    with pytest.raises(ValueError, match="not this config"):
        Trainer(gray, tmp_path / "gray", log=lambda _: None)


def test_weight_average_follows_the_steps_and_is_what_gets_exported(tiny_config, tmp_path):
    config = dataclasses.replace(tiny_config, ema_decay=0.9)
    trainer = Trainer(config, tmp_path / "run", log=lambda _: None)
    expected = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    for update in range(1, 6):  # one step at a time, averaging by hand beside it
        trainer.train(max_steps=1, validate=False)
        decay = min(0.9, (1 + update) / (10 + update))
        expected = {k: decay * expected[k] + (1 - decay) * v for k, v in trainer.network.state_dict().items()}
    averaged = trainer.average.network.state_dict()
    for key, value in expected.items():
        assert torch.allclose(averaged[key], value, atol=1e-6), key
    assert any(not torch.equal(averaged[k], v) for k, v in trainer.network.state_dict().items())
    trainer.save()
    loaded = load_weights(export_run(tmp_path / "run", tmp_path / "m.safetensors"))
    for key, value in averaged.items():
        assert torch.equal(loaded.network.state_dict()[key], value.half().float()), key
    assert loaded.card["training"]["ema_decay"] == 0.9


def test_weight_average_resumes_exactly_and_leaves_the_steps_alone(tiny_config, tmp_path):
    config = dataclasses.replace(tiny_config, ema_decay=0.9)
    straight = Trainer(config, tmp_path / "straight", log=lambda _: None)
    straight.train(max_steps=6, validate=False)
    first = Trainer(config, tmp_path / "split", log=lambda _: None)
    first.train(max_steps=3, validate=False)
    first.save()
    second = Trainer(config, tmp_path / "split", log=lambda _: None)
    assert second.resume()
    second.train(max_steps=3, validate=False)
    for key, value in straight.average.network.state_dict().items():
        assert torch.equal(value, second.average.network.state_dict()[key]), key
    without = Trainer(tiny_config, tmp_path / "plain", log=lambda _: None)
    without.train(max_steps=6, validate=False)
    assert without.average is None
    for key, value in without.network.state_dict().items():  # the average does not change the training
        assert torch.equal(value, straight.network.state_dict()[key]), key


def test_export_round_trip_is_bit_exact_and_carries_the_record(tiny_config, tmp_path):
    trainer = Trainer(tiny_config, tmp_path / "run", log=lambda _: None)
    trainer.train(max_steps=20)
    path = export_run(tmp_path / "run", tmp_path / "out" / "m.safetensors")
    loaded = load_weights(path)
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")["network"]
    for key, value in checkpoint.items():
        assert torch.equal(loaded.network.state_dict()[key], value.half().float()), key
    assert loaded.card["training"]["steps"] == 20
    assert loaded.card["validation"]["step"] == 20 and "10" in loaded.card["validation"]["val"]


def test_shipped_training_configs_parse():
    configs = sorted((REPO / "training" / "configs").glob("*.toml"))
    assert {c.stem for c in configs} >= {"color-small", "color-small-stage2", "color-small-stage3", "gray-small", "gray-small-stage2"}
    run_dirs = set()
    for path in configs:
        config = load_train_config(path)
        # The name says the colour mode and the network: color-small-stage2, color-base-gpu, ...
        assert config.network == path.stem.split("-")[1] and config.gray == path.stem.startswith("gray"), path.name
        assert config.degradation.double_ratio > 0, path.name  # FBCNN-A: single and double JPEG mixed
        if "stage" in path.stem:
            # A later stage starts from an earlier run and keeps its own folder, so it never resumes the earlier one.
            assert config.init_from and config.run_dir, path.name
            assert Path(config.init_from).parent != Path(config.run_dir), path.name
            run_dirs.add(config.run_dir)
    assert len(run_dirs) == 3
    # The lever-ranking fine-tunes: the same start, steps and seed, each its own folder, one lever each.
    levers = {path.stem: load_train_config(path) for path in configs if path.stem.startswith("color-small-ft-")}
    assert {"color-small-ft-baseline", "color-small-ft-ema", "color-small-ft-downscale",
            "color-small-ft-wallpapers", "color-small-ft-chain"} <= set(levers)
    assert len({c.run_dir for c in levers.values()}) == len(levers)
    baseline = levers["color-small-ft-baseline"]
    assert (REPO / baseline.init_from).exists()
    for name, config in levers.items():
        assert (config.init_from, config.steps, config.batch_size, config.seed) == (
            baseline.init_from, baseline.steps, baseline.batch_size, baseline.seed), name
    assert levers["color-small-ft-ema"].ema_decay > 0 and levers["color-small-ft-downscale"].downscale.active
    assert levers["color-small-ft-chain"].degradation.chain_ratio > 0
    assert len(levers["color-small-ft-wallpapers"].train_dirs) == len(baseline.train_dirs) + 1
    for name in ("color-small-stage2", "color-small-stage3"):
        assert load_train_config(REPO / "training" / "configs" / f"{name}.toml").color_augmentation.active


def test_psnr_b_matches_a_hand_computed_case():
    # 16x16 image: left half 0, right half 8 -> one vertical step of 8 at the block edge between columns 7 and 8.
    reference = np.zeros((16, 16), np.uint8)
    test = np.zeros((16, 16), np.uint8)
    test[:, 8:] = 8
    # Boundary pairs: columns (7,8) and rows (7,8): 16 + 16 = 32 pairs; only the 16 column pairs differ, by 64.
    d_boundary = 16 * 64 / 32
    d_inner = 0.0  # 2 * 16 * 14 inner pairs, none differ
    bef = math.log2(8) / math.log2(16) * (d_boundary - d_inner)
    mse = 8**2 * 0.5
    assert blocking_effect_factor(test) == pytest.approx(bef)
    assert psnr_b(reference, test) == pytest.approx(10 * math.log10(255**2 / (mse + bef)))


def test_eval_reports_the_known_jpeg_pair():
    clean = natural_image(64, 72, seed=2)
    [result] = evaluate([("x", clean)], [Condition(20)], restorer=None)
    assert result.jpeg["psnr"] == pytest.approx(psnr(clean, jpeg_roundtrip(clean, 20)))
    [double] = evaluate([("x", clean)], [Condition(10, 30, (4, 4))], restorer=None)
    assert double.jpeg["psnr"] == pytest.approx(psnr(clean[4:, 4:], double_jpeg(clean, 10, 30, (4, 4))))


def test_eval_qf_modes_drive_the_network_with_the_named_qf(bundled_color_model):
    from fbcnn_plugins.core.restorer import Restorer

    clean = natural_image(96, 128, seed=3)
    restorer = Restorer(bundled_color_model, device="cpu")
    double = Condition(10, 30, (4, 4))
    [given] = evaluate([("x", clean)], [double], restorer, qf_mode="given")
    [dominant] = evaluate([("x", clean)], [double], restorer, qf_mode="dominant")
    assert given.qf_used == 10  # the smaller, dominant QF of the pair
    assert abs(dominant.qf_used - 10) <= 5  # FBCNN-D finds it from the pixels
    with pytest.raises(ValueError, match="qf mode must be one of"):
        evaluate([("x", clean)], [double], restorer, qf_mode="header")


def test_strength_head_is_fitted_on_measured_chain_curves_and_saved_with_a_card(tmp_path):
    """training/qf_head.py end to end on scikit-image's photos: collect, fit, write, load."""
    from skimage import data as samples

    from fbcnn_plugins.core.catalog import load_model
    from fbcnn_plugins.core.weights import load_weights
    from fbcnn_plugins.training import qf_head

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(samples, name)()).save(photos / f"{name}.png")
    collected = qf_head.collect(load_model(None, gray=False), [photos], count=12, seed=1, sides=(48, 64),
                                log=lambda line: None)
    count = len(collected["curves"])
    assert count >= 8 and collected["curves"].shape == (count, len(qf_head.QF_GRID))
    # Each label is measured: the PSNR curve peaks at 100 for a never-compressed patch and lower for JPEGs.
    best = qf_head.best_qf(collected["curves"])
    for family, strength in zip(collected["family"], best):
        if family == "clean":
            assert strength == 100
    np.savez(tmp_path / "patches.npz", **collected)
    out = tmp_path / "model" / "fbcnn-color-small.safetensors"
    qf_head.main(["fit", "--data", str(tmp_path / "patches.npz"), "--out", str(out), "--steps", "50"])
    loaded = load_weights(out)
    assert loaded.verified and loaded.network.has_strength_head
    assert loaded.card["strength_head"]["patches"] == count
    bundled = load_model(None, gray=False).network
    for key, value in bundled.state_dict().items():
        if not key.startswith("strength_pred."):
            assert torch.equal(loaded.network.state_dict()[key], value), key  # nothing else changed


def test_the_gray_model_gets_its_strength_head_from_gray_patches(tmp_path):
    """``collect --gray`` / ``fit --gray``: gray chains through the gray model; only the head is new."""
    from skimage import data as samples

    from fbcnn_plugins.core.catalog import load_model
    from fbcnn_plugins.core.weights import load_weights
    from fbcnn_plugins.training import qf_head

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("camera", "coffee"):
        Image.fromarray(getattr(samples, name)()).save(photos / f"{name}.png")
    gray = load_model(None, gray=True)
    collected = qf_head.collect(gray, [photos], count=8, seed=2, sides=(48,), log=lambda line: None)
    assert collected["features"].shape[1] == gray.network.channels[3]
    assert not {"single444", "single422"} & set(collected["family"])  # no chroma in a gray file
    np.savez(tmp_path / "patches.npz", **collected)
    out = tmp_path / "model" / "fbcnn-gray-small.safetensors"
    qf_head.main(["fit", "--gray", "--data", str(tmp_path / "patches.npz"), "--out", str(out), "--steps", "20"])
    loaded = load_weights(out)
    assert loaded.verified and loaded.is_gray and loaded.network.has_strength_head
    assert loaded.card["strength_head"]["added_to_sha256"] == gray.card["sha256"]
    record, previous = loaded.card["strength_head"], gray.card["strength_head"]
    assert record["single_save_strength"] == previous["single_save_strength"]  # measured without any head: kept
    assert not set(qf_head.HEAD_DEPENDENT_FITS) & set(record)  # chosen on the old head's readings: left out
    fitted = loaded.network.state_dict()
    for key, value in gray.network.state_dict().items():
        if key.startswith("strength_pred."):
            continue  # the head this fit replaces
        assert torch.equal(fitted[key], value), key  # nothing else changed
    assert not all(torch.equal(fitted[key], value) for key, value in gray.network.state_dict().items()
                   if key.startswith("strength_pred."))


def test_a_stage_started_from_weights_with_a_strength_head_leaves_the_head_behind(tiny_config, tmp_path):
    """Training changes the features the strength head reads, so a new stage starts without it."""
    from fbcnn_plugins.core.configs import create_network, get_config
    from fbcnn_plugins.core.weights import save_weights

    network = create_network(tiny_config.network, 3)
    network.add_strength_head()
    start = save_weights(network, tmp_path / "with-head.safetensors", get_config(tiny_config.network))
    second = Trainer(dataclasses.replace(tiny_config, init_from=str(start)), tmp_path / "second", log=lambda _: None)
    assert not second.network.has_strength_head
    for key, value in second.network.state_dict().items():
        assert torch.equal(value, network.state_dict()[key].half().float()), key


def test_collect_measures_on_the_grid_and_families_it_is_given(tmp_path):
    """A finer grid above QF 80 and a subset of chain families: the curves are measured there, and
    a QF of the default grid gets the same PSNR either way (one encoder pass, the same decoder)."""
    from skimage import data as samples

    from fbcnn_plugins.core.catalog import load_model
    from fbcnn_plugins.training import qf_head
    from fbcnn_plugins.training.strength_curves import load_patches

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(samples.camera()).save(photos / "camera.png")
    gray = load_model(None, gray=True)
    fine = (10, 30, 80, 85, 90, 93, 96, 100)
    collected = qf_head.collect(gray, [photos], count=6, seed=3, sides=(64,), log=lambda line: None,
                                grid=fine, families=("single", "resized"))
    assert tuple(collected["grid"]) == fine and collected["curves"].shape[1] == len(fine)
    assert set(collected["family"]) == {"single", "resized"} and len(collected["curves"]) >= 4
    only = qf_head.collect(gray, [photos], count=3, seed=4, sides=(64,), log=lambda line: None, grid=(10, 90),
                           families=("sharpened",))
    assert set(only["family"]) == {"sharpened"}
    coarse = qf_head.collect(gray, [photos], count=6, seed=3, sides=(64,), log=lambda line: None,
                             families=("single", "resized"))
    assert list(coarse["params"]) == list(collected["params"])  # the same draws
    for qf in (10, 30, 80, 90, 100):
        np.testing.assert_allclose(collected["curves"][:, fine.index(qf)], coarse["curves"][:, qf_head.QF_GRID.index(qf)],
                                   atol=1e-4)
    # What reads the patches scores them on their own grid: the header's loss by plain interpolation there.
    rows = np.arange(len(collected["curves"]))
    headers = np.array([qf_head.header_of(f, p) for f, p in zip(collected["family"], collected["params"])])
    by_family = qf_head.report(collected, headers, rows)
    for family, record in by_family.items():
        mask = collected["family"] == family
        expected = [c.max() - np.interp(h, fine, c) for c, h in zip(collected["curves"][mask], headers[mask])]
        assert record["header_regret_db"] == pytest.approx(float(np.mean(expected)), abs=1e-4)
    # ... and collections on different grids are not joined.
    np.savez(tmp_path / "fine.npz", **collected)
    np.savez(tmp_path / "coarse.npz", **coarse)
    with pytest.raises(ValueError, match="coarse.npz: measured on the grid"):
        load_patches([tmp_path / "fine.npz", tmp_path / "coarse.npz"])
    assert len(load_patches([tmp_path / "fine.npz", tmp_path / "fine.npz"])["curves"]) == 2 * len(rows)


def test_collect_draws_generated_drawn_images_only_when_asked_and_keeps_both_readings(tmp_path):
    """``--families drawn`` saves generated drawn images (never a training photo) once; every patch
    carries the model's QF estimate and strength reading, which the drawn-save rule is fitted on."""
    from skimage import data as samples

    from fbcnn_plugins.core.catalog import load_model
    from fbcnn_plugins.training import qf_head

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(samples.camera()).save(photos / "camera.png")
    gray = load_model(None, gray=True)
    both = qf_head.collect(gray, [photos], count=8, seed=5, sides=(64,), log=lambda line: None, grid=(50, 90),
                           families=("single", "drawn"))
    assert set(both["family"]) == {"single", "drawn"}
    drawn = both["family"] == "drawn"
    assert all(qf_head.header_of("drawn", p) == json.loads(p)[0] for p in both["params"][drawn])
    network = gray.network.float().eval()
    np.testing.assert_allclose(both["quality_estimate"], qf_head.predict_quality(network, both["features"]), atol=1e-4)
    np.testing.assert_allclose(both["strength_estimate"], qf_head.predict(network, both["features"]), atol=1e-4)
    default = qf_head.collect(gray, [photos], count=12, seed=5, sides=(64,), log=lambda line: None, grid=(50, 90))
    assert "drawn" not in set(default["family"])


def test_collect_can_keep_only_high_last_saves_and_measure_in_bf16(tmp_path):
    """``collect --min-last-save 80 --bf16``: every patch's file header says QF 80 or more (what rule 3
    decides on), draws below it do not count, and the curves measured in bf16 have their best where
    fp32 has it."""
    from skimage import data as samples

    from fbcnn_plugins.core.catalog import load_model
    from fbcnn_plugins.training import qf_head
    from fbcnn_plugins.training.strength_curves import header_of

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(samples.camera()).save(photos / "camera.png")
    model = load_model(None, gray=True)
    kept = qf_head.collect(model, [photos], count=6, seed=3, sides=(64,), families=("single", "resized"),
                           min_last_save=80, bf16=True, log=lambda line: None)
    headers = [header_of(f, p) for f, p in zip(kept["family"], kept["params"])]
    assert len(headers) >= 4 and min(headers) >= 80
    fp32 = qf_head.collect(model, [photos], count=6, seed=3, sides=(64,), families=("single", "resized"),
                           min_last_save=80, log=lambda line: None)
    assert list(fp32["params"]) == list(kept["params"])  # the same draws
    assert np.abs(fp32["curves"] - kept["curves"]).max() < 0.2
