"""The offline ImageNet EfficientNet-Lite0 (issue 21): the package's checkpoint maps onto timm's model key for key,
and the weights classify real photographs (scikit-learn's bundled sample images) as ImageNet classes."""

from __future__ import annotations

import pytest
import timm
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from timm.data import ImageNetInfo

from noisekit.backbones import trunk
from noisekit.backbones.efficientnet_lite0 import TIMM_NAME, checkpoint_path, key_map, load_imagenet


def test_the_key_map_covers_every_tensor_shape_for_shape() -> None:
    source = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
    model = timm.create_model(TIMM_NAME, pretrained=False)
    mapping = key_map(list(source), model)
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(source) == 296 and len(mapping) == 247 == len(target)
    assert set(mapping.values()) == set(target)  # no missing, no unexpected key
    assert all(source[k].shape == target[v].shape for k, v in mapping.items())
    # the rule-based names agree with the order of both state dicts, pair by pair
    ordered = [k for k in source if not k.endswith("num_batches_tracked")]
    assert [mapping[k] for k in ordered] == list(target)
    assert mapping["_blocks.0._project_conv.weight"] == "blocks.0.0.conv_pw.weight"
    assert mapping["_blocks.15._project_conv.weight"] == "blocks.6.0.conv_pwl.weight"
    assert mapping["_fc.weight"] == "classifier.weight"


@pytest.fixture(scope="module")
def top5() -> dict[str, list[str]]:
    model = load_imagenet(timm.create_model(TIMM_NAME, pretrained=False)).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    info, sample = ImageNetInfo(), load_sample_images()
    out = {}
    for name, array in zip(sample.filenames, sample.images, strict=True):
        with torch.no_grad():
            probs = model(transform(Image.fromarray(array)).unsqueeze(0)).softmax(1)[0]
        out[name.rsplit("/", 1)[-1]] = [info.index_to_description(i) for i in probs.topk(5).indices.tolist()]
    return out


def test_the_offline_weights_see_a_palace_and_a_daisy(top5: dict[str, list[str]]) -> None:
    assert "palace" in top5["china.jpg"]
    assert top5["flower.jpg"][0] == "daisy"


def test_the_trunk_is_headless_with_timms_normalisation() -> None:
    backbone = trunk("efficientnet_lite0", "imagenet")
    assert (backbone.dim, backbone.mean, backbone.std, backbone.input_size) == (1280, (0.5,) * 3, (0.5,) * 3, 224)
    with torch.no_grad():
        feats = backbone.module.eval()(torch.zeros(2, 3, 64, 64))
    assert feats.shape == (2, 1280)
    random = trunk("efficientnet_lite0", "random").module.state_dict()
    loaded = backbone.module.state_dict()
    assert not torch.equal(random["conv_stem.weight"], loaded["conv_stem.weight"])
