"""Every command shows the name it was run by in --help and in argument errors
(cli_common.command_name): the console script's, the script path's, or ``python -m``'s."""

import importlib
import os
import re
import subprocess
import sys
import types
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from condnet.tools.cli_common import command_name

REPO = Path(__file__).resolve().parents[1]


def console_scripts() -> dict[str, str]:
    """pyproject.toml's [project.scripts] (read without tomllib, which Python 3.10 lacks)."""
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', section, flags=re.M))


SCRIPTS = console_scripts()


def test_every_command_is_a_condnet_tools_main():
    assert len(SCRIPTS) >= 10
    for script, target in SCRIPTS.items():
        module, _, func = target.partition(":")
        assert module.startswith("condnet.tools.") and func == "main", script
        assert script == "condnet-" + module.rpartition(".")[2].replace("_", "-")


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_console_script_name_in_usage(script, monkeypatch):
    module = importlib.import_module(SCRIPTS[script].partition(":")[0])
    monkeypatch.setattr(sys, "argv", [f"/opt/venv/bin/{script}", "--help"])
    assert module.build_parser().format_usage().startswith(f"usage: {script} ")


def test_main_help_and_errors_name_the_console_script(monkeypatch, capsys):
    from condnet.tools import train

    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/condnet-train"])
    with pytest.raises(SystemExit) as exc:
        train.main(["--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: condnet-train ")
    with pytest.raises(SystemExit) as exc:
        train.main(["--no-such-flag"])
    assert exc.value.code == 2
    assert "condnet-train: error: " in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv0, expected",
    [
        ("/opt/venv/bin/condnet-train", "condnet-train"),
        ("condnet-train", "condnet-train"),
        ("/opt/venv/Scripts/condnet-train.exe", "condnet-train"),  # pip's Windows launchers
        ("condnet-train-script.py", "condnet-train"),
        ("tools/train.py", "tools/train.py"),  # a relative script path: as typed
        ("./tools/train.py", "./tools/train.py"),
        ("train.py", "train.py"),
        ("/home/me/condnet/tools/train.py", "train.py"),  # absolute: the file name
        ("/usr/bin/python3", "condnet-train"),  # main() called from Python
        ("/opt/venv/bin/pytest", "condnet-train"),
        ("-c", "condnet-train"),
        ("", "condnet-train"),
        ("tools/test.py", "condnet-train"),  # another command's file
        ("/opt/venv/bin/condnet-test", "condnet-train"),
    ],
)
def test_command_name(argv0, expected, monkeypatch):
    monkeypatch.setattr(sys, "argv", [argv0])
    assert command_name("train") == expected


def test_command_name_underscores_and_module_runs(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/condnet-convert-released"])
    assert command_name("convert_released") == "condnet-convert-released"
    monkeypatch.setattr(sys, "argv", ["/x/convert_released.py"])
    assert command_name("convert_released") == "convert_released.py"
    monkeypatch.setattr(sys, "argv", [])
    assert command_name("convert_released") == "condnet-convert-released"
    main = types.ModuleType("__main__")
    main.__spec__ = ModuleSpec("condnet.tools.train", None)
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", ["/home/me/condnet/condnet/tools/train.py"])
    assert command_name("train") == "python -m condnet.tools.train"
    assert command_name("test") == "condnet-test"  # another module run with -m


def run_help(argv, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, *argv, "--help"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_real_launches(tmp_path):
    # A console script as pip writes one (the name without .exe / -script.py).
    launcher = tmp_path / "bin" / "condnet-test"
    launcher.parent.mkdir()
    launcher.write_text(
        "import re, sys\n"
        "from condnet.tools.test import main\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
        "    sys.exit(main())\n"
    )
    assert run_help([str(launcher)], tmp_path).startswith("usage: condnet-test ")
    assert run_help(["tools/test.py"], REPO).startswith("usage: tools/test.py ")
    module_run = run_help(["-m", "condnet.tools.test"], tmp_path)
    assert module_run.startswith("usage: python -m condnet.tools.test ")


# -- configs by name -------------------------------------------------------------------

DEMO = "condnet_r18-d8_scenes"
DEMO_FILE = REPO / "condnet" / "configs" / "demo" / f"{DEMO}.py"


@pytest.mark.parametrize(
    "tool, argv",
    [
        ("train", [DEMO]),
        ("test", [DEMO, "ckpt.pth"]),
        ("benchmark", [DEMO]),
        ("export", [DEMO, "ckpt.pth", "--format", "onnx", "--out", "m.onnx"]),
        ("convert", ["in.pth", "out.pth", "--config", DEMO]),
    ],
)
def test_config_arguments_take_a_name_or_a_path(tool, argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # outside the checkout
    parser = importlib.import_module(f"condnet.tools.{tool}").build_parser()
    assert parser.parse_args(argv).config == DEMO_FILE
    by_path = [str(DEMO_FILE) if a == DEMO else a for a in argv]
    assert parser.parse_args(by_path).config == DEMO_FILE
    typo = [DEMO[:-1] if a == DEMO else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(typo)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"named {DEMO[:-1]!r}; close matches: {DEMO}" in err and "condnet-configs" in err


def test_configs_lists_the_packaged_configs(capsys):
    from condnet.engine.config import packaged_configs
    from condnet.tools import configs

    assert configs.main([]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert {name: Path(path) for name, path in rows} == packaged_configs()
    assert configs.main(["SCENES"]) == 0  # a substring, in any case
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["cac_r18-d8_scenes", DEMO, "plain_r18-d8_scenes"]
    assert configs.main(["scenez"]) == 1
    assert capsys.readouterr().err == (
        "error: no packaged config name contains 'scenez'; close matches: "
        f"cac_r18-d8_scenes, {DEMO}, plain_r18-d8_scenes\n"
    )


def test_complexity_takes_a_config_name(capsys):
    from condnet.tools import complexity

    assert complexity.main([DEMO, "--depth", "0"]) == 0
    assert capsys.readouterr().out.startswith(f"{DEMO} at input 1x3x64x64\n")
    with pytest.raises(SystemExit):
        complexity.main(["plain_r18-d8_scene", "--depth", "0"])
    assert "configs like it: plain_r18-d8_scenes" in capsys.readouterr().err
