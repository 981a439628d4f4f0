# The baseline twin of ./cac_upernet_swin-t_512x512_160k_ade20k.py:
# the same network, data and schedule with mmseg's plain 1x1-conv classifier instead of
# the context-aware one (the model whose mmseg number stands beside CAC's in docs/models.md).
_base_ = "./cac_upernet_swin-t_512x512_160k_ade20k.py"
model = dict(name="cac_upernet_swin-t_ade20k-plain")
