"""Contrastive training: multi-positive CLIP loss, deterministic captioned data, exact resume
after a kill, evaluation hook, saved model, and that training learns."""

import json
import warnings

import numpy as np
import pytest
import torch
from open_clip.loss import ClipLoss

from taxonlens.data import Record
from taxonlens.errors import DataError, TaxonlensError
from taxonlens.models.encoders import load_encoder
from taxonlens.models.text import FIXED_TEXT_TYPES
from taxonlens.synthworld import SynthWorld, random_taxonomy
from taxonlens.train import (
    CaptionedImages,
    CheckpointError,
    ContrastiveConfig,
    MultiPositiveClipLoss,
    as_examples,
    evaluate_zeroshot,
    synthworld_examples,
    train_contrastive,
)
from taxonlens.train.loop import cosine_with_warmup, epoch_batches

pytestmark = pytest.mark.filterwarnings("ignore:Sparse")


@pytest.fixture(scope="module")
def world():
    """6 species x 4 photos at 32 px: 24 images, 3 steps per epoch at batch 8."""
    return SynthWorld.create(random_taxonomy(6, seed=0), 6, 4, novel_fraction=0, size=32, seed=0)


@pytest.fixture(scope="module")
def examples(world):
    return synthworld_examples(world, None)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("tiny-clip")


def _config(tmp_path, **kw):
    base = {"out": str(tmp_path), "epochs": 2, "batch_size": 8, "lr": 1e-3, "text_type": "mixed", "threads": 1}
    return ContrastiveConfig(**(base | kw))


def _weights(result):
    return {k: v.clone() for k, v in result.model.model.state_dict().items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


# ------------------------------------------------------------------- loss
def _features(n, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1) for _ in range(2))


def test_loss_equals_clip_loss_when_every_taxon_is_distinct():
    img, txt = _features(6)
    scale = torch.tensor(10.0)
    expected = ClipLoss()(img, txt, scale)
    torch.testing.assert_close(MultiPositiveClipLoss()(img, txt, scale, torch.arange(6)), expected)
    torch.testing.assert_close(MultiPositiveClipLoss()(img, txt, scale), expected)


def test_loss_treats_same_taxon_captions_as_positives():
    img, txt = _features(4, seed=1)
    groups = torch.tensor([0, 0, 1, 2])
    scale = torch.tensor(5.0)
    got = MultiPositiveClipLoss()(img, txt, scale, groups)
    # by hand: each row's loss is minus the mean log-softmax over its positives
    logits = scale * img @ txt.T
    positives = [[0, 1], [0, 1], [2], [3]]

    def side(lg):
        lsm = torch.log_softmax(lg, dim=1)
        return -sum(lsm[i, p].mean() for i, p in enumerate(positives)) / 4

    torch.testing.assert_close(got, (side(logits) + side(logits.T)) / 2)
    # which photo of a species got which caption does not matter (it does for plain CLIP loss)
    swapped = txt[[1, 0, 2, 3]]
    torch.testing.assert_close(MultiPositiveClipLoss()(img, swapped, scale, groups), got)
    assert not torch.allclose(ClipLoss()(img, swapped, scale), ClipLoss()(img, txt, scale))


def test_identical_captions_need_no_special_treatment():
    """Photos of one species with the very same caption: the caption embeddings are equal,
    and the plain CLIP loss already equals the multi-positive one."""
    img, txt = _features(4, seed=2)
    txt = txt[[0, 0, 2, 3]]
    groups = torch.tensor([0, 0, 1, 2])
    scale = torch.tensor(7.0)
    torch.testing.assert_close(MultiPositiveClipLoss()(img, txt, scale, groups), ClipLoss()(img, txt, scale))


