"""The command line: each command runs end to end and bad input is one clear line, exit 2."""

import json

from typer.testing import CliRunner

from taxonlens.cli import app, main

runner = CliRunner()


def test_taxonomy_info_builtin_and_json():
    result = runner.invoke(app, ["taxonomy", "info", "inat21-animalia", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["leaves"] == 5388 and summary["taxa_per_rank"]["kingdom"] == 1


def _run_main(monkeypatch, capsys, argv):
    monkeypatch.setattr("sys.argv", ["taxonlens", *argv])
    try:
        main()
    except SystemExit as e:
        return e.code, capsys.readouterr()
    return 0, capsys.readouterr()


def test_bad_taxonomy_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("kingdom,phylum,species\nPlantae,Tracheophyta,Rosa canina\nPlantae,,Rosa arvensis\n")
    code, out = _run_main(monkeypatch, capsys, ["taxonomy", "info", str(bad)])
    assert code == 2
    assert "bad.csv:3" in out.err and "empty name" in out.err and "Traceback" not in out.out + out.err
    assert len(out.err.strip().splitlines()) == 1
    code, out = _run_main(monkeypatch, capsys, ["taxonomy", "info", str(tmp_path / "missing.json")])
    assert code == 2 and "does not exist" in out.err


def test_synthworld_writes_and_resumes(tmp_path):
    args = ["synthworld", "--out", str(tmp_path), "--species", "6", "--images-per-species", "2", "--size", "24",
            "--novel-fraction", "0.2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 12 and len(list((tmp_path / "images").rglob("*.png"))) == 12
    world = json.loads((tmp_path / "world.json").read_text())
    assert world["species"] == 6 and len(world["novel_species"]) == 1
    assert runner.invoke(app, args).exit_code == 0  # second run keeps what is there
    assert (tmp_path / "manifest.jsonl").read_text().splitlines() == lines


def test_synthworld_random_tree(tmp_path):
    result = runner.invoke(app, ["synthworld", "--out", str(tmp_path), "--random-tree", "--species", "5",
                                 "--images-per-species", "1", "--size", "16"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 5


def test_train_contrastive_then_predict_with_the_trained_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TAXONLENS_CACHE", str(tmp_path / "cache"))
    world = tmp_path / "world"
    assert runner.invoke(app, ["synthworld", "--out", str(world), "--random-tree", "--species", "6",
                               "--images-per-species", "4", "--size", "32"]).exit_code == 0
    train = ["train", "contrastive", str(world / "manifest.jsonl"), "--out", str(tmp_path / "run"), "--epochs", "1",
             "--batch-size", "8"]
    result = runner.invoke(app, train)
    assert result.exit_code == 0, result.output
    assert '"epoch": 1' in result.output and (tmp_path / "run" / "model" / "open_clip_config.json").is_file()
    code, out = _run_main(monkeypatch, capsys, train)  # the run exists: resume it or choose another folder
    assert code == 2 and "exists" in out.err and "Traceback" not in out.err
    taxonomy = next(world.glob("taxonomy.*"))
    result = runner.invoke(app, ["predict", str(world / "images"), "--model", str(tmp_path / "run" / "model"),
                                 "--taxonomy", str(taxonomy), "--out", str(tmp_path / "p.jsonl"), "--rank", "genus"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and all(len(r["path"]) == 6 and r["species"] == "" for r in rows)  # JSONL: a list


def test_demo_help_states_the_settings_defaults():
    from taxonlens.demo import DemoSettings

    result = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "200"})
    d = DemoSettings()
    for value in (d.species, d.images_per_species, d.size, d.epochs):
        assert f"[default: ({value})]" in result.output


def test_vqa_build_leakage_answer_and_evaluate(tmp_path, monkeypatch, capsys):
    """Question sets from a synthworld, their leakage, a tiny LMM answering them consistently
    beside the image-blind control, and `evaluate` scoring the answers."""
    world = tmp_path / "world"
    assert runner.invoke(app, ["synthworld", "--out", str(world), "--random-tree", "--species", "8",
                               "--images-per-species", "1", "--size", "64"]).exit_code == 0
    taxonomy = str(next(world.glob("taxonomy.*")))
    bench = tmp_path / "bench.jsonl"
    result = runner.invoke(app, ["vqa", "build", str(world / "manifest.jsonl"), "--out", str(bench), "--taxonomy",
                                 taxonomy, "--mode", "path", "--options", "3"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "wrote 8 question sets" in result.output and "0 (0.0%) have a single consistent path" in result.output
    result = runner.invoke(app, ["vqa", "leakage", str(bench), "--taxonomy", taxonomy], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "records with 3 consistent paths" in result.output
    answers = tmp_path / "answers.jsonl"
    result = runner.invoke(app, ["vqa", "answer", str(bench), "--model", "tiny-qwen2.5-vl", "--out", str(answers),
                                 "--taxonomy", taxonomy, "--mode", "consistent"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "blind_control" in result.output and "leakage_free" in result.output
    result = runner.invoke(app, ["evaluate", str(bench), str(answers), "--format", "json", "--taxonomy", taxonomy])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["n"] == 8 and report["valid_path_pct"] == 100.0
    code, out = _run_main(monkeypatch, capsys, ["vqa", "answer", str(bench), "--model", "tiny-qwen2.5-vl", "--out",
                                                str(tmp_path / "a.jsonl"), "--mode", "vote"])
    assert code == 2 and "Invalid value for '--mode': 'vote' is not one of" in out.err  # before the model loads


def test_train_sft_then_grpo_with_tara_then_answer_with_each_model(tmp_path):
    world = tmp_path / "world"
    assert runner.invoke(app, ["synthworld", "--out", str(world), "--random-tree", "--species", "4",
                               "--images-per-species", "2", "--size", "32", "--nuisance", "0.2"]).exit_code == 0
    taxonomy = str(next(world.glob("taxonomy.*")))
    bench = tmp_path / "bench.jsonl"
    assert runner.invoke(app, ["vqa", "build", str(world / "manifest.jsonl"), "--out", str(bench), "--taxonomy",
                               taxonomy, "--mode", "path", "--options", "2"]).exit_code == 0
    result = runner.invoke(app, ["train", "sft", str(bench), "--out", str(tmp_path / "run"), "--epochs", "1",
                                 "--batch-size", "4", "--answer", "name", "--no-system", "--lora-targets",
                                 "language+head", "--taxonomy", taxonomy, "--val", str(bench)])
    assert result.exit_code == 0, result.output
    assert '"epoch": 1' in result.output and (tmp_path / "run" / "model" / "config.json").is_file()
    result = runner.invoke(app, ["train", "grpo", str(bench), "--out", str(tmp_path / "rl"), "--model",
                                 str(tmp_path / "run" / "model"), "--tara", "--shots", "1", "--taxonomy", taxonomy,
                                 "--questions-per-step", "2"])
    assert result.exit_code == 0, result.output
    assert "2 steps" in result.output and (tmp_path / "rl" / "model" / "config.json").is_file()  # 4 species, 1 shot
    rows = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("tara/label_loss" in r for r in rows)
    for model in (tmp_path / "run" / "model", tmp_path / "rl" / "model"):
        out = tmp_path / f"{model.parent.name}.jsonl"
        result = runner.invoke(app, ["vqa", "answer", str(bench), "--model", str(model), "--out", str(out),
                                     "--taxonomy", taxonomy, "--mode", "consistent", "--answer", "name",
                                     "--no-system"])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 8 and all(len(row["path"]) == 7 for row in rows)


def test_commands_name_a_missing_benchmark(monkeypatch, capsys, tmp_path):
    missing = str(tmp_path / "nothere.jsonl")
    for argv in (["vqa", "leakage", missing], ["train", "sft", missing, "--out", str(tmp_path / "r")],
                 ["vqa", "answer", missing, "--model", "tiny-idefics2", "--out", str(tmp_path / "a.jsonl")]):
        code, out = _run_main(monkeypatch, capsys, argv)
        assert code == 2 and f"benchmark file {missing} does not exist" in out.err, argv
