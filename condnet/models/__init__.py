"""CondNet and CAC segmentation models: backbones, heads, losses and inference.

Example::

    model = build_model("condnet_r50-d8_ade20k")        # see list_models()
    losses = model.forward_train(img, label)             # losses["loss"].backward()
    logits = model(img)                                  # (B, K, H, W)
    probs = model.eval().predict(img, output="probs")    # released test setting
    model = load_released("condnet_r50.pth")             # released mmseg checkpoint (CondNet, CAC)
    twin = conditional_twin(build_model("condnet_r50-d8_ade20k-plain"))  # warm start
"""

from .backbones import BACKBONES, build_backbone
from .cac_loss import CACLoss
from .heads import ASPPHead, FCNHead, SepASPPHead, UPerHead
from .inference import ADE20K_TTA_SCALES, aug_inference, slide_inference, whole_inference
from .inference_config import InferenceConfig, check_inference_fields, resolve_inference
from .losses import CondNetLoss
from .released import convert_released, infer_model_name, load_released, read_released
from .segmentor import Segmentor
from .twin import (
    WARM_START_TOLERANCE,
    check_warm_start,
    conditional_twin,
    conditional_twin_state_dict,
    twin_name,
)
from .zoo import MODEL_CONFIGS, PLAIN_SUFFIX, ModelConfig, build_model, get_config, list_models

__all__ = [
    "ADE20K_TTA_SCALES",
    "BACKBONES",
    "MODEL_CONFIGS",
    "PLAIN_SUFFIX",
    "WARM_START_TOLERANCE",
    "ASPPHead",
    "CACLoss",
    "CondNetLoss",
    "FCNHead",
    "InferenceConfig",
    "ModelConfig",
    "SepASPPHead",
    "Segmentor",
    "UPerHead",
    "aug_inference",
    "build_backbone",
    "build_model",
    "check_inference_fields",
    "check_warm_start",
    "conditional_twin",
    "conditional_twin_state_dict",
    "convert_released",
    "get_config",
    "infer_model_name",
    "list_models",
    "load_released",
    "resolve_inference",
    "read_released",
    "slide_inference",
    "twin_name",
    "whole_inference",
]
