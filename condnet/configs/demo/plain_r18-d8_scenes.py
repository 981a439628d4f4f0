# The demo's baseline arm: condnet_r18-d8_scenes.py with mmseg's plain 1x1-conv classifier
# instead of the conditional one (same network, data and schedule).
_base_ = "condnet_r18-d8_scenes.py"
model = dict(classifier="plain")
