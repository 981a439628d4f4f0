# CAC: UPerNet with the context-aware classifier on Swin-B (window 12, stochastic depth 0.3)
# pretrained on ImageNet-22K at 384x384, ADE20K, 512x512 crops, 160k iterations: mIoU 52.46
# single scale reported by the CAC authors (mmseg's plain UPerNet Swin-B IN-22K 384: 50.76),
# not measured here.
# Released setting (CAC's configs/swin/
# upernet_swin_base_patch4_window12_512x512_160k_ade20k_pretrain_384x384_22K_cac.py, on
# mmseg's Swin-T/Swin-B ADE20K configs): 8 GPUs x 2 images = batch 16; the Swin recipe of
# the Swin-T config (AdamW 6e-5, linear warm-up and decay); an evaluation every 8000
# iterations.
_base_ = "./cac_upernet_swin-t_512x512_160k_ade20k.py"
# pretrained_backbone=True: timm's weights of swin_base_patch4_window12_384 (ImageNet-22K,
# fine-tuned on 1K); for CAC's exact start pass mmseg's
# swin_base_patch4_window12_384_22k.pth (see docs/models.md, Backbones).
model = dict(name="cac_upernet_swin-b_ade20k", pretrained_backbone=True)
data = dict(samples_per_gpu=2)
