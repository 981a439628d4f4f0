"""InferenceConfig, the one test-time settings object, and resolve_inference, the one
rule that lays settings from several places on top of each other."""

import pytest
import torch

from condnet.models import InferenceConfig, ModelConfig, build_model, resolve_inference


def test_fields_are_checked_and_normalised():
    cfg = InferenceConfig("slide", crop_size=32, stride=[24, 16], scales=[1, 1.5], flip=True)
    assert (cfg.crop_size, cfg.stride, cfg.scales) == ((32, 32), (24, 16), (1.0, 1.5))
    for kwargs, match in [
        (dict(mode="tiles"), "mode must be one of"),
        (dict(mode="slide"), r"mode='slide' needs crop_size and stride; got crop_size=None"),
        (dict(mode="slide", crop_size=8, stride=(4, 9)), "stride must not exceed crop_size"),
        (dict(crop_size=(0, 5)), r"crop_size must be a positive int or a pair \(h, w\)"),
        (dict(scales=()), "scales must be a non-empty sequence"),
        (dict(flip=1), "flip must be True or False"),
    ]:
        with pytest.raises(ValueError, match=match):
            InferenceConfig(**kwargs)


def test_layers_win_field_by_field():
    base = InferenceConfig("slide", crop_size=32, stride=24)
    # None (or a missing field) keeps the value below; later layers win.
    assert resolve_inference(base, {"mode": None, "crop_size": None}) == base
    got = resolve_inference(base, {"crop_size": 48, "stride": None}, {"flip": True})
    assert got == InferenceConfig("slide", (48, 48), (24, 24), flip=True)
    got = resolve_inference(base, {"stride": 16}, {"stride": 8, "scales": (0.5, 1.0)})
    assert (got.stride, got.scales) == ((8, 8), (0.5, 1.0))
    # A whole-image mode has no window, whichever layer gave one.
    whole = resolve_inference(base, {"mode": "whole"})
    assert whole == InferenceConfig("whole")
    # slide from a higher layer takes the window from below, or fails naming what is missing.
    assert resolve_inference(base, {"mode": "whole"}, {"mode": "slide"}) == base
    with pytest.raises(ValueError, match="mode='slide' needs crop_size and stride"):
        resolve_inference(InferenceConfig(), {"mode": "slide", "crop_size": 32})
    with pytest.raises(ValueError, match="unknown inference setting 'window'"):
        resolve_inference(base, {"window": 3})
    with pytest.raises(TypeError, match="base must be an InferenceConfig"):
        resolve_inference({"mode": "whole"})


def test_model_config_checks_its_test_setting_by_the_same_rules():
    with pytest.raises(ValueError, match="test_mode='slide' needs test_crop_size and test_stride"):
        ModelConfig("resnet18_v1c", "aspp", 3, test_mode="slide", test_crop_size=32)
    with pytest.raises(ValueError, match="test_stride must not exceed test_crop_size"):
        ModelConfig("resnet18_v1c", "aspp", 3, test_mode="slide", test_crop_size=8, test_stride=9)
    config = ModelConfig(
        "resnet18_v1c", "aspp", 3, test_mode="slide", test_crop_size=[8, 6], test_stride=4
    )
    assert config.test_cfg == InferenceConfig("slide", (8, 6), (4, 4))


def test_predict_falls_back_field_by_field():
    # The released r101 ADE20K setting: slide, 512 windows every 342 pixels.
    with torch.device("meta"):
        model = build_model("condnet_r101-d8_ade20k")
    seen = []
    model.eval()
    model.forward = lambda img: (
        seen.append(tuple(img.shape[-2:])) or torch.zeros(img.shape[0], 150, *img.shape[-2:])
    )
    img = torch.zeros(1, 3, 600, 800)
    model.predict(img, mode="slide", crop_size=(600, 400))  # the stride comes from test_cfg
    assert seen == [(600, 400)] * 3  # columns at 0, 342 and 400 (the last one shifted back)
    seen.clear()
    model.predict(img, InferenceConfig(), scales=(0.5,))  # another base, a field on top
    assert seen == [(300, 400)]
