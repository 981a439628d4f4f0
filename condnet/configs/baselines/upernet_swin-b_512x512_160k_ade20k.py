# The baseline twin of ../condnet/condnet_upernet_swin-b_512x512_160k_ade20k.py:
# the same network, data and schedule with mmseg's plain 1x1-conv classifier (UPerNet)
# instead of the conditional one.
_base_ = "../condnet/condnet_upernet_swin-b_512x512_160k_ade20k.py"
model = dict(name="condnet_upernet_swin-b_ade20k-plain")
