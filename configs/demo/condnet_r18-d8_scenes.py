# The CPU demo: a small CondNet (DeepLabV3+ with the conditional classifier on
# ResNet-18-V1c, output stride 8, 128-channel head) trained from scratch on the generated
# scene set for 150 iterations of 8 images; checkpoint and evaluation every 50.
# Make the set first (see ../_base_/datasets/scenes.py).
_base_ = ["../_base_/datasets/scenes.py", "../_base_/default_runtime.py"]
model = dict(
    name=None,
    backbone="resnet18_v1c",
    head="sep_aspp",
    num_classes=8,
    dataset="scenes",
    crop_size=(128, 128),
    channels=128,
    aux_channels=64,
    # mmseg's (1, 12, 24, 36) is for 64x64 feature maps (512 crops); the 16x16 maps of
    # 128 crops get the same dilations scaled by 1/4.
    dilations=(1, 3, 6, 9),
    pretrained_backbone=False,  # timm has no ImageNet weights for resnet18_v1c
)
data = dict(samples_per_gpu=8, workers_per_gpu=0)
optimizer = dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=5e-4)
lr_config = dict(policy="poly", power=0.9, min_lr=1e-4)
runner = dict(max_iters=150, log_interval=10)
checkpoint = dict(interval=50)
evaluation = dict(interval=50, metric="mIoU")
