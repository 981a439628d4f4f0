"""Training and evaluation: config files, the training loop, checkpoints, metrics.

The command line tools (``tools/train.py``, ``tools/test.py``, ...) are thin
layers over this package::

    from condnet.engine import Trainer, evaluate, load_config
    cfg = load_config("configs/demo/condnet_r18-d8_scenes.py", ["runner.max_iters=20"])
    Trainer(cfg, "work_dirs/try").run()
"""

import importlib

# Loaded on first use, so that ``import condnet.engine.config`` stays light.
_LAZY = {
    "Config": "config",
    "ConfigError": "config",
    "load_config": "config",
    "format_config": "config",
    "dump_config": "config",
    "build_model": "builders",
    "build_dataset": "builders",
    "build_train_loader": "builders",
    "CheckpointManager": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_weights": "checkpoint",
    "save_atomic": "checkpoint",
    "build_optimizer": "optim",
    "IterLRScheduler": "lr_schedule",
    "ConfusionMatrix": "metrics",
    "format_table": "metrics",
    "evaluate": "evaluate",
    "overlay": "visualize",
    "guidance_grid": "visualize",
    "Trainer": "trainer",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
