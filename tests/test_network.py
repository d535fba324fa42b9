import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (pip install 'fbcnn-plugins[torch]')")

from fbcnn_plugins.core.configs import (
    config_from_state_dict, count_parameters, create_network, flops_per_pixel, get_config, list_configs,
)


def test_paper_config_matches_the_published_size():
    # 71.92 M parameters and 5.41 MFLOP/pixel are the paper's figures.
    network = create_network("paper", 3)
    assert count_parameters(network) == pytest.approx(71.92e6, rel=1e-3)
    assert flops_per_pixel("paper", 3, size=32) == pytest.approx(5.41e6, rel=2e-3)


@pytest.mark.parametrize("config, params, mflop", [("base", 9.36e6, 0.69), ("small", 5.26e6, 0.39), ("tiny", 1.26e6, 0.09)])
def test_compact_configs_have_the_sizes_the_readme_states(config, params, mflop):
    assert count_parameters(create_network(config, 3)) == pytest.approx(params, abs=0.005e6)
    assert flops_per_pixel(config, 3, size=32) / 1e6 == pytest.approx(mflop, abs=0.005)


@pytest.mark.parametrize("config", [c.name for c in list_configs() if c.name != "paper"])
def test_compact_configs_are_much_cheaper(config):
    paper = count_parameters(create_network("paper", 3))
    compact = count_parameters(create_network(config, 3))
    assert compact < paper / 5
    assert flops_per_pixel(config, 3, size=32) < 5.41e6 / 5


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(8, 8), (37, 53), (64, 40)])
def test_output_shape_matches_input_for_any_size(channels, size):
    network = create_network("tiny", channels).eval()
    x = torch.rand(2, channels, *size)
    with torch.no_grad():
        y, q = network(x)
    assert y.shape == x.shape
    assert q.shape == (2, 1)
    assert torch.all((q > 0) & (q < 1))


def test_qf_override_changes_the_output_and_prediction_does_not_depend_on_it():
    torch.manual_seed(0)
    network = create_network("tiny", 3).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        strong, q1 = network(x, torch.tensor([[0.9]]))
        weak, q2 = network(x, torch.tensor([[0.1]]))
        free, q3 = network(x)
    assert not torch.allclose(strong, weak)
    assert torch.equal(q1, q2) and torch.equal(q1, q3)
    with torch.no_grad():
        driven_by_own_prediction, _ = network(x, q3)
    assert torch.allclose(free, driven_by_own_prediction)


def test_tiled_quality_features_pool_like_the_whole_image():
    network = create_network("tiny", 3).eval()
    x = torch.rand(1, 3, 48, 40)
    with torch.no_grad():
        total, count = network.quality_feature_sum(x)
        assert torch.allclose(network.quality_from_features(total / count), network(x)[1], atol=1e-6)


@pytest.mark.parametrize("name", ["paper", "small", "tiny"])
@pytest.mark.parametrize("channels", [1, 3])
def test_config_is_inferred_from_state_dict_shapes(name, channels):
    state = create_network(name, channels).state_dict()
    config, in_channels = config_from_state_dict(state)
    assert config == get_config(name)
    assert in_channels == channels
