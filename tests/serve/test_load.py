"""``taxonlens bench serve --quick``: the service under a small load on 127.0.0.1, micro-batching on
and off; the table's fields print, every request is answered once, and ``--out`` holds the figures."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from taxonlens.cli import app

COLUMNS = ("batching", "clients", "sent", "2xx", "503", "5xx", "other", "req/s", "p50", "p95", "p99", "batch")


def test_bench_serve_quick_prints_every_figure_and_answers_every_request_once(tmp_path):
    out = tmp_path / "serve.json"
    result = CliRunner().invoke(app, ["bench", "serve", "--quick", "--out", str(out)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("┃ batching"))
    assert header.replace("┃", " ").split() == list(COLUMNS)
    assert "throughput on / off at 4 clients" in result.output
    assert re.search(r"every request answered once, no 5xx\s*│\s*true", result.output)
    data = json.loads(out.read_text())
    assert [(x["batching"], x["clients"]) for x in data["levels"]] == [("on", 1), ("on", 4), ("off", 1), ("off", 4)]
    for x in data["levels"]:
        assert x["ok"] + x["refused"] == x["sent"] == 12 and x["server_errors"] == 0 and x["other"] == 0
        assert 0 < x["p50_ms"] <= x["p95_ms"] <= x["p99_ms"] and x["throughput"] > 0
        assert (x["mean_batch"] == 1.0) if x["batching"] == "off" else (1.0 <= x["mean_batch"] <= 4.0)
    assert set(data["memory_mib"]) == {"on", "off"}
    assert all(m["at the end"] > 0 and m["after warm-up"] > 0 for m in data["memory_mib"].values())
