"""Config files (condnet.engine.config): the typed sections, files, options and
writing, and the builders on the generated scene set."""

import copy
import dataclasses
import math
import pickle
import textwrap
from pathlib import Path

import pytest
import torch

import condnet.models.zoo
from condnet.data import SCENE_CLASSES, SCENE_PALETTE
from condnet.demo import write_scenes
from condnet.engine.builders import (
    build_dataset,
    build_model,
    build_train_loader,
    check_num_classes,
    dataset_meta,
)
from condnet.engine.config import (
    Config,
    ConfigError,
    OptimizerConfig,
    RunnerConfig,
    dump_config,
    format_config,
    load_config,
    parse_options,
    validate_config,
    with_options,
)
from condnet.models import Segmentor

DEMO = Path(__file__).resolve().parents[1] / "condnet/configs/demo/condnet_r18-d8_scenes.py"
NAMED = 'model = dict(name="condnet_r50-d8_ade20k")\n'


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# -- Config ------------------------------------------------------------------------------


def test_config_sections_are_frozen_typed_and_copy(tmp_path):
    cfg = load_config(write(tmp_path, "c.py", NAMED), ["runner.max_iters=7"])
    assert cfg.runner.max_iters == 7 and isinstance(cfg.runner, RunnerConfig)
    assert cfg.model.config.num_classes == 150  # the ModelConfig, built once at load
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.runner.max_iters = 3  # changes go through the checks: with_options
    changed = with_options(cfg, {"runner.max_iters": 3, "model.num_classes": 21})
    assert changed.runner.max_iters == 3 and changed.model.config.num_classes == 21
    assert cfg.runner.max_iters == 7  # the original is untouched
    with pytest.raises(ConfigError, match="runner.max_iters must be an int >= 1"):
        with_options(cfg, ["runner.max_iters=0"])
    with pytest.raises(AttributeError, match="missing"):
        _ = cfg.missing
    assert type(cfg.to_dict()["model"]) is dict
    for clone in (copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg))):
        assert clone == cfg and clone.model.config == cfg.model.config
        assert clone.runner is not cfg.runner


def test_defaults_follow_the_schema(tmp_path):
    cfg = load_config(write(tmp_path, "c.py", NAMED))
    assert cfg.model.to_dict() == {"name": "condnet_r50-d8_ade20k", "pretrained_backbone": False}
    assert cfg.data.img_scale == (2048, 512) and cfg.data.samples_per_gpu == 4
    assert cfg.optimizer.type == "SGD" and cfg.optimizer.weight_decay == 5e-4
    assert cfg.lr_config.to_dict() == dict(
        policy="poly", power=0.9, min_lr=1e-4, warmup=None, warmup_iters=0, warmup_ratio=1e-6
    )
    assert cfg.runner.max_iters == 80000 and cfg.runner.amp is None
    assert cfg.checkpoint.to_dict() == {"interval": 8000, "max_keep": None}
    assert cfg.evaluation.aug_scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    assert cfg.work_dir is None and cfg.auto_resume is False
    assert list(cfg.to_dict()) == [
        "model",
        "data",
        "optimizer",
        "lr_config",
        "runner",
        "checkpoint",
        "evaluation",
        "work_dir",
        "load_from",
        "resume_from",
        "auto_resume",
    ]


# -- _base_ and _delete_ -----------------------------------------------------------------


def test_base_merging_recursive_and_ordered(tmp_path):
    write(tmp_path, "base/a.py", "data = dict(samples_per_gpu=2, crop_size=(64, 64))\n")
    write(tmp_path, "base/b.py", '_base_ = "a.py"\ndata = dict(samples_per_gpu=3)\n')
    write(tmp_path, "base/sched.py", "runner = dict(max_iters=100, seed=5)\n")
    child = write(
        tmp_path,
        "configs/child.py",
        f"""\
        _base_ = ["../base/b.py", "../base/sched.py"]
        {NAMED}
        runner = dict(seed=7)
        """,
    )
    cfg = load_config(child)
    assert cfg.data.samples_per_gpu == 3  # b overrides a
    assert cfg.data.crop_size == (64, 64)  # a, kept by the key-by-key merge
    assert cfg.runner.max_iters == 100 and cfg.runner.seed == 7
    # Later bases override earlier ones.
    write(tmp_path, "base/c.py", "data = dict(samples_per_gpu=9)\n")
    other = write(tmp_path, "configs/o.py", f'_base_ = ["../base/b.py", "../base/c.py"]\n{NAMED}')
    assert load_config(other).data.samples_per_gpu == 9


