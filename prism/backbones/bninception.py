"""BN-Inception backbone: Inception v2 with batch normalisation (Ioffe & Szegedy, "Batch Normalization: Accelerating
Deep Network Training by Reducing Internal Covariate Shift", ICML 2015), without its classifier.

`BNInception` maps (n, 3, H, W) float images to (n, 1024) globally pooled features of the last inception block
(max or average pooling over the spatial map; no classifier, no normalisation). Every convolution (with bias) is
followed by a BatchNorm and a ReLU; each inception block concatenates a 1x1 branch, a 3x3 branch, a double 3x3
branch and a pooling branch, and the two stride-2 blocks (3c, 4e) drop the 1x1 branch and pass the max-pooled input
through unprojected.

Layer names and tensor shapes follow the widely used ImageNet checkpoint ``bn_inception-52deb4733.pth``, Cadene's
PyTorch conversion of the Caffe model (pretrained-models.pytorch, ``pretrainedmodels/models/bninception.py``):
``conv1_7x7_s2.weight``, ``conv1_7x7_s2_bn.running_mean``, ``inception_3a_1x1.weight``, ... That file's final
classifier ``last_linear.*`` has no counterpart here; `load_released` drops it. BatchNorm uses PyTorch's defaults
(eps 1e-5, momentum 0.1, affine), as the research-xbm backbone the PRISM authors import does (revisions of Cadene's
file differ on the momentum; it only matters while training).

Input convention. Cadene's settings for the checkpoint give input_space BGR, input_size [3, 224, 224], input_range
[0, 255], mean [104, 117, 128] and std [1, 1, 1]: the Caffe model sees BGR pixels in 0..255 with only the channel
mean subtracted. The PRISM authors' configuration (configs/CARSN/MemoryContrastiveLossPRISM.yaml) instead sets
INPUT.MODE RGB with PIXEL_MEAN [0.485, 0.456, 0.406] and PIXEL_STD [0.229, 0.224, 0.225], i.e. RGB images in [0, 1]
normalised with the ImageNet mean and std, and fine-tunes from the checkpoint that way. This module does no
preprocessing of its own; callers pick the convention.

Spatial sizes: the stride-2 blocks concatenate a padded stride-2 convolution with an unpadded ceil-mode max pool,
whose outputs agree only when the block's input side is even; sides that are multiples of 32 (224 included) work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from noisekit.backbones.weights import cached_state_dict, load_state_dict_file
from noisekit.errors import NoisekitError

# the commonly distributed ImageNet BN-Inception (Cadene's conversion of the Caffe model), which the PRISM authors
# load from ~/.torch/models (ret_benchmark/config/model_path.py)
BN_INCEPTION_URL = "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth"
AUTHORS_CACHE = Path("~/.torch/models").expanduser()

__all__ = ["BNInception", "load_released"]


@dataclass(frozen=True)
class _Block:
    """One inception block. A width of 0 means the branch is absent (`n1x1`) or unprojected (`pool_proj`)."""

    name: str
    c_in: int
    n1x1: int
    n3x3_reduce: int
    n3x3: int
    n_double_reduce: int
    n_double: int
    pool: str
    pool_proj: int
    stride: int = 1

    @property
    def c_out(self) -> int:
        pooled = self.pool_proj or self.c_in
        return self.n1x1 + self.n3x3 + self.n_double + pooled


_BLOCKS: tuple[_Block, ...] = (
    _Block("3a", 192, 64, 64, 64, 64, 96, "avg", 32),
    _Block("3b", 256, 64, 64, 96, 64, 96, "avg", 64),
    _Block("3c", 320, 0, 128, 160, 64, 96, "max", 0, stride=2),
    _Block("4a", 576, 224, 64, 96, 96, 128, "avg", 128),
    _Block("4b", 576, 192, 96, 128, 96, 128, "avg", 128),
    _Block("4c", 576, 160, 128, 160, 128, 160, "avg", 128),
    _Block("4d", 608, 96, 128, 192, 160, 192, "avg", 128),
    _Block("4e", 608, 0, 128, 192, 192, 256, "max", 0, stride=2),
    _Block("5a", 1056, 352, 192, 320, 160, 224, "avg", 128),
    _Block("5b", 1024, 352, 192, 320, 192, 224, "max", 128),
)

_POOLINGS = ("max", "avg")


def _block_pool(block: _Block) -> nn.Module:
    if block.stride == 2:
        return nn.MaxPool2d(3, stride=2, ceil_mode=True)
    if block.pool == "max":
        return nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
    return nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True, count_include_pad=True)


class BNInception(nn.Module):
    """BN-Inception trunk with global `pooling` ("max" or "avg"): (n, 3, H, W) images -> (n, 1024) features."""

    out_dim = 1024

    def __init__(self, pooling: str = "max") -> None:
        super().__init__()
        if pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {_POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self._add_unit("conv1_7x7_s2", 3, 64, kernel=7, stride=2)
        self.pool1_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._add_unit("conv2_3x3_reduce", 64, 64)
        self._add_unit("conv2_3x3", 64, 192, kernel=3)
        self.pool2_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        c_in = 192
        for block in _BLOCKS:
            if block.c_in != c_in:
                raise AssertionError(f"block {block.name} takes {block.c_in} channels, the previous gives {c_in}")
            self._add_block(block)
            c_in = block.c_out
        if c_in != self.out_dim:
            raise AssertionError(f"the last block gives {c_in} channels, not {self.out_dim}")

    def _add_unit(self, name: str, c_in: int, c_out: int, kernel: int = 1, stride: int = 1) -> None:
        """Registers convolution `name` and its BatchNorm `name`_bn (the ReLU after them has no state)."""
        self.add_module(name, nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2))
        self.add_module(f"{name}_bn", nn.BatchNorm2d(c_out))

    def _add_block(self, b: _Block) -> None:
        p = f"inception_{b.name}"
        if b.n1x1:
            self._add_unit(f"{p}_1x1", b.c_in, b.n1x1)
        self._add_unit(f"{p}_3x3_reduce", b.c_in, b.n3x3_reduce)
        self._add_unit(f"{p}_3x3", b.n3x3_reduce, b.n3x3, kernel=3, stride=b.stride)
        self._add_unit(f"{p}_double_3x3_reduce", b.c_in, b.n_double_reduce)
        self._add_unit(f"{p}_double_3x3_1", b.n_double_reduce, b.n_double, kernel=3)
        self._add_unit(f"{p}_double_3x3_2", b.n_double, b.n_double, kernel=3, stride=b.stride)
        self.add_module(f"{p}_pool", _block_pool(b))
        if b.pool_proj:
            self._add_unit(f"{p}_pool_proj", b.c_in, b.pool_proj)

    def _unit(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.get_submodule(f"{name}_bn")(self.get_submodule(name)(x)), inplace=True)

    def _block(self, b: _Block, x: torch.Tensor) -> torch.Tensor:
        p = f"inception_{b.name}"
        outs = [self._unit(f"{p}_1x1", x)] if b.n1x1 else []
        outs.append(self._unit(f"{p}_3x3", self._unit(f"{p}_3x3_reduce", x)))
        double = self._unit(f"{p}_double_3x3_1", self._unit(f"{p}_double_3x3_reduce", x))
        outs.append(self._unit(f"{p}_double_3x3_2", double))
        pooled = self.get_submodule(f"{p}_pool")(x)
        outs.append(self._unit(f"{p}_pool_proj", pooled) if b.pool_proj else pooled)
        return torch.cat(outs, dim=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) -> (n, 1024, H/32, W/32) output of the last inception block (5b), before global pooling."""
        x = self.pool1_3x3_s2(self._unit("conv1_7x7_s2", x))
        x = self.pool2_3x3_s2(self._unit("conv2_3x3", self._unit("conv2_3x3_reduce", x)))
        for block in _BLOCKS:
            x = self._block(block, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.features(x)
        return fmap.amax(dim=(2, 3)) if self.pooling == "max" else fmap.mean(dim=(2, 3))


def _fit_error(model: BNInception, state: dict[str, torch.Tensor]) -> str | None:
    own = model.state_dict()
    for key in own:
        if key not in state and not key.endswith("num_batches_tracked"):
            return f"missing key {key!r}"
    for key, tensor in state.items():
        if key not in own:
            return f"unexpected key {key!r}"
        if tensor.shape != own[key].shape:
            return f"key {key!r} has shape {tuple(tensor.shape)}, expected {tuple(own[key].shape)}"
    return None


def load_released(model: BNInception, state: dict[str, torch.Tensor]) -> None:
    """Loads the released ImageNet weights (bn_inception-52deb4733.pth as `torch.load` returns it) into `model`.

    Drops the classifier `last_linear.*`, then loads strictly. BatchNorm tensors stored as (1, C) rows, as in some
    copies of this Caffe conversion, are flattened to (C,). Missing `num_batches_tracked` counters (the file has none)
    are filled in by BatchNorm itself. Raises ValueError naming the first missing, unexpected or misshapen key.
    """
    own = model.state_dict()
    kept: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("last_linear."):
            continue
        if key in own and own[key].dim() == 1 and tensor.dim() == 2 and tensor.shape[0] == 1:
            tensor = tensor.reshape(-1)
        kept[key] = tensor
    error = _fit_error(model, kept)
    if error is not None:
        raise ValueError(f"not a released BN-Inception state dict: {error}")
    model.load_state_dict(kept, strict=True)


def bninception_trunk(weights: str, pooling: str) -> BNInception:
    """BN-Inception with ``weights``: imagenet (the torch cache or the authors' ~/.torch/models), random or a FILE."""
    model = BNInception(pooling)
    if weights == "random":
        return model
    if weights == "imagenet":
        state = cached_state_dict(
            BN_INCEPTION_URL,
            what="ImageNet BN-Inception",
            hash_prefix=None,  # no sha256 prefix could be verified offline; load_released checks the keys
            also=(AUTHORS_CACHE / BN_INCEPTION_URL.rsplit("/", 1)[1],),
        )
    else:
        state = load_state_dict_file(Path(weights))
    try:
        load_released(model, state)
    except ValueError as exc:
        raise NoisekitError(f"--weights {weights}: {exc}") from None
    return model
