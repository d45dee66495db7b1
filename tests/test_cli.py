"""The ``mer`` console script: every command reaches its module's main with the remaining arguments."""
import importlib
import inspect
import sys

import pytest

from mer import cli


def test_help_lists_every_command_with_its_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, cmd in cli.COMMANDS.items():
        assert f"  {name}" in out and cmd.summary in out
    assert set(cli.COMMANDS) == {"run", "extract", "tune", "report", "ui", "cache", "validate", "doctor",
                                 "corrupt", "pretrain", "pll", "ov"}


def test_unknown_command_is_one_line_with_the_closest_name(capsys):
    assert cli.main(["valdate", "x.csv"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "did you mean `mer validate`?" in err


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_each_command_names_a_module_whose_main_takes_what_it_is_given(name):
    cmd = cli.COMMANDS[name]
    main = importlib.import_module(cmd.module).main
    params = list(inspect.signature(main, follow_wrapped=False).parameters.values())
    if cmd.hydra:       # reads sys.argv (a Hydra main, or one that hands over to one): no argument needed
        assert all(p.default is not inspect.Parameter.empty for p in params), (name, params)
    else:
        assert params and params[0].name == "argv", (name, params)


def test_arguments_reach_the_command_unchanged(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["mer"])
    with pytest.raises(SystemExit) as exit_:
        cli.main(["validate", "--help"])
    assert exit_.value.code == 0 and "--track" in capsys.readouterr().out
    cli.main(["run", "--cfg", "job", "fusion=mlp", "tracking=none"])     # Hydra main, configs by import
    out = capsys.readouterr().out
    assert "name: mlp" in out and "fusion:" in out
    assert sys.argv[1:] == ["--cfg", "job", "fusion=mlp", "tracking=none"]