def test_delete_replaces_the_inherited_dict(tmp_path):
    write(tmp_path, "base.py", "optimizer = dict(type='SGD', lr=0.5, momentum=0.5)\n")
    keep = write(tmp_path, "keep.py", f"_base_ = 'base.py'\n{NAMED}optimizer = dict(lr=0.1)\n")
    assert load_config(keep).optimizer.momentum == 0.5
    replace = write(
        tmp_path,
        "replace.py",
        f"_base_ = 'base.py'\n{NAMED}optimizer = dict(_delete_=True, type='AdamW', lr=1e-4)\n",
    )
    cfg = load_config(replace)
    assert cfg.optimizer.type == "AdamW" and cfg.optimizer.lr == 1e-4
    assert cfg.optimizer.momentum == 0.9  # the schema default, not the base's 0.5
    assert "_delete_" not in cfg.optimizer.to_dict()


def test_cycles_are_reported(tmp_path):
    write(tmp_path, "a.py", '_base_ = "b.py"\n')
    write(tmp_path, "b.py", '_base_ = ["a.py"]\n')
    with pytest.raises(ConfigError, match=r"circular _base_ inheritance: .*a\.py -> .*b\.py"):
        load_config(tmp_path / "a.py")
    with pytest.raises(ConfigError, match="circular"):
        load_config(write(tmp_path, "self.py", '_base_ = "self.py"\n'))
    # The same base reached twice (a diamond) is not a cycle.
    write(tmp_path, "root.py", "runner = dict(seed=1)\n")
    write(tmp_path, "l.py", '_base_ = "root.py"\n')
    write(tmp_path, "r.py", '_base_ = "root.py"\n')
    assert load_config(write(tmp_path, "d.py", f"_base_ = ['l.py', 'r.py']\n{NAMED}")).runner.seed


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load_config(tmp_path / "nope.py")
    child = write(tmp_path, "child.py", '_base_ = "gone.py"\n')
    with pytest.raises(FileNotFoundError, match=r"gone\.py \(_base_ of .*child\.py\)"):
        load_config(child)
    bad = write(tmp_path, "bad.py", "model = dict(\nname='x'\n")
    with pytest.raises(ConfigError, match=r"syntax error in config file .*bad\.py, line"):
        load_config(bad)
    raises = write(tmp_path, "raises.py", "model = dict(name=undefined)\n")
    with pytest.raises(ConfigError, match=r"raises\.py failed: NameError"):
        load_config(raises)
    odd = write(tmp_path, "odd.py", f"{NAMED}work_dir = object()\n")
    with pytest.raises(ConfigError, match=r"work_dir in .*odd\.py must be None, a bool"):
        load_config(odd)
    with pytest.raises(ConfigError, match="_base_ in .* must be a path"):
        load_config(write(tmp_path, "b.py", "_base_ = 3\n"))
    with pytest.raises(ConfigError, match=r"\*\.py"):
        load_config(write(tmp_path, "c.yaml", "model: {}\n"))


def test_private_names_modules_and_functions_are_not_config(tmp_path):
    path = write(
        tmp_path,
        "c.py",
        f"""\
        import math
        from pathlib import Path
        {NAMED}
        _iters = 3 * 100

        def helper():
            return 1

        runner = dict(max_iters=_iters)
        work_dir = Path("/tmp") / "x"
        """,
    )
    cfg = load_config(path)
    assert cfg.runner.max_iters == 300 and cfg.work_dir == "/tmp/x"  # paths become strings


# -- unknown keys and invalid values ------------------------------------------------------


def test_unknown_keys_in_a_file_list_the_valid_ones(tmp_path):
    path = write(tmp_path, "c.py", f"{NAMED}data = dict(sample_per_gpu=2)\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert (
        "'data.sample_per_gpu'" in msg and "c.py" in msg and "did you mean 'samples_per_gpu'" in msg
    )
    assert "crop_size, cat_max_ratio" in msg  # the valid keys of `data`
    top = write(tmp_path, "t.py", f"{NAMED}optimiser = dict(lr=1)\n")
    with pytest.raises(ConfigError, match="'optimiser'.*valid keys at the top level: model, data"):
        load_config(top)
    model = write(tmp_path, "m.py", "model = dict(name=None, aux_chanels=3)\n")
    with pytest.raises(ConfigError, match="'model.aux_chanels'.*pretrained_backbone, backbone"):
        load_config(model)


