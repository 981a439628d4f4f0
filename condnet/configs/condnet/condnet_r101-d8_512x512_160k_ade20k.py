# CondNet: DeepLabV3+ with the conditional classifier on ResNet-101-V1c (output stride 8),
# ADE20K, 512x512 crops, 160k iterations (mIoU 45.64 / 47.12 ms+flip reported by the paper);
# tested with 512x512 sliding windows, stride 342 (the model's test setting).
# Released setting: 4 GPUs x 4 images = batch 16 (data.samples_per_gpu is per GPU; with
# fewer GPUs raise it or use runner.accumulate_steps to keep the batch).
_base_ = [
    "../_base_/datasets/ade20k.py",
    "../_base_/default_runtime.py",
    "../_base_/schedules/schedule_160k.py",
]
# pretrained_backbone=True: timm's ImageNet weights; a checkpoint path loads others
# (e.g. mmseg's open-mmlab ResNet-V1c, as the paper used; see docs/models.md, Backbones).
model = dict(name="condnet_r101-d8_ade20k", pretrained_backbone=True)