def test_other_captions_of_the_same_taxon_are_pulled_not_pushed():
    """Mixed text types: photo 0 is captioned by its taxonomic name, photo 1 (same species)
    by its common name. Plain CLIP loss pushes the common-name caption away from photo 0;
    the multi-positive loss pulls it towards it."""
    e = torch.eye(4)
    img, txt = e[[0, 1, 2]], e[[0, 3, 2]].clone().requires_grad_(True)
    scale = torch.tensor(10.0)

    def pull_towards_photo0(loss):
        (grad,) = torch.autograd.grad(loss, txt)
        return float(-grad[1] @ img[0])  # a gradient step's change of caption 1 along photo 0

    assert pull_towards_photo0(MultiPositiveClipLoss()(img, txt, scale, torch.tensor([0, 0, 1]))) > 0
    assert pull_towards_photo0(ClipLoss()(img, txt, scale)) < 0


# ------------------------------------------------------------------- data
def test_as_examples_accepts_records_and_tuples(examples):
    image = examples[0].image
    got = as_examples([Record("a.png", ("A", "B"), common_name="bee"), (image, ["A", "C"]), ("b.png", ("A",), None)])
    assert [(e.path, e.common_name) for e in got] == [(("A", "B"), "bee"), (("A", "C"), None), (("A",), None)]
    with pytest.raises(DataError, match="no taxon path"):
        as_examples([Record("a.png")])
    with pytest.raises(DataError, match="expected a Record"):
        as_examples(["a.png"])


def test_captions_and_augmentations_are_pure_functions_of_seed_epoch_index(examples, encoder):
    ds = CaptionedImages(examples, encoder.train_transform, "mixed", seed=3)
    ds.set_epoch(1)
    state = torch.get_rng_state()
    first = [ds[i] for i in range(len(ds))]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    again = CaptionedImages(examples, encoder.train_transform, "mixed", seed=3)
    again.set_epoch(1)
    for i in (0, 7, 23):
        assert again[i][1] == first[i][1] and torch.equal(again[i][0], first[i][0])
    ds.set_epoch(2)
    second = [ds[i] for i in range(len(ds))]
    assert [c for _, c, _ in first] != [c for _, c, _ in second]
    assert not torch.equal(first[0][0], second[0][0])  # a new crop every epoch
    # mixed draws several caption types
    assert len({c for _, c, _ in first + second}) > 6
    # groups number the species, equal for photos of one species
    labels = [ex.path for ex in examples]
    assert all((first[i][2] == first[j][2]) == (labels[i] == labels[j]) for i in range(24) for j in range(24))


def test_fixed_text_type_gives_one_caption_per_species(examples, encoder):
    for text_type in FIXED_TEXT_TYPES:
        ds = CaptionedImages(examples, encoder.preprocess, text_type)
        assert len({ds.caption(i) for i in range(len(ds))}) == 6


def test_epoch_batches_shuffle_per_epoch_and_drop_the_tail():
    a, b = epoch_batches(10, 4, 0, 0), epoch_batches(10, 4, 0, 1)
    assert [len(x) for x in a] == [4, 4] and len({i for batch in a for i in batch}) == 8
    assert a != b and a == epoch_batches(10, 4, 0, 0)
    assert [len(x) for x in epoch_batches(3, 8, 0, 0)] == [3]


def test_cosine_schedule_warms_up_then_decays():
    f = cosine_with_warmup(10, 2)
    assert [f(0), f(1), f(2)] == [0.5, 1.0, 1.0]
    assert f(6) == pytest.approx(0.5) and f(9) < 0.05


