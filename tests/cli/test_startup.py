"""The command line starts without the heavy model libraries: they are imported by the command
that needs them (typer builds every command's options when the CLI starts)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("open_clip", "transformers", "trl", "peft", "faiss", "matplotlib", "ray")


def test_starting_the_cli_imports_no_model_library():
    code = f"import json, sys, taxonlens.cli; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
