"""Every usage error of every command: one readable line on stderr, exit code 2, no traceback.

The commands are enumerated from the built CLI, so a new command is covered without editing
this file. Most cases run in-process through ``faceanchor.cli.app.main`` (the console script's
function); a few run ``python -m faceanchor`` in a subprocess, and the missing-extra cases run
in a subprocess that blocks the module before anything imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from faceanchor.cli.app import build_command, main
from faceanchor.cli.metavars import type_word

ROOT = Path(__file__).resolve().parents[2]


def _walk(command, path=()):
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(build_command()))
LEAVES = [(p, c) for p, c in COMMANDS if not getattr(c, "commands", None)]
GROUPS = [(p, c) for p, c in COMMANDS if getattr(c, "commands", None)]


def _ids(items):
    return [" ".join(p) or "(root)" for p, _ in items]


def bad_value_args(command) -> tuple[list[str], str]:
    """Arguments giving one of ``command``'s options a value it cannot take, and that option's name.

    A number option gets ``abc``; else a flag gets ``--flag=abc``; else a value option is given
    without its value; a command with no option of its own gets ``--help=abc``.
    """
    options = [p for p in command.params if getattr(p, "param_type_name", "") == "option" and p.opts]
    numeric = [p for p in options if not p.is_flag and type_word(p) in ("INTEGER", "FLOAT")]
    if numeric:
        return [numeric[0].opts[0], "abc"], numeric[0].opts[0]
    flags = [p for p in options if p.is_flag]
    if flags:
        return [f"{flags[0].opts[0]}=abc"], flags[0].opts[0]
    valued = [p for p in options if not p.is_flag]
    if valued:
        return [valued[0].opts[0]], valued[0].opts[0]
    return ["--help=abc"], "--help"


@pytest.fixture
def run_main(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEANCHOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACEANCHOR_DEVICE", "cpu")
    monkeypatch.setenv("COLUMNS", "200")  # help tables unwrapped

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        out, err = capsys.readouterr()
        return exc.value.code, out, err

    return run


def assert_one_line(code: int, err: str, *needles: str) -> str:
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith("[transformers]")]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], err
    return lines[0]


def test_every_command_is_enumerated():
    names = set(_ids(COMMANDS))
    assert {"generate", "serve", "faces", "compare", "methods", "styles", "keys create", "character create",
            "character edit", "models pull"} <= names, names


@pytest.mark.parametrize("path,command", LEAVES, ids=_ids(LEAVES))
def test_unknown_option(run_main, path, command):
    code, out, err = run_main(*path, "--no-such-flag")
    assert_one_line(code, err, "--no-such-flag", " ".join(("faceanchor", *path)) + " --help")


@pytest.mark.parametrize("path,command", LEAVES, ids=_ids(LEAVES))
def test_bad_option_value(run_main, path, command):
    args, option = bad_value_args(command)
    code, out, err = run_main(*path, *args)
    assert_one_line(code, err, option)


@pytest.mark.parametrize("path,command", GROUPS, ids=_ids(GROUPS))
def test_group_unknown_command_and_option(run_main, path, command):
    code, _, err = run_main(*path, "no-such-command")
    assert_one_line(code, err, "no-such-command")
    code, _, err = run_main(*path, "--no-such-flag")
    assert_one_line(code, err, "--no-such-flag")


def test_missing_arguments_and_values(run_main):
    assert_one_line(*run_main("keys", "revoke")[::2], "KEY_ID")
    assert_one_line(*run_main("faces")[::2], "IMAGE")
    assert_one_line(*run_main("character", "create", "Ada")[::2], "--face")
    assert_one_line(*run_main("generate", "--steps")[::2], "--steps", "requires an argument")
    assert_one_line(*run_main("serve", "--port", "99999")[::2], "--port", "65535")


def test_root_setting_errors(run_main):
    assert_one_line(*run_main("--dtype", "fp8", "methods")[::2], "dtype")
    assert_one_line(*run_main("--device", "tpu", "methods")[::2], "device")
    assert_one_line(*run_main("--quantize", "4bit", "methods")[::2], "flux_quantize", "8bit")


def test_missing_quanto_names_the_quant_extra():
    from faceanchor.cli.extras import install_hint

    hint = install_hint(ModuleNotFoundError("No module named 'optimum'", name="optimum.quanto"), "--quantize 8bit")
    assert hint == '--quantize 8bit needs the "quant" extra (optimum is not installed): pip install "faceanchor[quant]"'


@pytest.mark.parametrize("path", [("generate",), ("character", "generate"), ("serve",)], ids=" ".join)
def test_unknown_weights_kind(run_main, path):
    assert_one_line(*run_main(*path, "--weights", "huge")[::2], "--weights", "real, dummy, tiny")


@pytest.mark.parametrize("path,command", COMMANDS, ids=_ids(COMMANDS))
def test_help_exits_0_with_readable_types(run_main, path, command):
    code, out, err = run_main(*path, "--help")
    assert code == 0, err
    assert "Usage: faceanchor" in out
    for unreadable in ("<str>", "<int", "<float", "<bool>", "<path>", "list[", " range>"):
        assert unreadable not in out, f"{unreadable!r} in the help of {' '.join(path)}:\n{out}"


def test_help_types(run_main):
    out = run_main("generate", "--help")[1]
    for word in ("TEXT", "INTEGER", "FLOAT", "PATH", "[real|dummy|tiny]"):
        assert word in out, out
    out = run_main("serve", "--help")[1]
    assert "INTEGER" in out and "[real|dummy|tiny]" in out, out


def test_group_without_subcommand_shows_its_help(run_main):
    code, out, err = run_main("keys")
    assert code == 2 and "Traceback" not in err + out
    assert "create" in out + err and "revoke" in out + err


# ----------------------------------------------------------------------------- real entry point


def _subprocess(tmp_path, args, code=None):
    env = dict(os.environ, FACEANCHOR_HOME=str(tmp_path / "home"), FACEANCHOR_DEVICE="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "faceanchor", *args] if code is None else [sys.executable, "-c", code]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    "args,needle",
    [(["generate", "--bogus"], "--bogus"), (["generate", "--steps", "abc"], "--steps"), (["nope"], "nope"),
     (["serve", "--weights", "huge"], "--weights")],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_python_dash_m(tmp_path, args, needle):
    assert_one_line(*_subprocess(tmp_path, args), needle)


def test_python_dash_m_help(tmp_path):
    code, err = _subprocess(tmp_path, ["--help"])
    assert code == 0 and "Traceback" not in err


def _blocking(modules: list[str], argv: list[str]) -> str:
    """Python that makes ``modules`` unimportable (as when their extra is not installed), then runs the CLI."""
    return (
        "import sys, importlib.abc\n"
        f"BLOCKED = {modules!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Block())\n"
        "from faceanchor.cli.app import main\n"
        f"main({argv!r})\n"
    )


@pytest.mark.parametrize(
    "blocked,argv,extra",
    [
        (["sqlalchemy"], ["keys", "list"], "serve"),
        (["sqlalchemy"], ["character", "list"], "serve"),
        (["uvicorn"], ["serve", "--weights", "tiny"], "serve"),
        (["torch", "diffusers"], ["generate", "--face", "x.jpg", "--weights", "tiny"], "gen"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_missing_extra_is_named(tmp_path, blocked, argv, extra):
    line = assert_one_line(*_subprocess(tmp_path, None, _blocking(blocked, argv)), f'pip install "faceanchor[{extra}]"')
    assert " ".join(argv[:2] if argv[0] in ("keys", "character") else argv[:1]) in line


def test_missing_project_module_is_not_called_an_extra(tmp_path):
    """A module no extra provides is a real bug: it is not disguised as a missing extra."""
    code = (
        "import typer\nfrom faceanchor.cli import app as a\nbuild = a.build_app\n"
        "def patched():\n    t = build()\n    @t.command('boom')\n    def boom():\n        import faceanchor_no_such_module\n    return t\n"
        "a.build_app = patched\na.main(['boom'])\n"
    )
    rc, err = _subprocess(tmp_path, None, code)
    assert rc == 1 and "ModuleNotFoundError" in err and "pip install" not in err


def test_extras_table_covers_pyproject():
    from faceanchor.cli.extras import DISTRIBUTION_MODULES, MODULE_EXTRAS

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    checked = 0
    for extra, reqs in extras.items():
        if extra == "test":
            continue
        for req in reqs:
            dist = req.split(";")[0].split("[")[0]
            for sep in "<>=!~ ":
                dist = dist.split(sep)[0]
            module = DISTRIBUTION_MODULES.get(dist.lower(), dist.lower().replace("-", "_"))
            assert MODULE_EXTRAS.get(module) == extra, f"{req} (extra {extra}): module {module} maps to {MODULE_EXTRAS.get(module)}"
            checked += 1
    assert checked >= 15