def test_unknown_keys_in_options_name_the_option(tmp_path):
    path = write(tmp_path, "c.py", NAMED)
    with pytest.raises(
        ConfigError, match=r"'runner.max_iter' in --cfg-options 'runner.max_iter=5'"
    ):
        load_config(path, ["runner.max_iter=5"])
    with pytest.raises(ConfigError, match="valid keys in 'runner': max_iters, accumulate_steps"):
        load_config(path, ["runner.max_iter=5"])
    with pytest.raises(ConfigError, match="'nothing.at'.*at the top level"):
        load_config(path, {"nothing.at": 1})


@pytest.mark.parametrize(
    "option, match",
    [
        ("optimizer.type=Adam", r"optimizer.type must be one of 'SGD', 'AdamW'; got 'Adam'"),
        ("lr_config.policy=step", "lr_config.policy must be one of 'poly', 'constant'"),
        ("runner.amp=int8", "runner.amp must be one of None, 'bf16', 'fp16'"),
        ("runner.max_iters=0", r"runner.max_iters must be an int >= 1; got 0"),
        ("runner.accumulate_steps=0", "runner.accumulate_steps must be an int >= 1"),
        ("checkpoint.interval=-1", "checkpoint.interval must be an int >= 1"),
        ("data.samples_per_gpu=1.5", "data.samples_per_gpu must be an int >= 1; got 1.5"),
        ("data.dataset=imagenet", "data.dataset must be one of 'ade20k'"),
        ("data.crop_size=(0,4)", r"data.crop_size must be a pair"),
        ("data.crop_size=512", r"data.crop_size must be a pair"),
        ("data.ratio_range=(2.0,0.5)", "low <= high"),
        ("data.flip_prob=2", r"data.flip_prob must be a number in \[0, 1\]"),
        ("data.photometric=1", "data.photometric must be True or False"),
        ("optimizer.no_decay_keys=pos", "no_decay_keys must be a tuple/list"),
        ("lr_config.warmup=linear", "lr_config.warmup_iters must be > 0"),
        ("data=3", "data must be a dict"),
        ("model.name=condnet_r9", "model.name must be None or one of condnet_r50-d8_ade20k"),
        ("model.pretrained_backbone=1", "model.pretrained_backbone must be False, True or"),
        ("model.head=fpn", "model.head must be one of"),
        # The loader accepted these and the optimizer or the scheduler refused them later.
        ("lr_config.power=0", "lr_config.power must be a number > 0; got 0"),
        ("optimizer.betas=(0.9, 1.0)", r"optimizer.betas\[1\] must be a number in \[0, 1\)"),
        ("model.layout=grouped", "model.layout must be one of"),
        ("model.backend='reference'", "unknown config key 'model.backend'"),
        ("evaluation.mode=tiles", "evaluation.mode must be one of"),
        ("evaluation.aug_scales=()", "evaluation.aug_scales must be a non-empty sequence"),
        ("checkpoint.max_keep=0", "checkpoint.max_keep must be None or an int >= 1"),
        ("model.backbone=vgg16", "model.backbone must be one of resnet18_v1c"),
        ("model.num_classes=0", "model.num_classes must be an int >= 1"),
        ("data.dataset=folder", "data.dataset='folder' needs data.root"),
    ],
)
def test_invalid_values_name_the_key(tmp_path, option, match):
    path = write(tmp_path, "c.py", NAMED)
    with pytest.raises(ConfigError, match=match):
        load_config(path, [option])


def test_model_without_name_needs_backbone_head_classes(tmp_path):
    path = write(tmp_path, "c.py", "model = dict(backbone='resnet18_v1c')\n")
    with pytest.raises(ConfigError, match="missing: model.head, model.num_classes"):
        load_config(path)
    cfg = load_config(path, ["model.head=aspp", "model.num_classes=3", "model.channels=16"])
    config = cfg.model.config
    assert (config.backbone, config.head, config.num_classes, config.channels) == (
        "resnet18_v1c",
        "aspp",
        3,
        16,
    )


def test_model_config_overrides_the_named_one():
    cfg = validate_config(
        {"model": {"name": "condnet_upernet_swin-b_ade20k", "backbone_kwargs": {"img_size": 256}}}
    )
    config = cfg.model.config
    # backbone_kwargs add to the registered ones (Swin keeps its stochastic depth).
    assert dict(config.backbone_kwargs) == {"drop_path_rate": 0.3, "img_size": 256}
    assert config.head == "uper" and config.num_classes == 150
    cfg = validate_config({"model": {"name": "condnet_r50-d8_ade20k", "num_classes": 21}})
    assert cfg.model.config.num_classes == 21


