# CAC: DeepLabV3+ with the context-aware classifier on ResNet-50-V1c (output stride 8),
# ADE20K, 512x512 crops, 160k iterations: mIoU 46.29 single scale reported by the CAC
# authors (mmseg's plain DeepLabV3+ R50-D8: 43.95), not measured here.
# Released setting (CAC's configs/deeplabv3plus/deeplabv3plus_r50-d8_512x512_160k_ade20k_cac.py
# on mmseg's deeplabv3plus_r50-d8_512x512_160k_ade20k.py): 4 GPUs x 4 images = batch 16,
# SGD lr 0.01 with poly decay; a checkpoint and an evaluation every 8000 iterations.
# With fewer GPUs raise data.samples_per_gpu or use runner.accumulate_steps to keep the batch.
_base_ = [
    "../_base_/datasets/ade20k.py",
    "../_base_/default_runtime.py",
    "../_base_/schedules/schedule_160k.py",
]
# pretrained_backbone=True: timm's ImageNet weights; a checkpoint path loads others
# (e.g. mmseg's open-mmlab ResNet-V1c, as CAC used; see docs/models.md, Backbones).
model = dict(name="cac_r50-d8_ade20k", pretrained_backbone=True)
checkpoint = dict(interval=8000)
evaluation = dict(interval=8000, metric="mIoU")
