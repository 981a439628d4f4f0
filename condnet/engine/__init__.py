"""Training and evaluation: config files, the training loop, checkpoints, metrics.

The command line tools (``tools/train.py``, ``tools/test.py``, ...) are thin
layers over this package::

    from condnet.engine import Trainer, evaluate, load_config
    cfg = load_config("condnet_r18-d8_scenes", ["runner.max_iters=20"])  # or a file path
    Trainer(cfg, "work_dirs/try").run()
"""

import importlib

# Loaded on first use, so that a tool's ``--help`` does not import the model stack.
_LAZY = {
    "Config": "condnet.engine.config",
    "ConfigError": "condnet.engine.config",
    "load_config": "condnet.engine.config",
    "format_config": "condnet.engine.config",
    "dump_config": "condnet.engine.config",
    "build_model": "condnet.engine.builders",
    "build_dataset": "condnet.engine.builders",
    "build_train_loader": "condnet.engine.builders",
    "CheckpointManager": "condnet.engine.checkpoint",
    "load_checkpoint": "condnet.checkpoint_files",
    "save_atomic": "condnet.checkpoint_files",
    "load_weights": "condnet.engine.weights",
    "build_optimizer": "condnet.engine.optim",
    "IterLRScheduler": "condnet.engine.lr_schedule",
    "ConfusionMatrix": "condnet.engine.metrics",
    "format_table": "condnet.engine.metrics",
    "evaluate": "condnet.engine.evaluate",
    "overlay": "condnet.engine.visualize",
    "guidance_grid": "condnet.engine.visualize",
    "Trainer": "condnet.engine.trainer",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
