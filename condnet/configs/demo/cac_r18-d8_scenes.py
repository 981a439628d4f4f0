# The demo's CAC arm: condnet_r18-d8_scenes.py with CAC's context-aware classifier
# instead of CondNet's (same network, data and schedule; CAC's losses: main, static,
# oracle and distillation, each weight 1, plus the auxiliary head's 0.4).
_base_ = "condnet_r18-d8_scenes.py"
model = dict(classifier="cac")
