"""BN-Inception: state-dict layout of the released ImageNet checkpoint, forward pooling, and `load_released`."""

from __future__ import annotations

import re

import pytest
import torch

from prism.backbones.bninception import BNInception, load_released

# Every convolution of bn_inception-52deb4733.pth as "name in out kernel", transcribed from the layer list of
# Cadene's pretrainedmodels/models/bninception.py. Each one has name.{weight, bias} and a BatchNorm name_bn.
_CONVS = """
conv1_7x7_s2 3 64 7
conv2_3x3_reduce 64 64 1
conv2_3x3 64 192 3
inception_3a_1x1 192 64 1
inception_3a_3x3_reduce 192 64 1
inception_3a_3x3 64 64 3
inception_3a_double_3x3_reduce 192 64 1
inception_3a_double_3x3_1 64 96 3
inception_3a_double_3x3_2 96 96 3
inception_3a_pool_proj 192 32 1
inception_3b_1x1 256 64 1
inception_3b_3x3_reduce 256 64 1
inception_3b_3x3 64 96 3
inception_3b_double_3x3_reduce 256 64 1
inception_3b_double_3x3_1 64 96 3
inception_3b_double_3x3_2 96 96 3
inception_3b_pool_proj 256 64 1
inception_3c_3x3_reduce 320 128 1
inception_3c_3x3 128 160 3
inception_3c_double_3x3_reduce 320 64 1
inception_3c_double_3x3_1 64 96 3
inception_3c_double_3x3_2 96 96 3
inception_4a_1x1 576 224 1
inception_4a_3x3_reduce 576 64 1
inception_4a_3x3 64 96 3
inception_4a_double_3x3_reduce 576 96 1
inception_4a_double_3x3_1 96 128 3
inception_4a_double_3x3_2 128 128 3
inception_4a_pool_proj 576 128 1
inception_4b_1x1 576 192 1
inception_4b_3x3_reduce 576 96 1
inception_4b_3x3 96 128 3
inception_4b_double_3x3_reduce 576 96 1
inception_4b_double_3x3_1 96 128 3
inception_4b_double_3x3_2 128 128 3
inception_4b_pool_proj 576 128 1
inception_4c_1x1 576 160 1
inception_4c_3x3_reduce 576 128 1
inception_4c_3x3 128 160 3
inception_4c_double_3x3_reduce 576 128 1
inception_4c_double_3x3_1 128 160 3
inception_4c_double_3x3_2 160 160 3
inception_4c_pool_proj 576 128 1
inception_4d_1x1 608 96 1
inception_4d_3x3_reduce 608 128 1
inception_4d_3x3 128 192 3
inception_4d_double_3x3_reduce 608 160 1
inception_4d_double_3x3_1 160 192 3
inception_4d_double_3x3_2 192 192 3
inception_4d_pool_proj 608 128 1
inception_4e_3x3_reduce 608 128 1
inception_4e_3x3 128 192 3
inception_4e_double_3x3_reduce 608 192 1
inception_4e_double_3x3_1 192 256 3
inception_4e_double_3x3_2 256 256 3
inception_5a_1x1 1056 352 1
inception_5a_3x3_reduce 1056 192 1
inception_5a_3x3 192 320 3
inception_5a_double_3x3_reduce 1056 160 1
inception_5a_double_3x3_1 160 224 3
inception_5a_double_3x3_2 224 224 3
inception_5a_pool_proj 1056 128 1
inception_5b_1x1 1024 352 1
inception_5b_3x3_reduce 1024 192 1
inception_5b_3x3 192 320 3
inception_5b_double_3x3_reduce 1024 192 1
inception_5b_double_3x3_1 192 224 3
inception_5b_double_3x3_2 224 224 3
inception_5b_pool_proj 1024 128 1
"""

# Parameters of Cadene's BNInception(num_classes=1000): this trunk plus last_linear (1024 * 1000 + 1000).
_TRUNK_PARAMS = 10_270_240
_CADENE_PARAMS = 11_295_240


def _released_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the released file, classifier included, without `num_batches_tracked` (it has none)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for row in _CONVS.split("\n"):
        if not row:
            continue
        name, c_in, c_out, k = row.split()
        c_in, c_out, k = int(c_in), int(c_out), int(k)
        shapes[f"{name}.weight"] = (c_out, c_in, k, k)
        shapes[f"{name}.bias"] = (c_out,)
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}_bn.{suffix}"] = (c_out,)
    shapes["last_linear.weight"] = (1000, 1024)
    shapes["last_linear.bias"] = (1000,)
    return shapes


def _released_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {key: torch.randn(shape, generator=g) for key, shape in _released_shapes().items()}
    for key in state:
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 0.5
    return state


@pytest.fixture(scope="module")
def model() -> BNInception:
    torch.manual_seed(0)
    return BNInception().eval()


def test_state_dict_matches_released_layout(model: BNInception) -> None:
    expected = {k: v for k, v in _released_shapes().items() if not k.startswith("last_linear.")}
    state = model.state_dict()
    counters = {k for k in state if k.endswith(".num_batches_tracked")}
    assert len(_CONVS.split()) // 4 == 69
    assert len(expected) == 69 * 6 == 414
    assert counters == {f"{k[: -len('.running_mean')]}.num_batches_tracked" for k in expected if "running_mean" in k}
    assert {k: tuple(v.shape) for k, v in state.items() if k not in counters} == expected


