# CondNet: DeepLabV3+ with the conditional classifier on ResNet-101-V1c (output stride 8),
# Cityscapes, 512x1024 crops, 80k iterations.
# CondNet released no Cityscapes configuration: this is mmseg's DeepLabV3+ 512x1024
# Cityscapes recipe (4 GPUs x 2 images = batch 8, SGD lr 0.01, 80k iterations) with the
# conditional classifier; tested on whole 2048x1024 images.
_base_ = [
    "../_base_/datasets/cityscapes.py",
    "../_base_/default_runtime.py",
    "../_base_/schedules/schedule_80k.py",
]
# pretrained_backbone=True: timm's ImageNet weights; a checkpoint path loads others
# (e.g. mmseg's open-mmlab ResNet-V1c, as the paper used; see docs/models.md, Backbones).
model = dict(name="condnet_r101-d8_cityscapes", pretrained_backbone=True)
