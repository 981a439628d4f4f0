"""The whole config: one section dataclass per part, and the run's paths.

:class:`Config` is what :func:`~condnet.engine.config.load_config` returns and what
the Trainer, the builders and the tools read (``cfg.optimizer.lr``,
``cfg.model.config.num_classes``). It is frozen: change it with
:func:`~condnet.engine.config.with_options`, which checks the result again.
"""

# No ``from __future__ import annotations``: the field types are read at run time to
# find the sections.

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import checks
from .model_section import ModelSection
from .section import Section, check_keys
from .sections import (
    CheckpointConfig,
    DataConfig,
    EvaluationConfig,
    LrConfig,
    OptimizerConfig,
    RunnerConfig,
)


@dataclass(frozen=True)
class Config:
    """A checked config: the sections, then the keys at the top level.

    ``work_dir`` (default ``work_dirs/<config name>``), ``load_from`` (weights to start
    from), ``resume_from`` (a checkpoint to continue) and ``auto_resume`` (continue from
    the newest intact checkpoint in the work dir) are what ``tools/train.py``'s flags
    of the same names set.
    """

    model: ModelSection
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_config: LrConfig = field(default_factory=LrConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    work_dir: str | None = None
    load_from: str | None = None
    resume_from: str | None = None
    auto_resume: bool = False

    def __post_init__(self) -> None:
        for name, section in self.sections().items():
            if not isinstance(getattr(self, name), section):
                got = type(getattr(self, name)).__name__
                raise TypeError(f"{name} must be a {section.__name__}; got {got}")
        for name in ("work_dir", "load_from", "resume_from"):
            value = checks.optional(checks.text, name, getattr(self, name))
            object.__setattr__(self, name, value)
        checks.boolean("auto_resume", self.auto_resume)

    @classmethod
    def sections(cls) -> dict[str, type[Section]]:
        """The section keys and their dataclasses."""
        return {
            f.name: f.type
            for f in dataclasses.fields(cls)
            if isinstance(f.type, type) and issubclass(f.type, Section)
        }

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The valid keys at the top level, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, tree: Mapping, where: str = "the config") -> "Config":
        """The config from a tree of plain values (absent keys take their defaults)."""
        if not isinstance(tree, Mapping):
            raise TypeError(f"config must be a mapping; got {type(tree).__name__}")
        tree = {k: checks.plain(v, str(k), where) for k, v in tree.items()}
        check_tree_keys(tree, where)
        values = {}
        for name, section in cls.sections().items():
            given = tree.get(name, {})
            if not isinstance(given, Mapping):
                raise checks.fail(name, "a dict", given)
            values[name] = section.from_dict(given, where)
        values.update((k, v) for k, v in tree.items() if k not in values)
        return cls(**values)

    def to_dict(self) -> dict:
        """The config as a tree of plain values (what a config file holds)."""
        sections = self.sections()
        return {
            f.name: getattr(self, f.name).to_dict() if f.name in sections else getattr(self, f.name)
            for f in dataclasses.fields(self)
        }


def valid_keys(dotted: str) -> tuple[str, ...] | None:
    """The valid keys of the dict at ``dotted`` ("" = the top level); None where any
    key goes (``data.dataset_kwargs``, ``model.backbone_kwargs``)."""
    if dotted == "":
        return Config.keys()
    section = Config.sections().get(dotted)
    return None if section is None else section.keys()


def check_tree_keys(tree: Mapping, where: str, prefix: str = "") -> None:
    """Raises :class:`~condnet.engine.config.checks.ConfigError` for the first unknown
    key anywhere in ``tree`` (a config file's, or an option's), naming ``where``."""
    valid = valid_keys(prefix)
    if valid is None:
        return
    given = {k: v for k, v in tree.items() if not (prefix and k == "_delete_")}
    check_keys(given, valid, where, prefix)
    for key, value in given.items():
        if isinstance(value, Mapping):
            check_tree_keys(value, where, f"{prefix}.{key}" if prefix else str(key))


def validate_config(tree: Mapping) -> Config:
    """``tree`` (a merged config file) checked, defaults filled in, as a :class:`Config`."""
    return Config.from_dict(tree)
