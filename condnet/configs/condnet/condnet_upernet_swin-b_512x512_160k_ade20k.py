# CondNet: UPerNet with the conditional classifier on Swin-B (window 12, stochastic depth
# 0.3), ADE20K, 512x512 crops, 160k iterations, with mmseg's Swin recipe: AdamW at 6e-5,
# weight decay 0.01 except for norms, biases and the position tables, 1500 iterations of
# linear warm-up, then linear (power 1) decay to 0. 8 GPUs x 2 images = batch 16.
_base_ = [
    "../_base_/datasets/ade20k.py",
    "../_base_/default_runtime.py",
    "../_base_/schedules/schedule_160k.py",
]
# pretrained_backbone=True: timm's ImageNet weights; a checkpoint path loads others
# (e.g. the official swin_base_patch4_window12_384.pth; see docs/models.md, Backbones).
model = dict(name="condnet_upernet_swin-b_ade20k", pretrained_backbone=True)
data = dict(samples_per_gpu=2)
optimizer = dict(
    _delete_=True,
    type="AdamW",
    lr=6e-5,
    betas=(0.9, 0.999),
    weight_decay=0.01,
    no_decay_norm=True,
    no_decay_keys=("absolute_pos_embed", "relative_position_bias_table"),
)
lr_config = dict(
    _delete_=True,
    policy="poly",
    power=1.0,
    min_lr=0.0,
    warmup="linear",
    warmup_iters=1500,
    warmup_ratio=1e-6,
)
