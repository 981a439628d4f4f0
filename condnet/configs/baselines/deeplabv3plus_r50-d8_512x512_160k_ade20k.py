# The baseline twin of ../condnet/condnet_r50-d8_512x512_160k_ade20k.py:
# the same network, data and schedule with mmseg's plain 1x1-conv classifier (DeepLabV3+)
# instead of the conditional one.
_base_ = "../condnet/condnet_r50-d8_512x512_160k_ade20k.py"
model = dict(name="condnet_r50-d8_ade20k-plain")
