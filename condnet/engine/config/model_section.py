"""The config's ``model`` section: a registered model (``name``) or none, the
:class:`~condnet.models.ModelConfig` fields that change it, and the backbone weights.

The fields are ModelConfig's own: it holds their defaults and checks, so a model
setting is added there, once. The section builds the ModelConfig once, when the
config is loaded, and everything after reads ``cfg.model.config``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from condnet.models import ModelConfig, get_config, list_models

from . import checks
from .checks import ConfigError
from .section import Section, check_keys, copied

MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))
_REQUIRED = ("backbone", "head", "num_classes")


def _model_error(err: Exception) -> ConfigError:
    """ModelConfig's error, its field named by its dotted key where the message starts
    with one ("head must be ..." -> "model.head must be ...")."""
    message = str(err)
    if message.split(" ", 1)[0].split("=", 1)[0] in MODEL_FIELDS:
        return ConfigError(f"model.{message}")
    return ConfigError(f"model: {message}")


@dataclass(frozen=True)
class ModelSection(Section):
    """``model``: ``name`` (a :func:`~condnet.models.list_models` name, or None to give
    ``backbone``, ``head`` and ``num_classes``), ``pretrained_backbone`` (False, True for
    timm's ImageNet weights, or a checkpoint path) and, in ``overrides``, the ModelConfig
    fields to change (in a config file they sit next to ``name``).

    ``config`` is the resulting :class:`~condnet.models.ModelConfig`; ``backbone_kwargs``
    add to the registered model's (e.g. Swin's ``drop_path_rate``).
    """

    KEY = "model"

    name: str | None = None
    pretrained_backbone: bool | str = False
    overrides: Mapping = field(default_factory=dict)
    config: ModelConfig = field(init=False, repr=False, compare=False)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return ("name", "pretrained_backbone", *MODEL_FIELDS)

    @classmethod
    def from_dict(cls, values: Mapping, where: str = "the config") -> ModelSection:
        check_keys(values, cls.keys(), where, cls.KEY)
        rest = {k: v for k, v in values.items() if k not in ("name", "pretrained_backbone")}
        return cls(values.get("name"), values.get("pretrained_backbone", False), rest)

    def to_dict(self) -> dict:
        tree = {"name": self.name, "pretrained_backbone": self.pretrained_backbone}
        return tree | {k: copied(v) for k, v in self.overrides.items()}

    def __post_init__(self) -> None:
        names = list_models()
        if self.name is not None and (not isinstance(self.name, str) or self.name not in names):
            raise checks.fail("model.name", "None or one of " + ", ".join(names), self.name)
        weights = self.pretrained_backbone
        if not (isinstance(weights, bool) or (isinstance(weights, str) and weights)):
            raise checks.fail(
                "model.pretrained_backbone", "False, True or a checkpoint path", weights
            )
        given = checks.mapping("model", self.overrides)
        check_keys(given, MODEL_FIELDS, "the model section", self.KEY)
        missing = [f"model.{k}" for k in _REQUIRED if k not in given]
        if self.name is None and missing:
            raise ConfigError(
                "model.name is None, so model.backbone, model.head and model.num_classes are "
                f"required; missing: {', '.join(missing)}"
            )
        self._set("overrides", given)
        self._set("config", self._model_config())

    def _model_config(self) -> ModelConfig:
        overrides = dict(self.overrides)
        if "backbone_kwargs" in overrides:
            overrides["backbone_kwargs"] = checks.mapping(
                "model.backbone_kwargs", overrides["backbone_kwargs"]
            )
        try:
            if self.name is None:
                return ModelConfig(**overrides)
            base = get_config(self.name)
            if "backbone_kwargs" in overrides:
                overrides["backbone_kwargs"] = {
                    **base.backbone_kwargs,
                    **overrides["backbone_kwargs"],
                }
            return dataclasses.replace(base, **overrides)
        except (ValueError, TypeError) as err:
            raise _model_error(err) from err
