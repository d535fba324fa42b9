"""Weights files: our safetensors format and the authors' model-zoo state dicts."""

import json

import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (pip install 'fbcnn-plugins[torch]')")

from fbcnn_plugins.core.configs import create_network, get_config
from fbcnn_plugins.core.weights import WeightsError, load_weights, save_weights


def official_state_dict(in_nc: int, nc=(64, 128, 256, 512), nb=4) -> dict[str, torch.Tensor]:
    """Key names and shapes of the release's FBCNN, written out from its description (not from our module)."""
    g = torch.Generator().manual_seed(0)
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(key, cin, cout, k=3):
        shapes[f"{key}.weight"], shapes[f"{key}.bias"] = (cout, cin, k, k), (cout,)

    def tconv(key, cin, cout):
        shapes[f"{key}.weight"], shapes[f"{key}.bias"] = (cin, cout, 2, 2), (cout,)

    def linear(key, cin, cout):
        shapes[f"{key}.weight"], shapes[f"{key}.bias"] = (cout, cin), (cout,)

    def resblocks(prefix, c, first=0):
        for i in range(first, first + nb):
            conv(f"{prefix}.{i}.res.0", c, c)
            conv(f"{prefix}.{i}.res.2", c, c)

    conv("m_head", in_nc, nc[0])
    for level in range(3):
        resblocks(f"m_down{level + 1}", nc[level])
        conv(f"m_down{level + 1}.{nb}", nc[level], nc[level + 1], k=2)
    resblocks("m_body_encoder", nc[3])
    resblocks("m_body_decoder", nc[3])
    for level, (cin, cout) in zip((3, 2, 1), ((nc[3], nc[2]), (nc[2], nc[1]), (nc[1], nc[0]))):
        tconv(f"m_up{level}.0", cin, cout)
        resblocks(f"m_up{level}", cout, first=1)
    conv("m_tail", nc[0], in_nc)
    resblocks("qf_pred", nc[3])
    linear(f"qf_pred.{nb + 2}", 512, 512)
    linear(f"qf_pred.{nb + 4}", 512, 512)
    linear(f"qf_pred.{nb + 6}", 512, 1)
    linear("qf_embed.0", 1, 512)
    linear("qf_embed.2", 512, 512)
    linear("qf_embed.4", 512, 512)
    for level, c in zip((3, 2, 1), (nc[2], nc[1], nc[0])):
        linear(f"to_gamma_{level}.0", 512, c)
        linear(f"to_beta_{level}.0", 512, c)
    return {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}


@pytest.mark.parametrize("in_nc, filename", [(3, "fbcnn_color.pth"), (1, "fbcnn_gray.pth")])
def test_official_model_zoo_state_dict_loads_strictly(tmp_path, in_nc, filename):
    state = official_state_dict(in_nc)
    path = tmp_path / filename
    torch.save(state, path)
    loaded = load_weights(path)
    assert loaded.config.name == "paper"
    assert loaded.in_channels == in_nc
    ours = loaded.network.state_dict()
    assert set(ours) == set(state)  # strict: no missing and no unexpected keys
    for key, value in state.items():
        assert torch.equal(ours[key], value), key
    with torch.no_grad():
        y, q = loaded.network(torch.rand(1, in_nc, 24, 16))
    assert y.shape == (1, in_nc, 24, 16) and q.shape == (1, 1)


def test_pickled_code_in_a_pth_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pth"
    torch.save({"m_head.weight": Payload()}, path)
    with pytest.raises(WeightsError, match="safely"):
        load_weights(path)


def test_safetensors_round_trip_is_bit_exact_and_card_is_written(tmp_path):
    network = create_network("tiny", 3)
    path = save_weights(network, tmp_path / "m.safetensors", get_config("tiny"), name="m", dtype=torch.float16,
                        extra={"training": {"steps": 5}})
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["config"]["name"] == "tiny" and card["in_channels"] == 3
    assert card["qf_convention"] == "q = 1 - QF/100" and card["training"]["steps"] == 5
    loaded = load_weights(path)
    for key, value in network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value.half().float()), key
    # Saving the loaded network again gives byte-identical tensors.
    again = save_weights(loaded.network, tmp_path / "again.safetensors", get_config("tiny"), dtype=torch.float16)
    assert json.loads(again.with_suffix(".json").read_text())["sha256"] == card["sha256"]


def test_tampered_weights_fail_the_sha256_check(tmp_path):
    path = save_weights(create_network("tiny", 1), tmp_path / "m.safetensors", get_config("tiny"))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        load_weights(path)


def test_not_an_fbcnn_state_dict_is_named(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, path)
    with pytest.raises(WeightsError, match="other.pth.*not an FBCNN state dict"):
        load_weights(path)


def test_an_unregistered_config_keeps_its_global_residual(tmp_path):
    from fbcnn_plugins.core.configs import NetworkConfig

    config = NetworkConfig("custom", (8, 16, 32, 64), 1, 64, global_residual=True)
    network = config.build(3).eval()
    path = save_weights(network, tmp_path / "custom.safetensors", config, dtype=torch.float32)
    loaded = load_weights(path)
    assert loaded.config.global_residual
    x = torch.rand(1, 3, 24, 24)
    control = torch.full((1, 1), 0.5)
    with torch.no_grad():
        assert torch.equal(loaded.network(x, control)[0], network(x, control)[0])


def test_a_strength_head_travels_with_the_weights_and_leaves_the_rest_alone(tmp_path):
    network = create_network("tiny", 3)
    plain = save_weights(network, tmp_path / "plain.safetensors", get_config("tiny"))
    network.add_strength_head()
    with torch.no_grad():
        network.strength_pred[-2].bias.add_(0.5)  # a head that answers differently from the QF head
    path = save_weights(network, tmp_path / "strength.safetensors", get_config("tiny"))
    loaded, without = load_weights(path).network, load_weights(plain).network
    assert loaded.has_strength_head and not without.has_strength_head
    features = torch.rand(2, network.channels[3])
    assert torch.equal(loaded.quality_from_features(features), without.quality_from_features(features))
    assert not torch.allclose(loaded.strength_from_features(features), loaded.quality_from_features(features))
    image = torch.rand(1, 3, 32, 32)
    control = torch.full((1, 1), 0.5)
    assert torch.equal(loaded.restore(image, control), without.restore(image, control))


@pytest.mark.parametrize("gray", [False, True], ids=["colour", "gray"])
def test_the_bundled_models_have_a_strength_head_and_their_cards_say_how(gray):
    from fbcnn_plugins.core.catalog import load_model

    model = load_model(None, gray=gray)
    assert model.verified and model.network.has_strength_head
    fitted = model.card["strength_head"]
    assert fitted["patches"] > 1000 and "training/qf_head.py" in fitted["recipe"]
    held_out = fitted["held_out"]["resized"]
    assert held_out["regret_db"] < fitted["held_out_before"]["resized"]["regret_db"]