# -- options -----------------------------------------------------------------------------


def test_parse_options_values():
    tree = parse_options(
        [
            "a.int=3",
            "a.float=1e-4",
            "a.tuple=(1, 2)",
            "a.pair=1,2",
            "a.list=[1,2]",
            "a.none=None",
            "a.true=True",
            "a.word=bf16",
            "a.path=data/scenes",
            "a.abs=/tmp/x y",
            "a.quoted='3'",
            "a.empty=",
            "b.c.d=-1",
            "e=x=y",
        ]
    )
    assert tree == {
        "a": {
            "int": 3,
            "float": 1e-4,
            "tuple": (1, 2),
            "pair": (1, 2),
            "list": [1, 2],
            "none": None,
            "true": True,
            "word": "bf16",
            "path": "data/scenes",
            "abs": "/tmp/x y",
            "quoted": "3",
            "empty": "",
        },
        "b": {"c": {"d": -1}},
        "e": "x=y",
    }
    for bad in (["novalue"], ["a..b=1"], ["=1"], ["a=1", "a.b=2"]):
        with pytest.raises(ConfigError):
            parse_options(bad)
    with pytest.raises(TypeError, match="list of 'key=value'"):
        parse_options("a=1")


def test_options_override_and_normalise(tmp_path):
    path = write(tmp_path, "c.py", NAMED + "data = dict(crop_size=(64, 64), samples_per_gpu=2)\n")
    cfg = load_config(
        path,
        [
            "data.crop_size=[32,48]",
            "runner.amp=bf16",
            "data.dataset_kwargs.on_corrupt=skip",
            "optimizer.no_decay_keys=['pos']",
            "work_dir=work_dirs/try 1",
        ],
    )
    assert cfg.data.crop_size == (32, 48) and cfg.data.samples_per_gpu == 2
    assert cfg.runner.amp == "bf16" and cfg.data.dataset_kwargs == {"on_corrupt": "skip"}
    assert cfg.optimizer.no_decay_keys == ("pos",) and cfg.work_dir == "work_dirs/try 1"
    # Later options win; a mapping of dotted keys works too.
    assert load_config(path, ["runner.seed=1", "runner.seed=2"]).runner.seed == 2
    assert load_config(path, {"runner.seed": 4}).runner.seed == 4
    assert load_config(path, None) == load_config(path)


# -- writing -----------------------------------------------------------------------------


def test_format_config_round_trip(tmp_path):
    path = write(
        tmp_path,
        "c.py",
        f"""\
        {NAMED}
        data = dict(dataset_kwargs={{"classes": ["a", "b"], "weird key": (1,), "from": None}})
        optimizer = dict(grad_clip=float("inf"), no_decay_keys=("x",))
        work_dir = "it's \\"quoted\\""
        """,
    )
    cfg = load_config(path, ["model.backbone_kwargs.drop_path_rate=0.2", "model.layout=per_class"])
    text = format_config(cfg)
    compile(text, "formatted", "exec")
    again = load_config(write(tmp_path, "again.py", text))
    assert again == cfg
    assert isinstance(again.data.dataset_kwargs["weird key"], tuple)
    assert math.isinf(again.optimizer.grad_clip)
    out = dump_config(cfg, tmp_path / "deep" / "dir" / "config.py")
    assert out.read_text() == text and load_config(out) == cfg
    assert [p.name for p in out.parent.iterdir()] == ["config.py"]  # no temporary left


# -- builders on the generated scene set --------------------------------------------------


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, seed=0, num_train=4, num_val=2, size=32)
    return root


def scene_cfg(root, *options):
    small = ["data.img_scale=(64,32)", "data.crop_size=(32,32)", "data.test_scale=(64,32)"]
    return load_config(DEMO, [f"data.root={root}", "data.samples_per_gpu=2", *small, *options])


