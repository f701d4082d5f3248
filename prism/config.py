"""A training run's configuration: one frozen dataclass. YAML sets defaults, command-line flags override, and the
resolved config is saved beside the run and inside every checkpoint."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from noisekit.errors import NoisekitError
from prism.backbones import check_arch, input_size
from prism.ranges import RANGES  # every numeric option's allowed values, checked in __post_init__

CHOICES = {  # option -> its allowed values (the first is the default)
    "pooling": ("avg", "max"),
    "sampler": ("uniform", "authors"),
    "startup": ("ours", "authors"),
    "mcl_norm": ("kept", "authors"),
    "mode": ("centre", "exact"),
    "precision": ("auto", "fp32", "bf16"),
    "channels_last": ("auto", "always", "never"),  # words YAML does not read as true or false
    "decode": ("workers", "device"),
    "select": ("last", "val"),
    "transition": ("estimate", "known"),
}
ALIASES = {"loss": "method"}  # older option names still read (YAML files, checkpoints); prism: true/false -> filter
PRESETS = Path(__file__).parent / "presets"


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "digits/symmetric-0.5"
    root: str | None = None  # the local copy of the images of a dataset published --labels-only
    method: str = "mcl"  # prism/methods: `prism methods` lists them
    # prism/filters (`prism filters` lists them); None: prism where the method takes a filter, else none
    filter: str | None = None
    # R: the share of each batch the rank cut removes (unknown noise: 0.5), or auto: estimated online from the
    # filter's class scores (prism/filters/rate.py); Co-teaching's forget rate
    filter_rate: float | str = 0.5
    transition: str = "estimate"  # F-correction's matrix: estimate (anchor points) or known (symmetric noise)
    window: int = 30  # tau: TRMs averaged into sTRM (the authors' CARS-98N setting)
    mode: str = "centre"  # centre (Eq. 6/7) or exact (Eq. 2/3)
    # ours: a sample whose class has no centre yet is kept, with no centre at all the whole batch; authors: classes
    # without a centre count in the softmax with a zero centre and the rank cut applies from the first non-empty bank
    startup: str = "ours"
    # iterations trained on the batch-only loss (no bank, no selection) first, as XBM's START_ITERATION;
    # None: derived by `resolve` (0 for a pretrained backbone, from scratch the run's length: no bank term)
    bank_start: int | None = None
    # None: derived from the dataset by `resolve` (the README's table); an explicit value always wins
    warmup: int | None = None  # iterations trained on every sample before selection starts
    iterations: int | None = None
    seed: int = 0
    device: str = "cpu"
    out: str = "runs/latest"
    arch: str = "auto"  # auto: small_cnn for images of at most 128 px, else resnet50; or prism/backbones, timm:NAME
    weights: str = "imagenet"  # backbone init (all but small_cnn): imagenet, random or a state-dict FILE
    embed_dim: int = 128
    pooling: str = "avg"  # global pooling of resnets and BN-Inception: avg or max (the authors: max)
    classes_per_batch: int | None = None  # P
    samples_per_class: int | None = None  # K
    sampler: str = "uniform"  # uniform: P classes uniformly per batch; authors: XBM's chunk sampler (prism/samplers.py)
    lr: float | None = None  # None: derived by `resolve` (PRETRAINED_LR or SCRATCH_LR)
    # BatchNorm statistics of the backbone frozen at their pretrained values; None: derived (pretrained: frozen)
    freeze_bn: bool | None = None
    weight_decay: float = 5e-4
    proxy_lr: float | None = None  # learning rate of a loss's own parameters (SoftTriple's centres), no weight decay
    crop_scale: float = 0.16  # smallest area share of RandomResizedCrop (the authors: 0.2)
    bank_size: int = 0  # 0: the number of training images
    memory_weight: float = 1.0  # weight of the batch-vs-bank term of the memory losses
    # kept: (batch pairs + bank pairs) / kept samples; authors: batch pairs / kept + bank pairs / batch size, and
    # without a filter the bank term also pairs the batch with itself (the authors enqueue before the loss)
    mcl_norm: str = "kept"
    val_fraction: float = 0.2
    # last: keep the final model (the paper's protocol); val: the best validation MAP@R, whose labels are as noisy as
    # the training labels (at 50% noise on omniglot it picked iteration 200 of 2,000, bench/README.md)
    select: str = "last"
    eval_every: int | None = None
    log_every: int | None = None  # iterations between logged steps (curves.png); None: about LOGGED per run
    image_size: int | None = None
    workers: int = 2
    stop_at: int = 0  # stop after this iteration with a resumable checkpoint (0: run to the end)
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU; or fp32, bf16
    channels_last: str = "auto"  # NHWC images and weights: auto (GPU only), always (also on the CPU), never
    compile: bool = False  # torch.compile the backbone
    decode: str = "workers"  # workers: DataLoader workers decode and augment; device: the training device decodes JPEGs
    trace: bool = False  # record each step's keep-mask, bank and centres into trace.pt (tests, debugging)

    def __post_init__(self) -> None:
        from prism.methods import check

        if isinstance(self.filter_rate, str) and self.filter_rate != "auto":
            raise NoisekitError(f"--filter-rate must be a number in [0, 1) or auto, got {self.filter_rate!r}")
        object.__setattr__(self, "filter", check(self.method, self.filter, self.filter_rate))
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                flag = name.replace("_", "-")
                raise NoisekitError(f"--{flag} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        check_arch(self.arch)
        for name, allowed in RANGES.items():
            value = getattr(self, name)
            if value is not None and value != "auto" and value not in allowed:
                raise NoisekitError(f"--{name.replace('_', '-')} must be {allowed}, got {value}")
        if self.arch == "bninception" and self.image_size is not None and self.image_size % 32:
            raise NoisekitError(f"--image-size must be a multiple of 32 for bninception, got {self.image_size}")

    @property
    def filtered(self) -> bool:
        """Whether a filter chooses the samples that train (and enter the bank)."""
        return self.filter != "none"

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.samples_per_class

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


SMALL_IMAGE = 128  # images of at most this many pixels a side train the small CNN from scratch
SMALL_SIZE = 28  # ... at this size at most (Omniglot's usual resolution in the few-shot literature)
BATCH = 64  # the paper's batch: P x K = 16 x 4
PRETRAINED_ITERATIONS = 4000  # the authors' CARS-98N setting (configs/CARSN/MemoryContrastiveLossPRISM.yaml)
PRETRAINED_LR = 3e-5  # the authors' BASE_LR for fine-tuning (prism/presets/paper-*.yaml)
SCRATCH_LR = 3e-4  # a randomly initialised backbone needs larger steps (prism's default before issue 21)
SCRATCH_EPOCHS = 60  # a randomly initialised backbone trains for about this many passes over the data ...
SCRATCH_ITERATIONS = (400, 4000)  # ... within these bounds
SCRATCH_WARMUP = 0.375  # and PRISM starts after this share of the iterations
LOGGED = 50  # logged steps per run: a short run's curves have points too


@dataclass(frozen=True)
class DataShape:
    """What the defaults are derived from: the training split after validation is carved out."""

    side: int  # the larger side of the first training image, in pixels
    classes: int  # training classes with at least two images (the sampler draws only those)
    images: int  # training images


def resolve(config: TrainConfig, shape: DataShape) -> TrainConfig:
    """Fill every option left at None (and ``arch: auto``) from the data; explicit values stay as they are.

    - arch: small_cnn for images of at most SMALL_IMAGE px (trained from scratch), else resnet50 (ImageNet weights);
      image size: min(side, SMALL_SIZE) for the small CNN, else the side the backbone's weights were trained at
      (224 for resnets and BN-Inception, timm's data config for efficientnet_lite0 and timm:NAME).
    - pretrained: any backbone but small_cnn whose weights are not random. lr: PRETRAINED_LR pretrained (the
      authors'), SCRATCH_LR from scratch. freeze_bn: pretrained backbones keep their BatchNorm statistics (prism/
      models.py, Embedder.train says why and what it measured); from scratch they must learn them.
    - P = min(16, classes); K = max(4, BATCH // P), so the batch stays near the paper's 64 with few classes.
    - iterations: pretrained backbones the authors' 4,000; from scratch SCRATCH_EPOCHS passes over the training
      images, clamped to SCRATCH_ITERATIONS. Validation every iterations // 10,
      a logged step every iterations // LOGGED.
    - warm-up (PRISM off, every sample trains): 0 for a pretrained backbone, whose first similarity ranking is
      already meaningful; SCRATCH_WARMUP of the iterations for a randomly initialised one, whose first ranking is not.
    - bank start (the memory losses' bank term starts here; XBM's START_ITERATION): 0 for a pretrained backbone
      (the PRISM authors' setting, BN-Inception from ImageNet); from scratch the end of the run, i.e. no bank term.
      XBM starts its memory once features "drift slowly" (research-xbm: 1,000 in its sample config, 2,000 in
      defaults.py); a bank filled from iteration 0 by a network that still moves fast dominates MCL's loss with
      stale pairs. Chosen on the validation split of omniglot (MCL, clean labels, seed 0, validation MAP@R at the
      end): bank from 0 0.291, from the end of the warm-up (766) 0.659, never 0.721 (bench/README.md). PRISM's
      filter does not wait for it: with ``--startup ours`` its bank fills from the first step and selection starts
      at the end of the warm-up; with ``--startup authors`` the bank start gates the filter's bank too.
    """
    from prism.methods import spec

    arch = config.arch
    if arch == "auto":
        arch = "small_cnn" if shape.side <= SMALL_IMAGE else "resnet50"
    scratch = arch == "small_cnn" or config.weights == "random"
    p = config.classes_per_batch or min(16, shape.classes)
    k = config.samples_per_class or max(4, BATCH // p)
    iterations = config.iterations
    if iterations is None:
        low, high = SCRATCH_ITERATIONS
        epochs = math.ceil(SCRATCH_EPOCHS * shape.images / (p * k))
        iterations = min(max(epochs, low), high) if scratch else PRETRAINED_ITERATIONS
    warmup = config.warmup if config.warmup is not None else round(SCRATCH_WARMUP * iterations) * scratch
    lr = config.lr or (SCRATCH_LR if scratch else PRETRAINED_LR)
    return config.replace(
        arch=arch,
        lr=lr,
        freeze_bn=config.freeze_bn if config.freeze_bn is not None else not scratch,
        image_size=config.image_size or (min(shape.side, SMALL_SIZE) if arch == "small_cnn" else input_size(arch)),
        classes_per_batch=p,
        samples_per_class=k,
        iterations=iterations,
        eval_every=config.eval_every or max(1, iterations // 10),
        log_every=config.log_every or max(1, iterations // LOGGED),
        warmup=warmup,
        bank_start=config.bank_start if config.bank_start is not None else iterations * scratch,
        proxy_lr=config.proxy_lr if config.proxy_lr is not None else spec(config.method).proxy_lr(lr),
    )


# the options `resolve` derives from the data when they are left out, and its rule for each
DERIVED = {
    "arch": "small_cnn for images of at most 128 px, else resnet50",
    "image_size": "28 px at most for small_cnn, else the backbone's input size (224; timm's data config)",
    "classes_per_batch": "min(16, training classes)",
    "samples_per_class": "max(4, 64 // classes per batch)",
    "iterations": "4000 pretrained; from scratch 60 epochs within 400-4000",
    "eval_every": "iterations // 10",
    "log_every": "iterations // 50, at least 1",
    "warmup": "0 pretrained; from scratch 0.375 of the iterations",
    "bank_start": "0 pretrained; from scratch the iterations (no bank term)",
    "lr": "3e-5 pretrained (the authors'); from scratch (small_cnn or --weights random) 3e-4",
    "proxy_lr": "the method's rate from --lr (prism methods)",
    "freeze_bn": "true pretrained (BatchNorm keeps its pretrained statistics); false from scratch",
}


SOURCES = {"proxy_lr": "the method", "lr": "the backbone", "freeze_bn": "the backbone"}  # what each rule reads


def option_defaults() -> dict[str, str]:
    """Each option's default as ``prism train --help`` shows it: TrainConfig's value, or the rule that derives it
    from the data. Read from the dataclass, so the help cannot go stale."""
    out = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in DERIVED:
            source = SOURCES.get(f.name, "the data")
            out[f.name] = f"derived from {source}: {DERIVED[f.name]}"
        elif f.default is not None and f.name != "dataset":  # no dataset is assumed: prism train asks for one
            out[f.name] = str(f.default).lower() if isinstance(f.default, bool) else str(f.default)
    return out


def canonical(values: dict[str, Any], *, where: str) -> dict[str, Any]:
    """``values`` with older option names under their current ones (``loss`` -> ``method``, ``prism: bool`` ->
    ``filter``); an old and a new name that disagree are an error."""
    values = dict(values)
    for old, new in ALIASES.items():
        if old in values:
            value = values.pop(old)
            if values.get(new) not in (None, value):
                raise NoisekitError(f"{where}: --{old} {value} and --{new} {values[new]} disagree; give one")
            values[new] = value
    if isinstance(values.get("channels_last"), bool):  # before issue 23 a bool that only a GPU run read
        values["channels_last"] = "auto" if values["channels_last"] else "never"
    if "prism" in values:
        prism = values.pop("prism")
        if prism is not None:
            implied = "prism" if prism else "none"
            if values.get("filter") not in (None, implied):
                raise NoisekitError(
                    f"{where}: --{'' if prism else 'no-'}prism and --filter {values['filter']} disagree"
                )
            values["filter"] = implied
    return values


KIND_NAMES = {int: "an integer", float: "a number", str: "text", bool: "true or false"}


def _typed(name: str, value: Any, hint: Any, where: str) -> Any:
    """``value`` as its option's type, or a one-line error: None where the option allows it, an integer for an int
    option, a number for a float option (an integer, or text such as 3e-4, which YAML reads as a string)."""
    kinds = typing.get_args(hint) or (hint,)
    if value is None and type(None) in kinds:
        return None
    if value == "auto" and str in kinds:  # filter_rate: a number or auto
        return value
    kind = next(k for k in kinds if k is not type(None))
    if kind is float and isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise NoisekitError(f"{where}: {name} must be {KIND_NAMES[kind]}, got {value!r}")


def from_dict(values: dict[str, Any], *, where: str) -> TrainConfig:
    """The config of option: value pairs (a YAML file, a preset, a grid's options), each checked against its type."""
    values = canonical(values, where=where)
    hints = typing.get_type_hints(TrainConfig)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise NoisekitError(f"{where}: unknown option(s) {', '.join(unknown)}")
    return TrainConfig(**{k: _typed(k, v, hints[k], where) for k, v in values.items()})


def read_yaml(path: Path, *, what: str) -> dict[str, Any]:
    """A YAML mapping of option: value, or a one-line error naming the file."""
    if not path.is_file():
        raise NoisekitError(f"{what} {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise NoisekitError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise NoisekitError(f"{path}: expected a mapping of option: value")
    return loaded


def presets() -> dict[str, str]:
    """Shipped presets: name -> the first line of the file's leading comment."""
    out = {}
    for path in sorted(PRESETS.glob("*.yaml")):
        first = path.read_text().splitlines()[0].lstrip("# ").strip()
        out[path.stem] = first.removeprefix(f"{path.stem}:").strip()
    return out


def preset_path(name: str) -> Path:
    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        raise NoisekitError(f"--preset {name!r} is not shipped; choose one of {', '.join(presets())} (prism presets)")
    return path


def load_config(
    path: Path | None, overrides: dict[str, Any], *, preset: str | None = None, require_dataset: bool = False
) -> TrainConfig:
    """Defaults, then the preset, then the YAML file, then the flags the user gave (``None`` values are ignored).

    ``require_dataset``: refuse when none of them names the dataset, rather than train on the default silently."""
    values: dict[str, Any] = {}
    where = []
    if preset is not None:
        values.update(read_yaml(preset_path(preset), what="--preset"))
        where.append(f"preset {preset}")
    if path is not None:
        values.update(read_yaml(path, what="--config"))
        where.append(str(path))
    values = canonical(values, where=", ".join(where) or "options")
    values.update(canonical({k: v for k, v in overrides.items() if v is not None}, where="options"))
    config = from_dict(values, where=", ".join(where) or "options")  # every option's own check comes first
    if require_dataset and "dataset" not in values:
        raise NoisekitError(
            "--dataset: which dataset? give NAME/VARIANT (e.g. --dataset omniglot/symmetric-0.5), a manifest, a "
            "published DIR/CONFIG or hub:OWNER/REPO:CONFIG, or a --preset/--config that names one"
        )
    return config


def dump(config: TrainConfig) -> str:
    """The config as YAML (what config.yaml holds and --config reads)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=True)


def dump_unresolved(config: TrainConfig, *, why: str) -> str:
    """The config as YAML before the data is there: each option the data would derive is ``null`` with a comment
    naming the rule that fills it (``resolve``), and a leading comment says why it is not resolved."""
    lines = [f"# not resolved: {why.splitlines()[0]}"]
    for line in dump(config).splitlines():
        key, _, value = line.partition(":")
        unset = value.strip() == "null" or (key == "arch" and value.strip() == "auto")
        lines.append(f"{line}  # derived from the data: {DERIVED[key]}" if unset and key in DERIVED else line)
    return "\n".join(lines) + "\n"


def save_config(config: TrainConfig, path: Path) -> None:
    from noisekit.manifest import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(dump(config))
