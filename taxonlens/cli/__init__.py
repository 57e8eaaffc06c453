"""The ``taxonlens`` command line: one typer module per command group, each command parsing its
options, calling the Python API and printing the result.

Usage errors (an unknown choice, a missing option, a bad number) and input errors
(:class:`~taxonlens.errors.TaxonlensError`) are printed to stderr as one line and exit with
status 2; no traceback.
"""

from __future__ import annotations

import re

import typer

from taxonlens.choices import Choice
from taxonlens.cli import (
    attributes,
    bench,
    demo,
    evaluate,
    fewshot,
    index,
    predict,
    serve,
    synthworld,
    taxonomy,
    train,
    vqa,
)
from taxonlens.cli.common import err_console
from taxonlens.errors import ChoiceError, TaxonlensError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="Recognise organisms across the tree of life with consistent taxonomy paths.")
app.add_typer(taxonomy.app, name="taxonomy")
app.add_typer(train.app, name="train")
app.add_typer(vqa.app, name="vqa")
app.add_typer(index.app, name="index")
app.add_typer(bench.app, name="bench")
app.add_typer(attributes.app, name="attributes")
app.add_typer(fewshot.app, name="fewshot")
app.command()(synthworld.synthworld)
app.command()(evaluate.evaluate)
app.command()(predict.predict)
app.command()(predict.calibrate)
app.command()(predict.embed)
app.command()(demo.demo)
app.command()(serve.serve)


def main() -> None:
    """Entry point of the ``taxonlens`` command."""
    try:
        code = typer.main.get_command(app).main(standalone_mode=False)
    except typer.TyperException as e:  # a usage error: unknown choice, missing option, bad number, ...
        if type(e).__name__ != "NoArgsIsHelpError":  # (that one has printed the help already; as typer checks it)
            err_console.print(f"Error: {usage_message(e)}", markup=False, highlight=False)
        raise SystemExit(e.exit_code) from None
    except typer.Abort:
        err_console.print("Aborted!", markup=False, highlight=False)
        raise SystemExit(1) from None
    except TaxonlensError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        raise SystemExit(2) from None
    if isinstance(code, int) and code:  # typer.Exit(code)
        raise SystemExit(code)


def usage_message(error: typer.TyperException) -> str:
    """The one-line message of a usage error, without the "Value error, " that typer's pydantic
    coercion puts before a rejected choice; a rejected choice whose set says why that value is not
    in it (``--text-type mixed`` for labels: mixed is for training) gets that reason appended."""
    message = " ".join(error.format_message().replace(": Value error, ", ": ").split())
    rejected = _REJECTED.search(message)
    if rejected:
        value, offered = rejected.group(1), set(re.findall(r"'([^']*)'", rejected.group(2)))
        for kind in _choice_sets():
            if {str(m) for m in kind} == offered and kind._missing_.__func__ is not Choice._missing_.__func__:
                try:
                    kind(value)
                except ChoiceError as e:
                    return f"{message.rstrip('.')}: {str(e).split(': ', 1)[-1]}"
    return message


_REJECTED = re.compile(r"'([^']*)' is not one of (.*)$")


def _choice_sets() -> list[type[Choice]]:
    """Every :class:`Choice` subclass defined so far."""
    found, todo = [], [Choice]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


__all__ = ["app", "main"]
