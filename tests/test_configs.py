"""The config files shipped in condnet/configs: each loads, validates and builds its model
(on the meta device), they carry the released settings, and each is found by its name."""

import dataclasses
import os
import re
from pathlib import Path

import pytest
import torch

from condnet.engine.builders import build_model
from condnet.engine.config import (
    CONFIG_DIR,
    DATASET_CLASSES,
    close_config_names,
    find_config,
    format_config,
    load_config,
    packaged_configs,
    with_options,
)
from condnet.models import PLAIN_SUFFIX, list_models

CONFIGS = Path(__file__).resolve().parents[1] / "condnet" / "configs"
ADE = "condnet_r50-d8_512x512_160k_ade20k"
FILES = sorted(p for p in CONFIGS.rglob("*.py") if "_base_" not in p.parts)
IDS = [str(p.relative_to(CONFIGS)) for p in FILES]
NO_WEIGHTS = ["model.pretrained_backbone=False"]

# Released config file -> model name (the mmseg-style file names of the CondNet release).
RELEASED = {
    "condnet_r50-d8_512x512_160k_ade20k.py": "condnet_r50-d8_ade20k",
    "condnet_r101-d8_512x512_160k_ade20k.py": "condnet_r101-d8_ade20k",
    "condnet_r50-d8_480x480_80k_pascal_context_59.py": "condnet_r50-d8_pascal_context_59",
    "condnet_r101-d8_480x480_80k_pascal_context_59.py": "condnet_r101-d8_pascal_context_59",
    "condnet_upernet_swin-b_512x512_160k_ade20k.py": "condnet_upernet_swin-b_ade20k",
    "condnet_r50-d8_512x1024_80k_cityscapes.py": "condnet_r50-d8_cityscapes",
    "condnet_r101-d8_512x1024_80k_cityscapes.py": "condnet_r101-d8_cityscapes",
}
RELEASED_SWIN = "condnet_upernet_swin-b_512x512_160k_ade20k.py"
# CAC's released recipes (condnet/configs/cac) -> model name; each has a plain twin there.
CAC = {
    "cac_r50-d8_512x512_160k_ade20k.py": "cac_r50-d8_ade20k",
    "cac_upernet_swin-t_512x512_160k_ade20k.py": "cac_upernet_swin-t_ade20k",
    "cac_upernet_swin-b_512x512_160k_ade20k.py": "cac_upernet_swin-b_ade20k",
}
# Baseline file -> its CondNet twin.
TWINS = {
    "upernet_swin-b_512x512_160k_ade20k.py": "condnet_upernet_swin-b_512x512_160k_ade20k.py",
    **{"deeplabv3plus" + name[len("condnet") :]: name for name in RELEASED if "swin" not in name},
}


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_config_loads_builds_and_round_trips(path, tmp_path):
    cfg = load_config(path, NO_WEIGHTS)
    config = cfg.model.config
    dataset = cfg.data.dataset_class
    # The model fits the data: classes; the dataset and training crop its name gives.
    assert config.num_classes == len(dataset.CLASSES)
    if path.parent.name != "demo":
        crop = tuple(int(n) for n in re.search(r"_(\d+)x(\d+)_", path.name).groups())
        assert path.stem.endswith(cfg.data.dataset) and cfg.data.crop_size == crop
    with torch.device("meta"):
        model = build_model(cfg)
    assert model.num_classes == config.num_classes
    again = tmp_path / "again.py"
    again.write_text(format_config(cfg))
    assert load_config(again) == cfg


def test_every_released_model_has_a_config_and_a_baseline():
    assert sorted(p.name for p in (CONFIGS / "condnet").glob("*.py")) == sorted(RELEASED)
    assert sorted(p.name for p in (CONFIGS / "baselines").glob("*.py")) == sorted(TWINS)
    names = set()
    for file, name in RELEASED.items():
        cfg = load_config(CONFIGS / "condnet" / file)
        assert cfg.model.to_dict() == {"name": name, "pretrained_backbone": True}
        names |= {name, name + PLAIN_SUFFIX}
    for file, name in CAC.items():
        cfg = load_config(CONFIGS / "cac" / file)
        assert cfg.model.to_dict() == {"name": name, "pretrained_backbone": True}
        plain = load_config(CONFIGS / "cac" / file.replace("cac_", "plain_", 1))
        assert with_options(plain, {"model.name": name}) == cfg
        assert plain.model.name == name + PLAIN_SUFFIX
        names |= {name, name + PLAIN_SUFFIX}
    assert sorted(p.name for p in (CONFIGS / "cac").glob("*.py")) == sorted(
        [*CAC, *(f.replace("cac_", "plain_", 1) for f in CAC)]
    )
    assert names == set(list_models())


