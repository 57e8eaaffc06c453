"""``taxonlens serve`` checks its options before the model loads and the port opens: each
mistake is one line, exit 2. (The served page and API run in tests/serve.)"""

from __future__ import annotations

import socket

import pytest

from taxonlens.cli import main


def _run_main(monkeypatch, capsys, argv: list[str]) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["taxonlens", *argv])
    with pytest.raises(SystemExit) as stopped:
        main()
    return stopped.value.code, capsys.readouterr().err


def test_without_model_or_demo_one_line_says_what_to_do(monkeypatch, capsys, tmp_path):
    code, err = _run_main(monkeypatch, capsys, ["serve", "--demo", str(tmp_path / "none")])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "run `taxonlens demo` first, or pass --model" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--taxonomy", "inat21-plantae"], "--taxonomy needs --model"),
    (["--model", "tiny-clip", "--max-batch", "0"], "--max-batch must be at least 1"),
    (["--model", "tiny-clip", "--max-queue", "4", "--max-files", "8"], "must hold one full request"),
    (["--model", "tiny-clip", "--api-key-env", "TAXONLENS_TEST_NO_SUCH_VARIABLE"], "is not set or empty"),
])
def test_bad_options_fail_before_the_model_loads(monkeypatch, capsys, argv, message):
    code, err = _run_main(monkeypatch, capsys, ["serve", *argv])
    assert code == 2 and message in err


def test_a_port_in_use_fails_before_the_model_loads(monkeypatch, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = _run_main(monkeypatch, capsys, ["serve", "--model", "tiny-clip", "--port", str(port)])
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err
