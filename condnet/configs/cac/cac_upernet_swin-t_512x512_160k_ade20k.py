# CAC: UPerNet with the context-aware classifier on Swin-T (window 7, stochastic depth 0.3),
# ADE20K, 512x512 crops, 160k iterations: mIoU 46.91 single scale reported by the CAC
# authors (mmseg's plain UPerNet Swin-T: 44.41), not measured here.
# Released setting (CAC's configs/swin/
# upernet_swin_tiny_patch4_window7_512x512_160k_ade20k_pretrain_224x224_1K_bs4_cac.py):
# 4 GPUs x 4 images = batch 16 (mmseg's own Swin-T run: 8 x 2); mmseg's Swin recipe: AdamW
# at 6e-5, weight decay 0.01 except for norms and the position tables, 1500 iterations of
# linear warm-up, then linear (power 1) decay to 0; an evaluation every 8000 iterations.
_base_ = [
    "../_base_/datasets/ade20k.py",
    "../_base_/default_runtime.py",
    "../_base_/schedules/schedule_160k.py",
]
# pretrained_backbone=True: timm's ImageNet-1K weights of swin_tiny_patch4_window7_224; a
# checkpoint path loads others (e.g. the official swin_tiny_patch4_window7_224.pth, as CAC
# used; see docs/models.md, Backbones).
model = dict(name="cac_upernet_swin-t_ade20k", pretrained_backbone=True)
data = dict(samples_per_gpu=4)
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
evaluation = dict(interval=8000, metric="mIoU")
