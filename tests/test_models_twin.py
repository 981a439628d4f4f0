"""condnet.models.conditional_twin: a trained ``-plain`` zoo model becomes its
CondNet twin, warm-started, predicting exactly what the plain model predicts."""

import pytest
import torch

from condnet.models import (
    build_model,
    check_warm_start,
    conditional_twin,
    conditional_twin_state_dict,
    list_models,
    twin_name,
)
from condnet.nn import LAYOUTS, ConditionalClassifier

SMALL = dict(num_classes=7, channels=32, c1_channels=8, aux_channels=16)
SWIN = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=4)


def trained_plain(name="condnet_r50-d8_ade20k-plain", **overrides):
    torch.manual_seed(0)
    model = build_model(name, **{**SMALL, **overrides})
    with torch.no_grad():  # a "trained" classifier: non-zero bias, larger weights
        model.decode_head.classifier.conv_seg.weight.normal_(std=0.5)
        model.decode_head.classifier.conv_seg.bias.normal_()
    return model.double().eval()


def image():
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).double()


def test_twin_name():
    for name in list_models():
        if name.endswith("-plain"):
            assert twin_name(name) + "-plain" == name and twin_name(name) in list_models()
    with pytest.raises(ValueError, match="ending in '-plain'"):
        twin_name("condnet_r50-d8_ade20k")
    with pytest.raises(ValueError, match="unknown model 'resnet-plain'"):
        twin_name("resnet-plain")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_state_dict_loads_strictly_and_predicts_the_plain_logits(layout):
    plain = trained_plain()
    state = conditional_twin_state_dict(plain.state_dict(), layout=layout)
    twin = build_model(twin_name("condnet_r50-d8_ade20k-plain"), layout=layout, **SMALL)
    twin.load_state_dict(state, strict=True)
    twin.double().eval()
    with torch.no_grad():
        want, got = plain(image()), twin(image())
    assert (want - got).abs().max() <= 1e-12 * want.abs().max()


def test_twin_of_a_upernet_model_keeps_dtype_and_mode():
    plain = trained_plain("condnet_upernet_swin-b_ade20k-plain", backbone_kwargs=SWIN)
    twin = conditional_twin(plain)
    assert isinstance(twin.decode_head.classifier, ConditionalClassifier)
    assert not twin.training and twin.config.classifier == "conditional"
    assert twin.decode_head.classifier.guidance_project.weight.dtype == torch.float64
    with torch.no_grad():
        want, got = plain(image()), twin(image())
    assert (want - got).abs().max() <= 1e-12 * want.abs().max()
    # Fine-tuning starts with the guidance loss of a trained classifier.
    twin.float().train()
    losses = twin.forward_train(image().float().repeat(2, 1, 1, 1), torch.zeros(2, 32, 32).long())
    assert {"loss_seg", "loss_guidance", "loss_aux"} <= set(losses)
    losses["loss"].backward()


def test_errors():
    plain = trained_plain()
    conditional = conditional_twin_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match="already holds a conditional classifier"):
        conditional_twin_state_dict(conditional)
    with pytest.raises(ValueError, match="under its 'state_dict' key"):
        conditional_twin_state_dict({"state_dict": plain.state_dict()})
    with pytest.raises(TypeError, match="plain_state must be a state dict"):
        conditional_twin_state_dict([1])
    with pytest.raises(ValueError, match="layout must be one of"):
        conditional_twin_state_dict(plain.state_dict(), layout="grouped")
    with pytest.raises(ValueError, match="expected 'plain'"):
        conditional_twin(build_model("condnet_r50-d8_ade20k", **SMALL))
    with pytest.raises(TypeError, match="Segmentor made by build_model"):
        conditional_twin(torch.nn.Conv2d(1, 1, 1))


def test_check_warm_start_passes_the_twin_and_catches_a_broken_one():
    plain = trained_plain().float()
    twin = conditional_twin(plain)
    assert check_warm_start(plain, twin, (32, 32)) < 1e-9
    # The models are checked on float64 copies and left as they were.
    assert plain.decode_head.classifier.conv_seg.weight.dtype == torch.float32
    with torch.no_grad():
        twin.decode_head.classifier.guidance_project.bias.add_(1.0)  # guidance moves nothing
        twin.decode_head.classifier.filter_project.bias[-1:].add_(0.5)  # a class's bias moves
    with pytest.raises(ValueError, match="logits differ from the plain model's by 0.5"):
        check_warm_start(plain, twin, (32, 32))
