"""Network structure, configuration and fused ensembles.

Table-1 network on a 33×33 input, 'valid' padding (per member)::

    conv1+relu (B, 16, 27, 27) → maxpool1 (B, 16, 13, 13)
    conv2+relu (B, 32, 7, 7)   → maxpool2 (B, 32, 3, 3) → flatten 288
    dense 300 + relu + dropout(p = 0.45) → dense n_units

and with 'same' padding: (16, 33, 33) → (16, 16, 16) → (32, 16, 16) → (32, 7, 7), flatten 1568.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from closedloop.errors import ConfigError
from closedloop.model.ensemble import stack_members, unstack_members
from closedloop.model.networks import ModelConfig, build_network, count_parameters, member_seeds

TABLE1_SHAPES = [
    ("conv1+relu", (2, 16, 27, 27)),
    ("maxpool1", (2, 16, 13, 13)),
    ("conv2+relu", (2, 32, 7, 7)),
    ("maxpool2", (2, 32, 3, 3)),
]


def test_table1_layer_shapes():
    network = build_network(ModelConfig(), n_units=40)
    assert network.core.layer_shapes(batch=2) == TABLE1_SHAPES
    assert tuple(network.readout.hidden_weight.shape) == (1, 288, 300)
    assert tuple(network.readout.output_weight.shape) == (1, 300, 40)
    assert network.readout.dropout_p == pytest.approx(0.45)
    # conv1 800 + conv2 25 120 + dense 86 700 + output 12 040
    assert count_parameters(network) == 124_660
    images = torch.rand(5, 33, 33)
    assert network(images).shape == (5, 40)
    assert network.forward_members(images.unsqueeze(1)).shape == (1, 5, 40)


def test_same_padding_shapes():
    network = build_network(ModelConfig(padding="same"), n_units=3)
    assert network.core.layer_shapes(batch=1)[-1] == ("maxpool2", (1, 32, 7, 7))
    assert tuple(network.readout.hidden_weight.shape) == (1, 32 * 7 * 7, 300)


def test_pooling_only_after_chosen_layers():
    network = build_network(ModelConfig(architecture="factorised", pool_layers=(1,), batch_norm=True), n_units=4)
    assert network.core.layer_shapes(batch=1)[-1] == ("conv2+relu", (1, 32, 7, 7))
    assert tuple(network.readout.mask.shape) == (1, 4, 49)
    assert tuple(network.core.norms[1].running_mean.shape) == (1, 32)


def test_factorised_readout_starts_near_each_units_mean_rate():
    network = build_network(
        ModelConfig(architecture="factorised", pool_layers=(1,), batch_norm=True, seed=0), n_units=6
    )
    network.set_output_statistics(torch.full((6,), 20.0), torch.full((6,), 5.0))
    with torch.no_grad():
        rates = network.train()(torch.rand(64, 33, 33))
    # Within about one standard deviation of the mean: the first loss is O(1), not O(100).
    assert torch.all((rates.mean(0) - 20.0).abs() < 5.0), rates.mean(0)


def test_core_that_shrinks_to_nothing_is_rejected():
    with pytest.raises(ValueError, match="shrinks to nothing"):
        build_network(ModelConfig(core_filters=(4, 4, 4), core_kernels=(9, 9, 9)), n_units=2)


def test_softplus_output_is_nonnegative_and_starts_near_the_mean():
    torch.manual_seed(0)
    network = build_network(ModelConfig(), n_units=3).eval()
    network.set_output_statistics(torch.tensor([0.5, 10.0, 40.0]), torch.tensor([1.0, 5.0, 20.0]))
    with torch.no_grad():
        rates = network(torch.rand(64, 33, 33))
    assert torch.all(rates >= 0)
    assert torch.allclose(rates.mean(0), torch.tensor([0.5, 10.0, 40.0]), rtol=0.2, atol=0.3)


def test_linear_output_option_can_go_negative():
    network = build_network(ModelConfig(output_nonlinearity="none"), n_units=1).eval()
    network.set_output_statistics(torch.tensor([-50.0]), torch.tensor([1.0]))
    with torch.no_grad():
        assert torch.all(network(torch.rand(64, 33, 33)) < 0)


def test_config_round_trips_through_yaml():
    config = ModelConfig(
        architecture="factorised",
        core_filters=(8, 16, 16),
        core_kernels=(5, 5, 3),
        batch_size=32,
        l1_readout=0.01,
        ensemble_size=4,
        seed=7,
        pool_layers=(1, 3),
        batch_norm=True,
        input_normalisation="zscore",
        core_normalisation="divisive",
        gabor_bank=True,
    )
    text = yaml.safe_dump({"model": config.to_dict()})
    assert ModelConfig.from_dict(yaml.safe_load(text)["model"]) == config


def test_config_accepts_yaml_exponent_strings():
    # PyYAML reads 1e-3 (no dot) as a string.
    config = ModelConfig.from_dict(yaml.safe_load("learning_rate: 1e-3\nweight_decay: 0"))
    assert config.learning_rate == 1e-3 and config.weight_decay == 0.0


@pytest.mark.parametrize(
    "data,field,text",
    [
        ({"dropout_keep": 1.5}, "model.dropout_keep", "probability of keeping"),
        ({"architecture": "resnet"}, "model.architecture", "kindel2017"),
        ({"core_filters": [16, 32], "core_kernels": [7]}, "model.core_kernels", "one positive kernel"),
        ({"max_epochs": "many"}, "model.max_epochs", "integer"),
        ({"max_epochs": 0}, "model.max_epochs", ">= 1"),
        ({"learning_rate": -1}, "model.learning_rate", "positive"),
        ({"padding": "full"}, "model.padding", "valid, same"),
        ({"batchsize": 4}, "model.batchsize", "unknown setting"),
        ({"architecture": "linear", "ensemble_size": 3}, "model.ensemble_size", "linear"),
        ({"core_filters": "16"}, "model.core_filters", "a list"),
        ({"pool_layers": [3]}, "model.pool_layers", "layers 1..2"),
        ({"batch_norm": "yes"}, "model.batch_norm", "true or false"),
        ({"input_normalisation": "whiten"}, "model.input_normalisation", "none, zscore"),
        ({"core_normalisation": "heeger"}, "model.core_normalisation", "none, divisive"),
        ({"gabor_bank": "yes"}, "model.gabor_bank", "true or false"),
        ({"stop_sets": "random"}, "model.stop_sets", "shared, rotating"),
        ({"refit": "yes"}, "model.refit", "true or false"),
        ({"output_knots": -1}, "model.output_knots", ">= 0"),
        ({"architecture": "linear", "output_knots": 4}, "model.output_knots", "linear"),
    ],
)
def test_bad_config_values_name_the_field(data, field, text):
    with pytest.raises(ConfigError, match=text) as caught:
        ModelConfig.from_dict(data, source="protocols/x.yaml")
    assert caught.value.field == field
    assert caught.value.path == "protocols/x.yaml"


def test_member_seeds_do_not_depend_on_ensemble_size():
    assert member_seeds(3, 5)[:2] == member_seeds(3, 2)
    assert len(set(member_seeds(3, 5))) == 5


@pytest.mark.parametrize(
    "options",
    [
        {"architecture": "kindel2017"},
        {"architecture": "factorised"},
        {"architecture": "factorised", "batch_norm": True, "pool_layers": (1,), "input_normalisation": "zscore"},
        {"architecture": "factorised", "batch_norm": True, "pool_layers": (1,), "output_knots": 4},
        {"architecture": "factorised", "batch_norm": True, "pool_layers": (1,), "core_normalisation": "divisive"},
        {"architecture": "factorised", "batch_norm": True, "pool_layers": (1,), "gabor_bank": True},
        {"architecture": "kindel2017", "gabor_bank": True},
        {"architecture": "factorised", "gabor_bank": True, "output_knots": 4, "contrast_gain": True},
    ],
)
def test_fused_ensemble_equals_independent_members(options):
    config = ModelConfig(core_filters=(4, 8), core_kernels=(5, 3), **options)
    members = []
    for seed in (1, 2, 3):
        member = build_network(config.replace(seed=seed), n_units=5)
        if member.unit_nonlinearity is not None:  # starts as the identity: make members differ
            with torch.no_grad():
                member.unit_nonlinearity.slopes.normal_(generator=torch.Generator().manual_seed(seed))
        if member.core.divisive is not None:  # members start alike: make them differ
            with torch.no_grad():
                member.core.divisive.mix.normal_(generator=torch.Generator().manual_seed(seed))
        if member.contrast_gain is not None:  # starts as the identity: make members differ
            with torch.no_grad():
                member.contrast_gain.gain.normal_(generator=torch.Generator().manual_seed(seed))
                member.contrast_gain.offset.normal_(generator=torch.Generator().manual_seed(seed + 10))
            member.set_feature_statistics(torch.rand(8, 33, 33) * seed)
        member.set_output_statistics(torch.rand(5) * 10, torch.rand(5) + 1)
        if config.batch_norm:  # distinct running statistics per member
            member.train()(torch.rand(8, 33, 33))
            member.set_input_statistics(0.5, 0.2)
        members.append(member.eval())
    fused = stack_members(members).eval()
    assert fused.n_members == 3
    images = torch.rand(7, 33, 33)
    with torch.no_grad():
        each = torch.stack([m.forward_members(images)[0] for m in members])
        assert torch.allclose(fused.forward_members(images), each, atol=1e-5)
        assert torch.allclose(fused(images), each.mean(0), atol=1e-5)
        for original, recovered in zip(members, unstack_members(fused)):
            assert torch.equal(original(images), recovered.eval()(images))


def test_fused_gradients_equal_independent_gradients():
    config = ModelConfig(core_filters=(4, 8), core_kernels=(5, 3), dense_units=16, dropout_keep=1.0)
    members = [build_network(config.replace(seed=s), n_units=3) for s in (4, 5)]
    fused = stack_members(members)
    images, target = torch.rand(6, 33, 33), torch.rand(6, 3)
    fused_loss = ((fused.forward_members(images) - target) ** 2).sum()
    fused_loss.backward()
    for index, member in enumerate(members):
        ((member.forward_members(images) - target) ** 2).sum().backward()
        for (name, p_member), (_, p_fused) in zip(member.named_parameters(), fused.named_parameters()):
            assert torch.allclose(p_fused.grad[index], p_member.grad[0], rtol=1e-4, atol=1e-6), name


def test_stacking_different_architectures_is_refused():
    a = build_network(ModelConfig(core_filters=(4,), core_kernels=(5,)), n_units=2)
    b = build_network(ModelConfig(core_filters=(8,), core_kernels=(5,)), n_units=2)
    with pytest.raises(ValueError, match="different architectures"):
        stack_members([a, b])


def test_factorised_readout_l1_penalty():
    plain = build_network(ModelConfig(architecture="factorised"), n_units=4)
    assert plain.regularizer() is None
    network = build_network(ModelConfig(architecture="factorised", l1_readout=0.5), n_units=4)
    readout = network.readout
    expected = 0.5 * (readout.mask.abs().sum() + readout.feature_weight.abs().sum()) / 4
    assert torch.allclose(network.regularizer(), expected)
    assert tuple(readout.mask.shape) == (1, 4, 9) and tuple(readout.feature_weight.shape) == (1, 4, 32)


def test_unit_nonlinearity_starts_as_the_identity_and_can_bend():
    config = ModelConfig(architecture="factorised", pool_layers=(1,), seed=3)
    plain = build_network(config, n_units=4).eval()
    bent = build_network(config.replace(output_knots=5), n_units=4).eval()
    images = torch.rand(6, 33, 33)
    with torch.no_grad():
        assert torch.equal(plain(images), bent(images))
        z = torch.tensor([[[-2.0, 0.0, 2.0, 4.0]]])  # (member, batch, unit)
        nonlinearity = bent.unit_nonlinearity
        nonlinearity.slopes.fill_(1.0)  # every hinge adds slope 1: 1 + (hinges below z)
        hinges = torch.linspace(-1.0, 3.0, 5)
        expected = z + torch.stack([torch.relu(z - t) for t in hinges]).sum(0)
        assert torch.allclose(nonlinearity(z), expected)
        assert nonlinearity(z)[0, 0, 3] == pytest.approx(4.0 + 5 + 4 + 3 + 2 + 1)


def test_identity_and_flat_output_tails_after_the_last_hinge():
    config = ModelConfig(architecture="factorised", pool_layers=(1,), output_knots=3)
    learned = build_network(config, n_units=1).unit_nonlinearity
    identity = build_network(config.replace(output_tail="identity"), n_units=1).unit_nonlinearity
    with torch.no_grad():
        for nonlinearity in (learned, identity):
            nonlinearity.slopes.fill_(1.0)  # hinges at -1, 1, 3
        z = torch.tensor([[[-2.0, 0.0, 2.0, 3.0, 5.0]]])
        assert torch.equal(learned(z)[..., :4], identity(z)[..., :4])  # the same up to the last hinge
        assert learned(z)[0, 0, 4] == pytest.approx(5 + 6 + 4 + 2)  # slope 4 goes on
        assert identity(z)[0, 0, 4] == pytest.approx(5 + 4 + 2)  # slope 1 beyond 3
    flat = build_network(config.replace(output_tail="flat"), n_units=1).unit_nonlinearity
    with torch.no_grad():
        flat.slopes.fill_(1.0)
        z = torch.tensor([[[-2.0, 0.0, 2.0, 3.0, 5.0, 50.0]]])
        assert torch.equal(flat(z)[..., :4], identity(z[..., :4]))
        assert torch.equal(flat(z)[..., 4:], flat(z)[..., 3:4].expand(1, 1, 2))  # no higher than at the hinge
    # saved models from before the option have no such field: they keep the learned tail
    old = {key: value for key, value in config.to_dict().items() if key != "output_tail"}
    assert ModelConfig.from_dict(old).output_tail == "learned"
