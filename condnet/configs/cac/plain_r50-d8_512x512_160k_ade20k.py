# The baseline twin of ./cac_r50-d8_512x512_160k_ade20k.py:
# the same network, data and schedule with mmseg's plain 1x1-conv classifier instead of
# the context-aware one (the model whose mmseg number stands beside CAC's in docs/models.md).
_base_ = "./cac_r50-d8_512x512_160k_ade20k.py"
model = dict(name="cac_r50-d8_ade20k-plain")
