"""Every choice option of every command rejects a value outside its choices as one line on stderr
naming the option and the valid values, exit 2, before anything runs."""

from __future__ import annotations

from enum import Enum

import pytest
import typer

from taxonlens.cli import app, main


def _choice_options(command, path: tuple[str, ...] = ()):
    """``(command path, option, valid values, other required parameters)`` of every option of the
    command tree whose values are an Enum's."""
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _choice_options(sub, (*path, name))
        return
    required = [p for p in command.params if p.required]
    for param in command.params:
        annotation = param.type_descriptor.annotation
        if isinstance(annotation, type) and issubclass(annotation, Enum):
            yield path, param.opts[0], [str(m.value) for m in annotation], [p for p in required if p is not param]


CHOICE_OPTIONS = list(_choice_options(typer.main.get_command(app)))


def test_the_walk_finds_the_choice_options():
    found = {(" ".join(path), option) for path, option, _, _ in CHOICE_OPTIONS}
    assert {("predict", "--method"), ("predict", "--text-type"), ("train contrastive", "--text-type"),
            ("vqa answer", "--mode"), ("index build", "--kind"), ("evaluate", "--format")} <= found
    assert len(found) == len(CHOICE_OPTIONS) >= 18


@pytest.mark.parametrize(("path", "option", "values", "required"), CHOICE_OPTIONS,
                         ids=[f"{' '.join(c[0])} {c[1]}" for c in CHOICE_OPTIONS])
def test_a_bad_choice_is_one_line_naming_the_option_and_its_values(path, option, values, required, monkeypatch,
                                                                   capsys):
    fillers = [arg for p in required for arg in (["1"] if p.param_type_name == "argument" else [p.opts[0], "1"])]
    monkeypatch.setattr("sys.argv", ["taxonlens", *path, *fillers, option, "not-a-choice"])
    with pytest.raises(SystemExit) as info:
        main()
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert info.value.code == 2 and out.out == "" and len(lines) == 1, out
    assert lines[0].startswith(f"Error: Invalid value for '{option}': 'not-a-choice' is not one of "), lines[0]
    assert all(f"'{v}'" in lines[0] for v in values) and "Traceback" not in out.err


def test_text_type_mixed_is_for_training_only(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["taxonlens", "predict", "x.jpg", "--text-type", "mixed"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and "'mixed' is not one of 'taxonomic', 'scientific'" in err
    assert "mixed is for training; label embeddings need a fixed text type" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["synthworld"], "Error: Missing option '--out'."),
    (["synthworld", "--out", "x", "--species", "many"], "Error: Invalid value for '--species':"),
    (["taxonomy", "nope"], "Error: No such command 'nope'."),
])
def test_other_usage_errors_are_one_line_too(argv, message, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["taxonlens", *argv])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1, err


def test_help_and_no_arguments(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["taxonlens", "--help"])
    main()  # exit 0: returns
    assert "predict" in capsys.readouterr().out
    monkeypatch.setattr("sys.argv", ["taxonlens", "train"])
    with pytest.raises(SystemExit) as info:
        main()
    out = capsys.readouterr()
    assert info.value.code == 2 and "contrastive" in out.out and out.err == ""