@pytest.mark.parametrize("baseline", sorted(TWINS))
def test_baselines_differ_only_by_the_classifier(baseline):
    plain = load_config(CONFIGS / "baselines" / baseline)
    condnet = load_config(CONFIGS / "condnet" / TWINS[baseline])
    assert plain.model.name == condnet.model.name + PLAIN_SUFFIX
    assert with_options(plain, {"model.name": condnet.model.name}) == condnet


def test_demo_twins_differ_only_by_the_classifier():
    condnet = load_config(CONFIGS / "demo" / "condnet_r18-d8_scenes.py")
    assert "classifier" not in condnet.model.overrides  # CondNet's own classifier
    for classifier in ("plain", "cac"):
        twin = load_config(CONFIGS / "demo" / f"{classifier}_r18-d8_scenes.py")
        overrides = dict(twin.model.overrides)
        assert overrides.pop("classifier") == classifier
        assert overrides == condnet.model.overrides
        assert dataclasses.replace(twin, model=condnet.model) == condnet
    assert condnet.model.config.backbone == "resnet18_v1c" and not condnet.model.pretrained_backbone
    assert condnet.runner.max_iters == 250 and condnet.data.workers_per_gpu == 0
    assert condnet.data.crop_size == (64, 64) and condnet.data.samples_per_gpu == 16
    assert (condnet.optimizer.type, condnet.optimizer.lr) == ("AdamW", 0.002)
    assert condnet.data.root == "data/scenes/cue"


@pytest.mark.parametrize("iters", [20, 40, 80, 160])
def test_schedules(iters, tmp_path):
    child = tmp_path / "c.py"
    base = CONFIGS / "_base_" / "schedules" / f"schedule_{iters}k.py"
    child.write_text(f"_base_ = {str(base)!r}\nmodel = dict(name='condnet_r50-d8_ade20k')\n")
    cfg = load_config(child)
    assert cfg.runner.max_iters == iters * 1000
    assert cfg.checkpoint.interval == cfg.evaluation.interval == iters * 100
    assert (cfg.optimizer.type, cfg.optimizer.lr, cfg.optimizer.momentum) == ("SGD", 0.01, 0.9)
    assert cfg.optimizer.weight_decay == 5e-4
    assert (cfg.lr_config.policy, cfg.lr_config.power, cfg.lr_config.min_lr) == ("poly", 0.9, 1e-4)


@pytest.mark.parametrize("name", ["ade20k", "pascal_context_59", "cityscapes", "scenes"])
def test_dataset_bases_use_the_default_roots(name, tmp_path):
    child = tmp_path / "c.py"
    base = CONFIGS / "_base_" / "datasets" / f"{name}.py"
    child.write_text(f"_base_ = {str(base)!r}\nmodel = dict(name='condnet_r50-d8_ade20k')\n")
    cfg = load_config(child)
    assert cfg.data.dataset == name and cfg.data.root == DATASET_CLASSES[name].DEFAULT_ROOT


def test_released_settings():
    def load(name):
        return load_config(CONFIGS / "condnet" / name)

    ade = load("condnet_r101-d8_512x512_160k_ade20k.py")
    assert ade.runner.max_iters == 160000 and ade.data.samples_per_gpu == 4
    assert ade.data.img_scale == (2048, 512) and ade.data.crop_size == (512, 512)
    context = load("condnet_r101-d8_480x480_80k_pascal_context_59.py")
    assert context.runner.max_iters == 80000 and context.data.img_scale == (520, 520)
    assert context.data.crop_size == (480, 480) and context.data.ratio_range == (0.5, 2.0)
    opt = context.optimizer
    assert (opt.type, opt.lr, opt.weight_decay, opt.head_lr_mult) == ("SGD", 1e-3, 1e-4, 10.0)
    city = load("condnet_r50-d8_512x1024_80k_cityscapes.py")
    assert city.data.crop_size == (512, 1024) and city.data.samples_per_gpu == 2
    assert city.data.img_scale == city.data.test_scale == (2048, 1024)
    swin = load("condnet_upernet_swin-b_512x512_160k_ade20k.py")
    assert swin.data.samples_per_gpu == 2 and swin.runner.max_iters == 160000
    assert swin.optimizer.to_dict() == dict(
        type="AdamW",
        lr=6e-5,
        momentum=0.9,  # the default; AdamW ignores it
        betas=(0.9, 0.999),
        weight_decay=0.01,
        head_lr_mult=1.0,
        no_decay_norm=True,
        no_decay_keys=("absolute_pos_embed", "relative_position_bias_table"),
        grad_clip=None,
    )
    assert swin.lr_config.to_dict() == dict(
        policy="poly", power=1.0, min_lr=0.0, warmup="linear", warmup_iters=1500, warmup_ratio=1e-6
    )


