"""The hierarchical-VQA benchmark JSONL reader and writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taxonlens.data import (
    Record,
    VQARecord,
    benchmark_taxonomy,
    read_vqa_benchmark,
    taxonomy_or_benchmark,
    write_vqa_benchmark,
)
from taxonlens.errors import DataError
from taxonlens.taxonomy import STANDARD_RANKS, load_taxonomy

BENCHMARK = "benchmarks/inat21_plantae_similar_choice.jsonl"


@pytest.fixture(scope="module")
def benchmark(real_data: Path) -> list[VQARecord]:
    return read_vqa_benchmark(real_data / BENCHMARK)


def test_real_benchmark_count(builtin_taxonomies: Path, real_data: Path, benchmark: list[VQARecord]) -> None:
    lines = (real_data / BENCHMARK).read_text(encoding="utf-8").splitlines()
    plants = json.loads((builtin_taxonomies / "inat21_plantae.json").read_text())
    # The data README says 4,270 (what `wc -l` prints: the last line has no newline);
    # the file holds one question per plant species, 4,271.
    assert len(benchmark) == len([s for s in lines if s.strip()]) == len(plants) == 4271
    assert {r.label for r in benchmark} == set(plants)
    assert [r.line for r in benchmark] == list(range(1, 4272))


def test_real_benchmark_levels_and_choices(real_data: Path, benchmark: list[VQARecord]) -> None:
    first = json.loads((real_data / BENCHMARK).read_text(encoding="utf-8").splitlines()[0])
    r = benchmark[0]
    assert (r.image, r.label, r.split) == (first["image"], "Houstonia purpurea", "test")
    assert r.levels == ("plantae", "tracheophyta", "magnoliopsida", "gentianales", "rubiaceae", "houstonia",
                        "houstonia purpurea")
    assert r.choices == tuple(tuple(first[f"choices_level{k}"]) for k in range(1, 8))
    assert r.to_record() == Record(r.image, r.levels, "test")
    for r in benchmark:
        assert len(r.levels) == len(r.choices) == 7
        assert r.choices[0] == ("plantae",)  # level 1 offers no real choice
        assert all(len(c) == 4 and len(set(c)) == 4 for c in r.choices[1:])
        assert all(t in c for t, c in zip(r.levels, r.choices, strict=True))


def test_benchmark_taxonomy_is_the_plant_taxonomy_in_lower_case(builtin_taxonomies: Path, real_data: Path) -> None:
    from_vqa = benchmark_taxonomy(real_data / BENCHMARK)
    plants = json.loads((builtin_taxonomies / "inat21_plantae.json").read_text())
    assert from_vqa.ranks == STANDARD_RANKS
    assert sorted(from_vqa.leaf_paths()) == sorted(tuple(n.lower() for n in p) for p in plants.values())


def test_taxonomy_or_benchmark_reads_a_benchmark_a_file_or_a_builtin_name(
    builtin_taxonomies: Path, real_data: Path
) -> None:
    assert taxonomy_or_benchmark(real_data / BENCHMARK) == benchmark_taxonomy(real_data / BENCHMARK)
    assert taxonomy_or_benchmark(str(builtin_taxonomies / "imagenet_animal.json")) == load_taxonomy("imagenet-animal")
    assert taxonomy_or_benchmark("imagenet-animal") == load_taxonomy("imagenet-animal")


def test_round_trip(tmp_path: Path, benchmark: list[VQARecord]) -> None:
    out = write_vqa_benchmark(benchmark[:50], tmp_path / "b.jsonl")
    assert read_vqa_benchmark(out) == benchmark[:50]


def test_round_trip_of_variable_depth_and_unicode(tmp_path: Path) -> None:
    records = [
        VQARecord("a.jpg", "Crépis", "val", ("plantae", "crépis"), (("plantae",), ("crépis", "rosa")), 1),
        VQARecord("b.jpg", "crab", "test", ("animal", "arthropod", "crab"),
                  (("animal",), ("arthropod", "chordate"), ("crab", "crayfish", "lobster")), 2),
    ]
    assert read_vqa_benchmark(write_vqa_benchmark(records, tmp_path / "b.jsonl")) == records


def test_defaults_and_case_insensitive_truth(tmp_path: Path) -> None:
    f = tmp_path / "b.jsonl"
    f.write_text('\n{"image": "a.jpg", "level1": "Plantae", "choices_level1": ["plantae"], "level2": "rosa"}\n')
    (r,) = read_vqa_benchmark(f)
    assert (r.label, r.split, r.line) == ("rosa", "test", 2)
    assert r.choices == (("plantae",), ("rosa",))


GOOD = {"image": "a.jpg", "label": "x", "level1": "plantae", "choices_level1": ["plantae"]}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"image": "b.jpg", "level1": ', ":3: not valid JSON"),
        ('["b.jpg"]', ":3: expected a JSON object per line, got list"),
        ('{"level1": "plantae"}', ":3: missing key 'image'"),
        ('{"image": "b.jpg", "label": "x"}', ":3: no 'levelK' keys"),
        ('{"image": "b.jpg", "level1": "a", "level3": "c"}', ":3: levels [1, 3] are not consecutive from level1"),
        ('{"image": "b.jpg", "level1": " "}', ":3: level1 must be a non-empty name, got ' '"),
        ('{"image": "b.jpg", "level1": "a", "choices_level1": "a"}', ":3: choices_level1 must be a list of names"),
        ('{"image": "b.jpg", "level1": "a", "choices_level1": ["b", "c"]}',
         ":3: the truth 'a' of level1 is not among its choices ['b', 'c']"),
    ],
)
def test_malformed_line_names_the_line(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "b.jsonl"
    f.write_text(f"{json.dumps(GOOD)}\n\n{line}\n{json.dumps(GOOD)}\n")
    with pytest.raises(DataError) as e:
        read_vqa_benchmark(f)
    assert str(e.value).startswith(f"{f}{message}"), str(e.value)


def test_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_vqa_benchmark(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n \n")
    with pytest.raises(DataError, match="empty benchmark file"):
        read_vqa_benchmark(tmp_path / "empty.jsonl")
