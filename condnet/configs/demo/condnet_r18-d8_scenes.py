# The CPU demo: a small CondNet (DeepLabV3+ with the conditional classifier on
# ResNet-18-V1c, output stride 8, 128-channel head) trained from scratch on the generated
# scene set: 250 iterations of 16 crops of 64x64, about 2 minutes on 2 CPU cores,
# validating every 50 iterations (the learning curve). Its twins plain_r18-d8_scenes.py and
# cac_r18-d8_scenes.py differ only in the classifier. Make the set first (see
# ../_base_/datasets/scenes.py); tools/demo.py does.
# Tuned for learning fast from scratch (measured at seed 0, docs/demo.md): AdamW at
# lr 2e-3, small crops in large batches, little rescaling and no photometric distortion.
_base_ = ["../_base_/datasets/scenes.py", "../_base_/default_runtime.py"]
model = dict(
    name=None,
    backbone="resnet18_v1c",
    head="sep_aspp",
    num_classes=8,
    channels=128,
    aux_channels=64,
    # mmseg's (1, 12, 24, 36) is for 64x64 feature maps (512 crops); the 8x8 maps of
    # 64 crops get them scaled down.
    dilations=(1, 3, 6, 9),
    pretrained_backbone=False,  # timm has no ImageNet weights for resnet18_v1c
    # The released 0.2 leaves the guidance to the segmentation loss's gradient, which
    # reaches the guidance conv through the pooled features at 12-40x the Dice term's
    # and does not point to the labels: measured with the trainer's grad_guide log on
    # the demo's first scene set (docs/demo.md, What the guidance learns): at 0.2 the
    # guide stayed at chance from scratch; at 1.0 it learnt.
    guidance_weight=1.0,
)
data = dict(
    crop_size=(64, 64),
    ratio_range=(0.9, 1.1),
    photometric=False,
    samples_per_gpu=16,
    workers_per_gpu=0,
)
optimizer = dict(type="AdamW", lr=0.002, weight_decay=1e-4)
lr_config = dict(policy="poly", power=0.9, min_lr=0.0)
runner = dict(max_iters=250, log_interval=25)
checkpoint = dict(interval=50)
evaluation = dict(interval=50, metric="mIoU")