def test_cac_released_settings():
    """The recipes of CAC's released configs: batch 16 as 4 GPUs x 4 images
    (DeepLabV3+ R50, UPerNet Swin-T) or 8 x 2 (Swin-B); 160k iterations of
    512x512 crops; SGD 0.01 (R50) or mmseg's AdamW Swin recipe; an evaluation
    every 8000 iterations."""

    def load(name):
        return load_config(CONFIGS / "cac" / name)

    r50 = load("cac_r50-d8_512x512_160k_ade20k.py")
    swin_t = load("cac_upernet_swin-t_512x512_160k_ade20k.py")
    swin_b = load("cac_upernet_swin-b_512x512_160k_ade20k.py")
    condnet_swin = load_config(CONFIGS / "condnet" / RELEASED_SWIN)
    for cfg, per_gpu in ((r50, 4), (swin_t, 4), (swin_b, 2)):
        assert cfg.data.samples_per_gpu == per_gpu and cfg.runner.max_iters == 160000
        assert cfg.data.crop_size == (512, 512) and cfg.data.img_scale == (2048, 512)
        assert cfg.evaluation.interval == 8000
    opt = r50.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == ("SGD", 0.01, 0.9, 5e-4)
    assert (r50.lr_config.policy, r50.lr_config.power) == ("poly", 0.9)
    assert r50.checkpoint.interval == 8000
    for swin in (swin_t, swin_b):  # mmseg's Swin recipe, as the CondNet Swin-B config has it
        assert swin.optimizer == condnet_swin.optimizer
        assert swin.lr_config == condnet_swin.lr_config
    assert swin_t.model.config.backbone == "swin_tiny_w7"
    assert swin_b.model.config.backbone == "swin_base_w12"


# -- by name -----------------------------------------------------------------------------


def test_every_config_file_is_packaged_under_its_name():
    assert CONFIG_DIR == CONFIGS.resolve()
    packaged = packaged_configs()
    assert list(packaged) == sorted(p.stem for p in FILES)  # unique names, no _base_ file
    assert all(packaged[p.stem] == p.resolve() for p in FILES)


def test_a_name_stands_for_its_packaged_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anywhere: the lookup does not depend on the folder
    path = CONFIGS.resolve() / "condnet" / f"{ADE}.py"
    assert find_config(ADE) == find_config(f"{ADE}.py") == path
    assert load_config(ADE, NO_WEIGHTS) == load_config(path, NO_WEIGHTS)
    # A file wins over a name, as a path the user typed should.
    local = tmp_path / f"{ADE}.py"
    local.write_text("_base_ = " + repr(str(path)) + "\nrunner = dict(max_iters=7)\n")
    assert find_config(f"{ADE}.py") == Path(f"{ADE}.py")
    assert load_config(f"{ADE}.py").runner.max_iters == 7
    assert find_config(path) == path and find_config(str(path)) == path


@pytest.mark.parametrize(
    "text, close",
    [
        ("condnet_r50-d8_ade20k", ADE),  # the model's name, not the config's
        ("condnet_r50-d8_512x512_160k_ade2k", ADE),  # a typo
        ("r18-d8", "condnet_r18-d8_scenes"),  # a part of the name
    ],
)
def test_an_unknown_name_lists_close_matches(text, close):
    assert close in close_config_names(text)
    with pytest.raises(FileNotFoundError, match=f"named {text!r}; close matches: .*{close}"):
        find_config(text)
    with pytest.raises(FileNotFoundError, match="condnet-configs lists all"):
        load_config(text)


def test_unknown_names_and_missing_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"named 'qqqq' \(condnet-configs lists all \d+"):
        find_config("qqqq")
    # The old checkout path of a packaged config: not a file here, but its name works.
    old = os.path.join("configs", "condnet", f"{ADE}.py")
    with pytest.raises(FileNotFoundError, match=f"not found: .*; .* by its name alone: {ADE}$"):
        find_config(old)
    with pytest.raises(FileNotFoundError, match="config file not found: nowhere/x.py$"):
        find_config("nowhere/x.py")
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / ADE)  # a Path is always a path, never a name
    with pytest.raises(TypeError, match="config must be a file path or a config name"):
        find_config(3)
