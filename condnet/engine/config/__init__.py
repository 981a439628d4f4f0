"""The config of a run: Python config files (mmseg style) read into one frozen
dataclass per section.

    cfg = load_config("condnet_r50-d8_512x512_160k_ade20k",   # a packaged name, or a path
                      ["runner.max_iters=1000", "data.samples_per_gpu=2"])
    cfg.optimizer.lr, cfg.model.name, cfg.model.config.num_classes
    cfg = with_options(cfg, {"model.pretrained_backbone": False})   # a checked copy
    dump_config(cfg, "work_dirs/x/config.py")   # loads back to an equal Config

Every key, its default and its check is a field of its section's dataclass
(:mod:`~condnet.engine.config.sections`; the ``model`` fields are
:class:`condnet.models.ModelConfig`'s): adding a key is adding a field there.
"""

from .checks import ConfigError
from .files import (
    CONFIG_DIR,
    close_config_names,
    find_config,
    load_config,
    merge,
    packaged_configs,
    parse_options,
    with_options,
)
from .model_section import ModelSection
from .run_config import Config, validate_config
from .sections import (
    DATASET_CLASSES,
    DATASETS,
    CheckpointConfig,
    DataConfig,
    EvaluationConfig,
    LrConfig,
    OptimizerConfig,
    RunnerConfig,
)
from .writing import dump_config, format_config

__all__ = [
    "CONFIG_DIR",
    "DATASETS",
    "DATASET_CLASSES",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvaluationConfig",
    "LrConfig",
    "ModelSection",
    "OptimizerConfig",
    "RunnerConfig",
    "close_config_names",
    "dump_config",
    "find_config",
    "format_config",
    "load_config",
    "merge",
    "packaged_configs",
    "parse_options",
    "validate_config",
    "with_options",
]
