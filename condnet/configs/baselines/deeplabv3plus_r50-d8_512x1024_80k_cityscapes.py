# The baseline twin of ../condnet/condnet_r50-d8_512x1024_80k_cityscapes.py:
# the same network, data and schedule with mmseg's plain 1x1-conv classifier (DeepLabV3+)
# instead of the conditional one.
_base_ = "../condnet/condnet_r50-d8_512x1024_80k_cityscapes.py"
model = dict(name="condnet_r50-d8_cityscapes-plain")
