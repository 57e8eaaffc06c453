"""SynthWorld: species choice, splits, novel species, determinism, disk round trip, difficulty."""

import numpy as np
import pytest

from taxonlens.data import load_image, read_manifest
from taxonlens.errors import DataError
from taxonlens.index import VectorMemory
from taxonlens.recognize.pixels import pixel_features
from taxonlens.synthworld import SynthWorld, random_taxonomy, select_species
from taxonlens.taxonomy import load_taxonomy


@pytest.fixture(scope="module")
def plants(builtin_taxonomies):
    return load_taxonomy(builtin_taxonomies / "inat21_plantae.json")


@pytest.fixture(scope="module")
def world(plants):
    return SynthWorld.create(plants, n_species=40, images_per_species=10, novel_fraction=0.2, size=32, seed=7)


def test_species_come_in_sibling_clusters(plants):
    chosen = select_species(plants, 60, seed=0)
    assert len(set(chosen.tolist())) == 60
    genera = plants.parent[plants.leaves[chosen]]
    per_genus = np.unique(genera, return_counts=True)[1]
    assert per_genus.max() <= 4 and (per_genus >= 2).mean() > 0.8


def test_novel_species_have_seen_relatives(world):
    tax = world.taxonomy
    assert len(world.novel) == round(0.2 * tax.n_leaves)
    seen = set(range(tax.n_leaves)) - set(world.novel)
    for leaf in world.novel:
        genus = tax.parent[tax.leaves[leaf]]
        siblings = set(tax.leaves_under(genus).tolist()) - {leaf}
        assert siblings & seen, "a novel species must keep a seen sibling"


def test_splits_are_disjoint_and_complete(world):
    n = world.taxonomy.n_leaves * world.images_per_species
    per_split = {s: world.index(s) for s in ("train", "val", "test", "novel")}
    assert sum(len(v) for v in per_split.values()) == n
    novel_leaves = {leaf for leaf, _ in per_split["novel"]}
    assert novel_leaves == set(world.novel)
    for s in ("train", "val", "test"):
        assert not {leaf for leaf, _ in per_split[s]} & novel_leaves
    assert len(per_split["train"]) == 6 * (world.taxonomy.n_leaves - len(world.novel))


def test_photos_are_deterministic_and_vary(world):
    a, b = world.photo(3, 1), world.photo(3, 1)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.image.size == (32, 32) and a.image.mode == "RGB"
    c = world.photo(3, 2)
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))
    for name in ("body plan", "pattern", "proportions"):  # same species, same traits; what a photo shows varies
        assert a.attributes[name] == c.attributes[name]
    descriptions = {world.photo(3, k).description for k in range(world.images_per_species)}
    assert a.description in descriptions and len(descriptions) > 1


def test_image_source_gives_each_record_its_photo_once_rendered(world):
    load = world.image_source()
    record = world.records("train")[5]
    leaf, k = next((leaf, k) for leaf, k in world.index("train") if world.image_name(leaf, k) == record.image)
    assert np.array_equal(np.asarray(load(record)), np.asarray(world.photo(leaf, k).image))
    assert load(record) is load(record)  # kept in memory
    with pytest.raises(DataError, match="is not a photo of this synthworld"):
        load(world.records("train")[0].__class__("elsewhere.png", record.path))


def test_dataset_matches_records(world):
    ds = world.dataset("test", transform=lambda im: np.asarray(im))
    records = world.records("test")
    assert len(ds) == len(records) == len(ds.labels())
    x, y = ds[0]
    assert x.shape == (32, 32, 3)
    assert records[0].path == world.taxonomy.path_names(int(world.taxonomy.leaves[y]))
    import torch.utils.data

    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=list)))
    assert len(batch) == 4


def test_write_round_trip_and_resume(world, tmp_path):
    small = SynthWorld(world.taxonomy.subset(range(4)), images_per_species=3, size=32, seed=7)
    manifest = small.write(tmp_path)
    records = read_manifest(manifest, taxonomy=load_taxonomy(tmp_path / "taxonomy.json"))
    assert len(records) == 12
    first = records[0]
    assert np.array_equal(np.asarray(load_image(first.image)), np.asarray(small.photo(0, 0).image))
    assert first.attributes["description"].startswith("an organism whose body plan is ")
    # a killed run: one photo missing, one half-written temp file; re-running completes it
    victim = tmp_path / small.image_name(1, 2)
    victim.unlink()
    victim.with_suffix(".tmp").write_bytes(b"partial")
    calls = []
    small.write(tmp_path, progress=calls.append)
    assert victim.exists() and len(calls) == 12
    assert np.array_equal(np.asarray(load_image(victim)), np.asarray(small.photo(1, 2).image))


def test_no_novel_split_when_fraction_is_zero(plants):
    assert SynthWorld.create(plants, n_species=20, images_per_species=2, novel_fraction=0.0).novel == frozenset()


def test_bad_sizes_are_refused(plants):
    with pytest.raises(DataError, match="species >= 2"):
        SynthWorld.create(plants, n_species=1)


def test_random_taxonomy_shape():
    tax = random_taxonomy(1000, seed=2)
    counts = tax.summary()["taxa_per_rank"]
    assert counts["species"] == 1000 and counts["kingdom"] == 3
    assert list(counts.values()) == sorted(counts.values())
    assert random_taxonomy(1000, seed=2) == tax and random_taxonomy(1000, seed=3) != tax


def test_pixel_nearest_neighbour_is_far_from_perfect_but_beats_chance(builtin_taxonomies):
    """The world is hard: raw-pixel 1-NN learns something, nowhere near everything."""
    tax = load_taxonomy(builtin_taxonomies / "inat21_plantae.json")
    world = SynthWorld.create(tax, n_species=30, images_per_species=12, novel_fraction=0.0, size=32, seed=1)
    train, test = world.dataset("train"), world.dataset("test")
    memory = VectorMemory.build(pixel_features(img for img, _ in train), train.labels())
    nearest, _ = memory.retrieve(pixel_features(img for img, _ in test), 1)
    acc = (nearest[:, 0] == test.labels()).mean()
    chance = 1 / world.taxonomy.n_leaves
    # measured: 7 of 90 right (7.8%, 2.3x chance); seeds 0-3 give 2.0x to 4.7x chance
    assert 1.8 * chance < acc < 0.6, acc

