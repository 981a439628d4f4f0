# CondNet: DeepLabV3+ with the conditional classifier on ResNet-50-V1c (output stride 8),
# Pascal Context 59, 480x480 crops, 80k iterations (the ResNet-101 recipe; no result was
# released for it); tested with 480x480 sliding windows, stride 320.
# Released setting: 4 GPUs x 4 images = batch 16 (data.samples_per_gpu is per GPU).
# SGD at lr 1e-3 (x10 for the decode and auxiliary heads), weight decay 1e-4.
_base_ = [
    "../_base_/datasets/pascal_context_59.py",
    "../_base_/default_runtime.py",
    "../_base_/schedules/schedule_80k.py",
]
# pretrained_backbone=True: timm's ImageNet weights; a checkpoint path loads others
# (e.g. mmseg's open-mmlab ResNet-V1c, as the paper used; see docs/models.md, Backbones).
model = dict(name="condnet_r50-d8_pascal_context_59", pretrained_backbone=True)
optimizer = dict(lr=1e-3, weight_decay=1e-4, head_lr_mult=10.0)