# -------------------------------------------------------------- training
def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, examples):
    straight = train_contrastive(_config(tmp_path / "straight"), examples, examples[:12])

    class Killed(Exception):
        pass

    def kill_at(step):
        def progress(log):
            if log.step == step:
                raise Killed

        return progress

    # killed in the first step of epoch 2: resumes from the epoch-1 checkpoint
    with pytest.raises(Killed):
        train_contrastive(_config(tmp_path / "epoch"), examples, examples[:12], progress=kill_at(4))
    with pytest.raises(CheckpointError, match="exists"):
        train_contrastive(_config(tmp_path / "epoch"), examples, examples[:12])
    resumed = train_contrastive(_config(tmp_path / "epoch"), examples, examples[:12], resume=True)
    _assert_same(_weights(resumed), _weights(straight))
    assert resumed.steps == straight.steps == 6

    # killed mid-epoch, after the step-4 checkpoint; a different worker count changes nothing
    with pytest.raises(Killed):
        train_contrastive(_config(tmp_path / "mid", checkpoint_every=2), examples, examples[:12],
                          progress=kill_at(5))
    resumed = train_contrastive(_config(tmp_path / "mid", checkpoint_every=2, num_workers=1), examples,
                                examples[:12], resume=True)
    _assert_same(_weights(resumed), _weights(straight))

    # one metrics line per epoch, the same losses as the uninterrupted run
    rows = [json.loads(line) for line in (tmp_path / "mid" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["train_loss"] for r in rows] == pytest.approx([m["train_loss"] for m in straight.metrics], abs=1e-6)
    assert set(rows[1]["val"]) == {"n", "text_type", "leaf_acc", "rank_acc"} and rows[1]["val"]["n"] == 12


def test_resume_refuses_other_settings_or_data(tmp_path, examples):
    train_contrastive(_config(tmp_path, epochs=1, eval_every=0), examples)
    with pytest.raises(CheckpointError, match=r"lr: 0.001 -> 0.002"):
        train_contrastive(_config(tmp_path, epochs=1, lr=2e-3), examples, resume=True)
    with pytest.raises(CheckpointError, match="other data"):
        train_contrastive(_config(tmp_path, epochs=1, eval_every=0), examples[:20], resume=True)
    # settings that do not change the weights may differ; a finished run just returns
    done = train_contrastive(_config(tmp_path, epochs=1, eval_every=3, threads=1), examples, resume=True)
    assert done.steps == 3 and len(done.metrics) == 1


def test_saved_model_loads_and_evaluation_reports_every_rank(tmp_path, world, examples):
    result = train_contrastive(_config(tmp_path, epochs=1, text_type="scientific"), examples, examples,
                               taxonomy=world.taxonomy)
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "config.json").is_file()
    loaded = load_encoder(str(result.model_dir))
    assert loaded.fingerprint() == result.model.fingerprint()
    texts = ["a photo of x.", "a photo of y."]
    torch.testing.assert_close(loaded.encode_texts(texts), result.model.encode_texts(texts))
    val = result.metrics[-1]["val"]
    assert val["text_type"] == "scientific" and list(val["rank_acc"]) == list(world.taxonomy.ranks)
    assert val == evaluate_zeroshot(loaded, examples, world.taxonomy, "scientific")


def test_evaluation_names_images_outside_the_taxonomy(encoder, world, examples):
    with pytest.raises(DataError, match="not a class"):
        evaluate_zeroshot(encoder, [(examples[0].image, ("Nowhere", "Nothing"))], world.taxonomy)


def test_config_rejects_bad_settings():
    with pytest.raises(TaxonlensError, match="unknown text type"):
        ContrastiveConfig(text_type="latin")
    with pytest.raises(TaxonlensError, match="evaluation text type"):
        ContrastiveConfig(eval_text_type="mixed")
    with pytest.raises(TaxonlensError, match="batch size"):
        ContrastiveConfig(batch_size=1)


def test_training_learns(tmp_path):
    """8 species x 10 photos: the loss falls and zero-shot accuracy on the training photos
    rises from chance (12.5%) to, measured over seeds 0-2, at least LEARN_FLOOR."""
    world = SynthWorld.create(random_taxonomy(8, seed=0), 8, 10, novel_fraction=0, size=32, seed=0)
    train = synthworld_examples(world, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = evaluate_zeroshot(load_encoder("tiny-clip"), train, world.taxonomy)
    cfg = ContrastiveConfig(out=str(tmp_path), epochs=LEARN_EPOCHS, batch_size=16, lr=2e-3, weight_decay=0.0,
                            eval_every=0, threads=1)
    result = train_contrastive(cfg, train)
    after = evaluate_zeroshot(result.model, train, world.taxonomy)
    losses = [m["train_loss"] for m in result.metrics]
    assert np.mean(losses[-3:]) < losses[0] - 0.5
    assert before["leaf_acc"] < 30
    assert after["leaf_acc"] >= LEARN_FLOOR


LEARN_EPOCHS = 15
LEARN_FLOOR = 40.0