def test_build_datasets_and_loader(scenes):
    cfg = scene_cfg(scenes)
    train = build_dataset(cfg, "train")
    sample = train[(0, 123)]
    assert sample["img"].shape == (3, 32, 32) and sample["gt_semantic_seg"].shape == (32, 32)
    val = build_dataset(cfg, "val")
    assert len(train) == 4 and len(val) == 2
    assert val[0]["gt_semantic_seg"].shape == tuple(val[0]["ori_shape"])
    classes, palette = dataset_meta(val)
    assert classes == SCENE_CLASSES and palette == [tuple(c) for c in SCENE_PALETTE]
    assert dataset_meta(torch.utils.data.Subset(val, [0]))[0] == SCENE_CLASSES
    loader = build_train_loader(cfg, train)
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["img"].shape == (2, 3, 32, 32)
    assert len(build_train_loader(cfg, train, rank=1, world_size=2)) == 1
    with pytest.raises(ValueError, match="fewer than data.samples_per_gpu=8"):
        build_train_loader(scene_cfg(scenes, "data.samples_per_gpu=8"), train)
    with pytest.raises(ValueError, match="split must be one of"):
        build_dataset(cfg, "test")


def test_build_dataset_errors(scenes, tmp_path):
    with pytest.raises(ConfigError, match=r"model.num_classes\) but data.dataset='scenes'.* has 8"):
        build_dataset(scene_cfg(scenes, "model.num_classes=5"), "val")
    with pytest.raises(
        FileNotFoundError, match=r"data.root .*missing.*python -m condnet.tools.make_scenes"
    ):
        build_dataset(scene_cfg(tmp_path / "missing"), "val")
    with pytest.raises(ConfigError, match=r"data.dataset_kwargs .* do not fit SceneDataset"):
        build_dataset(scene_cfg(scenes, "data.dataset_kwargs.reduce_zero_label=True"), "val")


def test_build_folder_dataset(scenes):
    cfg = scene_cfg(
        scenes,
        "data.dataset=folder",
        "data.train_split=training",
        "data.val_split=validation",
        f"data.dataset_kwargs={{'classes': {list(SCENE_CLASSES)}, 'reduce_zero_label': True}}",
    )
    assert len(build_dataset(cfg, "train")) == 4 and len(build_dataset(cfg, "val")) == 2
    with pytest.raises(ConfigError, match="needs data.dataset_kwargs.classes"):
        scene_cfg(scenes, "data.dataset=folder")


def test_build_model_demo():
    cfg = load_config(DEMO)
    model = build_model(cfg)
    assert isinstance(model, Segmentor) and model.num_classes == 8
    assert model.config.channels == 128 and model.config.dilations == (1, 3, 6, 9)
    assert model.config.classifier == "conditional"
    plain = load_config(DEMO.with_name("plain_r18-d8_scenes.py"))
    with torch.device("meta"):
        assert build_model(plain).config.classifier == "plain"


# -- one owner per key --------------------------------------------------------------------


def test_each_key_is_a_field_of_its_section(tmp_path):
    # Valid keys in errors, the keys written and the defaults all come from the dataclasses.
    cfg = load_config(write(tmp_path, "c.py", NAMED))
    tree = cfg.to_dict()
    for name, section in Config.sections().items():
        fields = [f.name for f in dataclasses.fields(section) if f.init]
        if name == "model":
            fields = ["name", "pretrained_backbone"]  # + the ModelConfig fields it changes
            assert section.keys()[2:] == tuple(
                f.name for f in dataclasses.fields(condnet.models.zoo.ModelConfig)
            )
        else:
            assert list(tree[name]) == fields == list(section.keys())
            assert section() == section.from_dict({})  # the defaults are the fields'
    with pytest.raises(ConfigError, match=r"'runner.max_iter' in the config.*max_iters, accum"):
        RunnerConfig.from_dict({"max_iter": 3})  # made directly: the loader's message
    with pytest.raises(ConfigError, match="optimizer.grad_clip must be None or a number > 0"):
        OptimizerConfig(grad_clip=-1.0)


def test_the_model_config_is_built_once_per_run(tmp_path, monkeypatch):
    built = []
    real = condnet.models.zoo.ModelConfig.__post_init__
    monkeypatch.setattr(
        condnet.models.zoo.ModelConfig,
        "__post_init__",
        lambda self: built.append(self) or real(self),
    )
    root = tmp_path / "scenes"
    write_scenes(root, seed=0, num_train=0, num_val=1, size=32)
    cfg = load_config(DEMO, [f"data.root={root}"])
    assert len(built) == 1  # made when the model section was checked
    with torch.device("meta"):
        build_model(cfg)
    check_num_classes(cfg, build_dataset(cfg, "val"))
    assert len(built) == 1 and cfg.model.config is built[0]
