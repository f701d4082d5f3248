"""The `paper-*` presets against the authors' released configuration, and the options they switch on: the authors'
sampler, PRISM start-up, MCL normalisation, bank start, SoftTriple's proxy learning rate, max pooling, crop scale
and BN-Inception weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from cli_checks import one_line_error
from fakes import PRISM_LISTS

from noisekit.errors import NoisekitError
from prism.backbones.bninception import BNInception
from prism.cli import app
from prism.config import DataShape, load_config, presets, resolve
from prism.data import CropFlip
from prism.filters.prism import PrismSelector
from prism.memory import FeatureBank
from prism.methods.mcl import MemoryContrastiveLoss, contrastive_terms
from prism.models import build_model
from prism.samplers import ChunkBatches, PKBatches
from prism.train import load_checkpoint, train

AUTHORS_CONFIG = yaml.safe_load((PRISM_LISTS / "configs" / "CARSN" / "MemoryContrastiveLossPRISM.yaml").read_text())
# ret_benchmark/config/defaults.py at commit 06e7fa2, the values the CARS-98N config leaves to it
AUTHORS_DEFAULTS = {"CROP_SCALE": [0.2, 1], "CROP_SIZE": [224, 224], "WARM_UP": 0, "CENTER_LR": 0.1}
PAPER = ("paper-cars", "paper-cub", "paper-sop", "paper-cars98n", "paper-food101n")
SHAPE = DataShape(side=500, classes=98, images=8054)


def _preset(name: str, **flags) -> object:
    return resolve(load_config(None, flags, preset=name), SHAPE)


def test_presets_are_listed(runner) -> None:
    assert sorted(presets()) == sorted((*PAPER, "pretrained-cpu"))
    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.output.splitlines()[:-1]] == sorted((*PAPER, "pretrained-cpu"))


@pytest.mark.parametrize("name", PAPER)
def test_preset_values_are_the_authors(name: str) -> None:
    c, cfg = _preset(name), AUTHORS_CONFIG
    assert c.lr == cfg["SOLVER"]["BASE_LR"] and c.weight_decay == cfg["SOLVER"]["WEIGHT_DECAY"]
    assert c.iterations == cfg["SOLVER"]["MAX_ITERS"]
    assert c.classes_per_batch * c.samples_per_class == cfg["DATA"]["TRAIN_BATCHSIZE"]
    assert c.samples_per_class == cfg["DATA"]["NUM_INSTANCES"]
    assert c.window == cfg["NOISE"]["WINDOW_SIZE"] and c.filter_rate == cfg["NOISE"]["NOISE_RATE"]
    assert c.bank_start == cfg["XBM"]["START_ITERATION"] and c.memory_weight == cfg["XBM"]["WEIGHT"]
    assert c.bank_size == 0  # the training set's size (XBM.SIZE 9500 for the 9,558 CARS-98N images)
    assert c.eval_every == cfg["VALIDATION"]["VERBOSE"]
    assert c.crop_scale == AUTHORS_DEFAULTS["CROP_SCALE"][0] and c.image_size == AUTHORS_DEFAULTS["CROP_SIZE"][0]
    assert c.warmup == AUTHORS_DEFAULTS["WARM_UP"]
    assert (c.method, c.filter, c.mode, c.weights) == ("mcl", "prism", "centre", "imagenet")
    assert (c.sampler, c.startup, c.mcl_norm, c.pooling) == ("authors", "authors", "authors", "max")
    assert (c.val_fraction, c.select) == (0.0, "last")
    if name in ("paper-cars", "paper-cub", "paper-cars98n"):
        assert (c.arch, c.embed_dim) == (cfg["MODEL"]["BACKBONE"]["NAME"], cfg["MODEL"]["HEAD"]["DIM"])
    else:
        assert (c.arch, c.embed_dim) == ("resnet50", 128)
    assert c.dataset.split("/")[0] == name.removeprefix("paper-")


def test_flags_override_a_preset_and_softtriple_gets_the_authors_proxy_lr() -> None:
    c = _preset("paper-cars", dataset="cub/symmetric-0.2", filter_rate=0.2, loss="softtriple")
    assert (c.dataset, c.filter_rate, c.lr) == ("cub/symmetric-0.2", 0.2, 3e-5)
    assert c.proxy_lr == AUTHORS_DEFAULTS["CENTER_LR"]
    assert _preset("paper-cars", loss="softtriple", proxy_lr=0.5).proxy_lr == 0.5


def test_unknown_preset_is_one_line(runner) -> None:
    one_line_error(runner.invoke(app, ["train", "--preset", "paper-mnist"]), "--preset 'paper-mnist'", "paper-cars")
    with pytest.raises(NoisekitError, match="--sampler must be one of uniform, authors"):
        load_config(None, {"sampler": "random"})


def test_config_values_are_checked_against_each_option_type(runner, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    for line, needle in [("iterations: x", "iterations must be an integer, got 'x'"),
                         ("compile: 1", "compile must be true or false, got 1"),
                         ("lr: fast", "lr must be a number, got 'fast'"),
                         ("seed: 1.5", "seed must be an integer, got 1.5"),
                         ("dataset: 5", "dataset must be text, got 5")]:  # fmt: skip
        config.write_text(f"{line}\n")
        one_line_error(runner.invoke(app, ["train", "--config", str(config)]), f"{config}: {needle}")
    # YAML reads 3e-4 (no dot) as text: a float option takes it as the number; None where an option allows it
    config.write_text("lr: 3e-4\nfilter_rate: 0\nwarmup: null\n")
    loaded = load_config(config, {})
    assert (loaded.lr, loaded.filter_rate, loaded.warmup) == (3e-4, 0.0, None)
    assert isinstance(loaded.filter_rate, float)


# --- the authors' sampler --------------------------------------------------------------------------------------


def _labels(sizes: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


def test_chunk_batches_take_one_chunk_of_p_distinct_classes() -> None:
    labels = _labels([4, 4, 8, 8, 3, 5, 1, 12])
    batches = list(ChunkBatches(labels, p=3, k=4, seed=0, start=0, stop=40))
    assert len(batches) == 40
    for batch in batches:
        rows = np.array([row for row, _ in batch])
        classes = labels[rows].reshape(3, 4)
        assert (classes == classes[:, :1]).all() and len(set(classes[:, 0])) == 3  # 3 distinct classes x 4 rows
    one = [batch for batch in batches if 6 in labels[[r for r, _ in batch]]]
    assert one and all([r for r, _ in b if labels[r] == 6] == [32] * 4 for b in one)  # a one-image class: 4 copies
    # the same seed draws the same batches; a start replays the draws before it
    assert batches == list(ChunkBatches(labels, p=3, k=4, seed=0, start=0, stop=40))
    assert batches[17:] == list(ChunkBatches(labels, p=3, k=4, seed=0, start=17, stop=40))
    assert batches != list(ChunkBatches(labels, p=3, k=4, seed=1, start=0, stop=40))


def test_chunk_batches_draw_classes_in_proportion_to_their_chunks() -> None:
    # ten classes of one chunk and one of 100: the big one is in the first batch of P = 2 with probability
    # 1 - (10/110)(9/109) = 0.9925 (uniformly over classes it would be 2/11)
    labels = _labels([4] * 10 + [400])
    hits = sum(10 in labels[[r for r, _ in next(iter(ChunkBatches(labels, p=2, k=4, seed=s, start=0, stop=1)))]]
               for s in range(200))  # fmt: skip
    uniform = sum(10 in labels[[r for r, _ in PKBatches(labels, p=2, k=4, seed=s, start=0, stop=1).batch(0)]]
                  for s in range(200))  # fmt: skip
    assert hits >= 190 and uniform <= 60


def test_chunk_batches_use_every_chunk_of_a_pass_once() -> None:
    sizes = [4, 4, 8, 8, 3, 5]  # chunks 1, 1, 2, 2, 1, 2 = 9; P = 3 takes 3 batches before fewer than 3 classes remain
    labels = _labels(sizes)
    first_pass = list(ChunkBatches(labels, p=3, k=4, seed=5, start=0, stop=3))
    drawn = np.bincount(labels[[r for b in first_pass for r, _ in b]], minlength=6) // 4
    chunks = -(-np.array(sizes) // 4)
    assert (drawn <= chunks).all() and (chunks - drawn).sum() == 0
    rows = [r for b in first_pass for r, _ in b]
    assert set(rows) == set(range(len(labels)))  # every image of the pass trained


def test_too_few_classes_for_the_authors_sampler() -> None:
    with pytest.raises(NoisekitError, match="P x K = 4 x 4 is larger than the data: 3 training classes exist"):
        ChunkBatches(_labels([4, 4, 4]), p=4, k=4, seed=0, start=0, stop=1)


# --- PRISM start-up, MCL normalisation, bank start --------------------------------------------------------------


def test_authors_startup_counts_centreless_classes_and_cuts_by_rank() -> None:
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    empty = FeatureBank(32, 8, num_classes=5)
    ours = PrismSelector(5, 8, rate=0.5)
    authors = PrismSelector(5, 8, rate=0.5, startup="authors")
    assert ours(feats, labels, empty).keep.all() and authors(feats, labels, empty).keep.all()  # empty bank: keep all
    bank = FeatureBank(32, 8, num_classes=5)
    bank.enqueue(feats[:2], labels[:2])  # only class 0 is in the bank
    for selector in (ours, authors):
        selector.update(bank, labels[:2], torch.ones(2, dtype=torch.bool))
    assert not authors.has_centre.any()  # the authors' loss does not refresh centres on an empty-bank step
    authors.has_centre[0], authors.centres[0] = True, ours.centres[0]
    a = authors(feats, labels, bank)
    o = ours(feats, labels, bank)
    # ours: class 0 alone in the softmax -> P = 1 for everyone; samples of classes without a centre are always kept
    assert torch.allclose(o.p, torch.ones(6)) and o.keep[2:].all() and int(o.keep.sum()) == 4
    # the authors': 4 classes without a centre enter with logit 0; others' P is 1; the rank cut drops floor(0.5 * 6)
    logit = feats[:2] @ ours.centres[0]
    expected = logit.exp() / (logit.exp() + 4)
    assert torch.allclose(a.p[:2], expected, atol=1e-6) and torch.allclose(a.p[2:], torch.ones(4))
    assert a.keep.tolist() == [False, False, False, True, True, True]  # the two lowest, then position breaks the tie


def test_mcl_authors_normalisation() -> None:
    g = torch.Generator().manual_seed(1)
    emb = F.normalize(torch.randn(10, 8, generator=g), dim=1)
    labels = torch.randint(0, 3, (10,), generator=g)
    keep = torch.tensor([True] * 6 + [False] * 4)
    bank = FeatureBank(20, 8)
    bank.enqueue(F.normalize(torch.randn(12, 8, generator=g), dim=1), torch.randint(0, 3, (12,), generator=g))
    valid = bank.labels >= 0
    batch = contrastive_terms(emb, labels, emb, labels, keep, keep, exclude_self=True)
    memory = contrastive_terms(emb, labels, bank.feats, bank.labels, keep, valid, exclude_self=False)
    ours = MemoryContrastiveLoss()(emb, labels, keep, bank)
    theirs = MemoryContrastiveLoss(norm="authors")(emb, labels, keep, bank)
    assert torch.allclose(ours, (batch + memory) / 6) and torch.allclose(theirs, batch / 6 + memory / 10)
    # the authors' plain MCL enqueues first: the bank term also pairs the batch with itself (self-pairs excluded)
    everyone = torch.ones(10, dtype=torch.bool)
    plain = MemoryContrastiveLoss(norm="authors", self_in_bank=True)(emb, labels, everyone, bank)
    with_batch = FeatureBank(32, 8)
    with_batch.enqueue(bank.feats[valid], bank.labels[valid])
    with_batch.enqueue(emb, labels)
    pairs = contrastive_terms(emb, labels, with_batch.feats, with_batch.labels, everyone, with_batch.labels >= 0,
                              exclude_self=False) - (1 - (emb * emb).sum(1)).sum()  # fmt: skip
    full_batch = contrastive_terms(emb, labels, emb, labels, everyone, everyone, exclude_self=True)
    assert torch.allclose(plain, full_batch / 10 + pairs / 10, atol=1e-5)


def test_paper_preset_trains_with_bank_start_and_softtriple_proxies(noisy_digits: str, tmp_path: Path) -> None:
    small = dict(dataset=noisy_digits, arch="small_cnn", image_size=8, classes_per_batch=5, samples_per_class=4,
                 iterations=8, eval_every=4, log_every=2, trace=True)  # fmt: skip
    config = load_config(None, {**small, "bank_start": 3, "out": str(tmp_path / "mcl")}, preset="paper-cars")
    summary = train(config, progress=False)
    assert summary["selected_by"] == "last" and summary["validation"] == "none"
    assert summary["selection_started"] == 3  # the batch-only start selects nothing
    steps = torch.load(tmp_path / "mcl" / "trace.pt", weights_only=True)["steps"]
    filled = [int((s["bank_labels"] >= 0).sum()) for s in steps]
    assert filled[:3] == [0, 0, 0] and filled[3] == 20  # no bank (and no selection) before iteration 3
    assert all(s["keep"].all() for s in steps[:4])  # iteration 3: first bank step, the bank was empty: keep all
    assert not all(s["keep"].all() for s in steps[4:])  # the authors' rank cut from the next step
    saved = yaml.safe_load((tmp_path / "mcl" / "config.yaml").read_text())
    assert (saved["sampler"], saved["startup"], saved["mcl_norm"], saved["bank_start"]) == ("authors",) * 3 + (3,)

    config = load_config(None, {**small, "loss": "softtriple", "out": str(tmp_path / "st")}, preset="paper-cars")
    train(config, progress=False)
    groups = load_checkpoint(tmp_path / "st" / "last.pt")["optimizer"]["param_groups"]
    assert [(g["initial_lr"], g["weight_decay"]) for g in groups] == [(3e-5, 5e-4), (0.1, 0.0)]


def test_nan_validation_keeps_the_last_model(noisy_digits: str, home: Path, tmp_path: Path) -> None:
    from noisekit.manifest import read_manifest, write_manifest
    from noisekit.paths import manifest_path

    manifest = read_manifest(manifest_path("digits", "symmetric-0.5"))
    frame = manifest.frame.copy()
    first_of_class = frame[frame["split"] == "train"].groupby("label").head(1).index
    frame.loc[first_of_class, "split"] = "val"  # one validation image per class: MAP@R is undefined
    write_manifest(manifest.replace(frame, variant="val-singletons"), manifest_path("digits", "val-singletons"))
    config = load_config(None, dict(dataset="digits/val-singletons", classes_per_batch=5, samples_per_class=4,
                                    iterations=6, eval_every=2, select="val", out=str(tmp_path / "run")))  # fmt: skip
    summary = train(config, progress=False)
    assert summary["best_iteration"] == 6 and summary["selected_by"].startswith("last (validation")
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 3 and all(np.isnan(row["mean_average_precision_at_r"]) for row in history)


# --- backbones and augmentation ----------------------------------------------------------------------------------


def test_bninception_embedder_from_a_released_state_dict(tmp_path: Path) -> None:
    released = {k: torch.rand_like(v) + 0.5 if k.endswith("running_var") else torch.randn_like(v) * 0.1
                for k, v in BNInception().state_dict().items() if not k.endswith("num_batches_tracked")}  # fmt: skip
    released["last_linear.weight"], released["last_linear.bias"] = torch.randn(1000, 1024), torch.randn(1000)
    path = tmp_path / "bn_inception-52deb4733.pth"
    torch.save(released, path)
    model = build_model("bninception", embed_dim=512, weights=str(path), seed=0, pooling="max").eval()
    assert torch.equal(model.backbone.state_dict()["inception_5b_pool_proj.weight"],
                       released["inception_5b_pool_proj.weight"])  # fmt: skip
    with torch.no_grad():
        emb = model(torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8))
    assert emb.shape == (2, 512) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


def test_bninception_offline_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOISEKIT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("prism.backbones.bninception.AUTHORS_CACHE", tmp_path / "none")
    with pytest.raises(NoisekitError, match=r"BN-Inception weights .* place bn_inception-52deb4733.pth from http"):
        build_model("bninception", embed_dim=512, weights="imagenet", seed=0)


def test_max_pooling_and_crop_scale() -> None:
    model = build_model("resnet18", embed_dim=16, weights="random", seed=0, pooling="max")
    assert isinstance(model.backbone.avgpool, torch.nn.AdaptiveMaxPool2d)
    crop = CropFlip(32, 0.2)
    torch.manual_seed(0)
    areas = [(b[2] * b[3]) / (100 * 80) for b, _ in (crop.draw(100, 80) for _ in range(300))]
    assert min(areas) >= 0.2 - 0.02 and min(areas) < 0.3  # the crop keeps at least 20% of the area (rounding)


def test_resume_check_reads_options_newer_than_the_checkpoint_as_defaults(tmp_path: Path) -> None:
    from prism.checkpoint import check_same_config

    config = load_config(None, {"dataset": "digits/symmetric-0.5"})
    older = {k: v for k, v in config.to_dict().items() if k not in ("startup", "sampler", "mcl_norm", "bank_start")}
    check_same_config(older, config, tmp_path / "last.pt")  # written before those options existed: their defaults
    with pytest.raises(NoisekitError, match=r"startup: 'ours' there, 'authors' now"):
        check_same_config(older, config.replace(startup="authors"), tmp_path / "last.pt")


def test_bninception_image_size_must_be_a_multiple_of_32() -> None:
    with pytest.raises(NoisekitError, match="--image-size must be a multiple of 32 for bninception, got 240"):
        load_config(None, {"arch": "bninception", "image_size": 240})


def test_authors_startup_builds_no_centres_during_the_warmup(noisy_digits: str, tmp_path: Path) -> None:
    config = load_config(None, dict(dataset=noisy_digits, classes_per_batch=5, samples_per_class=4, iterations=6,
                                    warmup=3, startup="authors", bank_start=0, trace=True,
                                    out=str(tmp_path / "run")))  # fmt: skip
    train(config, progress=False)
    steps = torch.load(tmp_path / "run" / "trace.pt", weights_only=True)["steps"]
    assert all(not s["centres"].any() for s in steps[:3])  # NOISE.WARM_UP: the authors' loss touches no centre
    assert steps[3]["centres"].any() and all(s["keep"].all() for s in steps[:3])
