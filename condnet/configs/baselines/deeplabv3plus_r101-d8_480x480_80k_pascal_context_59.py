# The baseline twin of ../condnet/condnet_r101-d8_480x480_80k_pascal_context_59.py:
# the same network, data and schedule with mmseg's plain 1x1-conv classifier (DeepLabV3+)
# instead of the conditional one.
_base_ = "../condnet/condnet_r101-d8_480x480_80k_pascal_context_59.py"
model = dict(name="condnet_r101-d8_pascal_context_59-plain")