def test_spot_checks_and_parameter_count(model: BNInception) -> None:
    state = model.state_dict()
    assert state["conv1_7x7_s2.weight"].shape == (64, 3, 7, 7)
    assert state["conv1_7x7_s2_bn.running_mean"].shape == (64,)
    assert state["inception_3a_1x1.weight"].shape == (64, 192, 1, 1)
    assert state["inception_3c_3x3.weight"].shape == (160, 128, 3, 3)
    assert state["inception_5b_double_3x3_2.weight"].shape == (224, 224, 3, 3)
    assert state["inception_5b_pool_proj.weight"].shape == (128, 1024, 1, 1)
    assert state["inception_5b_pool_proj_bn.running_var"].shape == (128,)
    assert "inception_3c_1x1.weight" not in state and "inception_4e_pool_proj.weight" not in state
    assert not any(k.startswith("last_linear") for k in state)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == _TRUNK_PARAMS
    assert n_params + 1024 * 1000 + 1000 == _CADENE_PARAMS
    table = sum(torch.Size(s).numel() for k, s in _released_shapes().items() if "running" not in k)
    assert table == _CADENE_PARAMS
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert (module.eps, module.momentum, module.affine) == (1e-5, 0.1, True)


@pytest.mark.parametrize(("pooling", "side"), [("max", 224), ("avg", 96)])
def test_forward_pools_last_block(pooling: str, side: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The output is the global max / mean of the trunk's last block (5b), recorded as the forward calls it."""
    torch.manual_seed(1)
    net = BNInception(pooling).eval()
    maps: list[torch.Tensor] = []
    trunk = net.features
    monkeypatch.setattr(net, "features", lambda x: maps.append(trunk(x)) or maps[-1])
    with torch.no_grad():
        out = net(torch.randn(2, 3, side, side))
    (fmap,) = maps
    assert net.out_dim == 1024
    assert fmap.shape == (2, 1024, side // 32, side // 32)
    assert (fmap >= 0).all()
    assert out.shape == (2, 1024) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    maxed, averaged = fmap.amax(dim=(2, 3)), fmap.mean(dim=(2, 3))
    torch.testing.assert_close(out, maxed if pooling == "max" else averaged)
    assert not torch.allclose(maxed, averaged)


def test_pooling_layers_match_released_definition(model: BNInception) -> None:
    """Pool types and settings of the released definition (they hold no weights, so the state dict cannot tell)."""
    stride2 = ["pool1_3x3_s2", "pool2_3x3_s2", "inception_3c_pool", "inception_4e_pool"]
    for name in stride2:
        pool = model.get_submodule(name)
        assert isinstance(pool, torch.nn.MaxPool2d), name
        assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 0, True), name
    for block in ["3a", "3b", "4a", "4b", "4c", "4d", "5a"]:
        pool = model.get_submodule(f"inception_{block}_pool")
        assert isinstance(pool, torch.nn.AvgPool2d), block
        assert (pool.kernel_size, pool.stride, pool.padding) == (3, 1, 1), block
        assert pool.ceil_mode and pool.count_include_pad, block
    last = model.inception_5b_pool
    assert isinstance(last, torch.nn.MaxPool2d)
    assert (last.kernel_size, last.stride, last.padding, last.ceil_mode) == (3, 1, 1, True)


def test_rejects_unknown_pooling() -> None:
    with pytest.raises(ValueError, match="pooling"):
        BNInception("gem")


def test_load_released_copies_every_tensor() -> None:
    net = BNInception().eval()
    state = _released_state()
    assert not any("num_batches_tracked" in k for k in state)
    load_released(net, state)
    loaded = net.state_dict()
    for key, tensor in state.items():
        if key.startswith("last_linear."):
            assert key not in loaded
        else:
            assert torch.equal(loaded[key], tensor), key
    assert all(int(v) == 0 for k, v in loaded.items() if k.endswith("num_batches_tracked"))


def test_load_released_accepts_row_shaped_batchnorm_tensors() -> None:
    net = BNInception()
    state = _released_state(seed=2)
    rows = {k: v.unsqueeze(0) if "_bn." in k else v for k, v in state.items()}
    load_released(net, rows)
    assert torch.equal(net.inception_4d_3x3_bn.running_var, state["inception_4d_3x3_bn.running_var"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("inception_4b_3x3_bn.running_mean"), "missing key 'inception_4b_3x3_bn.running_mean'"),
        (lambda s: s.__setitem__("fc.weight", torch.zeros(3)), "unexpected key 'fc.weight'"),
        (lambda s: s.__setitem__("conv2_3x3.weight", torch.zeros(192, 64, 1, 1)), "key 'conv2_3x3.weight' has shape"),
    ],
)
def test_load_released_rejects_unfit_dict(edit, message: str) -> None:
    net = BNInception()
    before = net.conv1_7x7_s2.weight.clone()
    state = _released_state(seed=1)
    edit(state)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        load_released(net, state)
    assert "\n" not in str(info.value)
    assert torch.equal(net.conv1_7x7_s2.weight, before)
