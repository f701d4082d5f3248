"""The dataset card (README.md) of a published folder, rendered from ``data_cards/``.

``data_cards/<dataset>.md`` holds the source's description, licence and citation, with YAML front matter for the
static metadata (licence, tags); ``data_cards/common.md`` holds what every card shares. The renderer adds the
``configs`` and ``dataset_info`` YAML (so ``datasets.load_dataset`` returns the right features offline) and, per
configuration, the noise model, its parameters, requested and realised rates, the split counts and the commands
that rebuild it. The card is re-rendered from every configuration present, so publishing is incremental.
"""

from __future__ import annotations

from pathlib import Path
from string import Template
from typing import Any

import yaml

from noisekit import __version__
from noisekit.errors import NoisekitError
from noisekit.hub.published import SHARED, ConfigRecord, Folder, SplitFiles, features
from noisekit.noise.cleaned import default_variant
from noisekit.paths import CLEAN

TEMPLATES = Path(__file__).resolve().parents[2] / "data_cards"
IMAGES_KEY = "noisekit_images"  # template-only key: may the source's images be redistributed ("allowed")?

PRISM_CITATION = """The noise protocol (symmetric and Small Cluster noise, CARS-98N) is that of PRISM; cite it too:

```bibtex
@inproceedings{Liu_2021_CVPR,
  title     = {Noise-Resistant Deep Metric Learning With Ranking-Based Instance Selection},
  author    = {Liu, Chang and Yu, Han and Li, Boyang and Shen, Zhiqi and Gao, Zhanning and Ren, Peiran and
               Xie, Xuansong and Cui, Lizhen and Miao, Chunyan},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {6811--6820},
  year      = {2021}
}
```"""

# How to rebuild each source's clean manifest; folder names are the ones the official archives extract to.
BUILD = {
    "digits": "noisekit build digits",
    "omniglot": "noisekit build omniglot",
    "cub": "noisekit build cub --root CUB_200_2011/",
    "cars": "noisekit build cars --root cars196/",
    "sop": "noisekit build sop --root Stanford_Online_Products/",
    "food101n": "noisekit build food101n --root Food-101N_release/ --food101-root food-101/",
    "cars98n": "noisekit build cars98n --crawl CRAWL_FOLDER/ --cars-root cars196/",
}


def _split_template(dataset: str) -> tuple[dict[str, Any], str]:
    path = TEMPLATES / f"{dataset}.md"
    if not path.is_file():
        have = sorted(p.stem for p in TEMPLATES.glob("*.md") if p.stem != "common")
        raise NoisekitError(f"no dataset card template for {dataset!r} ({path.name}; have: {', '.join(have)})")
    text = path.read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def images_allowed(dataset: str) -> bool:
    """Whether the source's licence lets anyone redistribute its images (else publish ``--labels-only``)."""
    return _split_template(dataset)[0].get(IMAGES_KEY) == "allowed"


def commands(meta: dict[str, Any]) -> list[str]:
    """The noisekit commands that rebuild a configuration, reconstructed from its noise metadata."""
    dataset, variant, noise = meta["dataset"], meta["variant"], meta.get("noise") or {}
    lines = [BUILD.get(dataset, f"noisekit build {dataset}")]
    model = noise.get("model")
    rate, seed = noise.get("requested_rate"), noise.get("seed")
    if model == "symmetric":
        line = f"noisekit make symmetric --dataset {dataset} --rate {rate:g} --seed {seed}"
        lines.append(line + ("" if variant == f"symmetric-{rate:g}" else f" --variant {variant}"))
    elif model == "small_cluster":
        size, backbone = noise.get("image_size"), noise.get("feature_model", "resnet18")
        # records before issue 21 hold the cache key (resnet18-WEIGHTS-SIZE) as their weights
        weights = str(noise.get("weights", "")).removeprefix("resnet18-").removesuffix(f"-{size}")
        flag = "FILE" if weights.startswith("file-") else weights
        line = (
            f"noisekit make small-cluster --dataset {dataset} --rate {rate:g} --seed {seed} --backbone {backbone} "
            f"--weights {flag} --image-size {size}"
        )
        lines.append(line + ("" if variant == f"small_cluster-{rate:g}" else f" --variant {variant}"))
        if flag == "FILE":
            lines.append(f"# FILE: a {backbone} state dict whose sha256 starts with {weights.removeprefix('file-')}")
    elif model == "official_list":
        cleaned = f" --cleaned {noise['cleaned']}" if noise.get("cleaned") else ""
        lines.append(
            f"noisekit import-lists --dataset {dataset} --list {noise.get('list')}{cleaned} --variant {variant}"
        )
    elif model == "cleaned":
        parent, run, relabel = noise.get("from_variant", CLEAN), noise.get("run"), noise.get("action") == "relabel"
        lines = commands({"dataset": dataset, "variant": parent, "noise": noise.get("from_noise")})
        lines.append(f"prism train --config {run}/config.yaml  # the run's own config: trains {dataset}/{parent} again")
        line = f"noisekit make cleaned --dataset {dataset}/{parent} --from {run}" + (" --relabel" if relabel else "")
        lines.append(line + ("" if variant == default_variant(parent, relabel=relabel) else f" --variant {variant}"))
    elif model is not None:
        lines.append(f"# variant {variant}: noise model {model!r} (see its parameters above)")
    return lines


def _rate(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, int | float) else str(value)


def _rows(splits: dict[str, SplitFiles], name: str) -> int:
    return splits[name].rows if name in splits else 0


def _variant_section(record: ConfigRecord, folder: Folder) -> str:
    meta, noise = record.meta, record.meta.get("noise") or {}
    train = record.stats.get("train", {})
    splits = folder.resolved(record)
    counts = ", ".join(f"{s} {f.rows:,}" for s, f in splits.items())
    known = train.get("rows", 0) - train.get("unknown", 0)
    realised = noise.get("realised_rate")
    realised_text = "-" if realised is None else f"{realised:.4f} ({train.get('noisy', 0):,} of {known:,} known)"
    params = {k: v for k, v in noise.items() if k not in ("model", "requested_rate", "realised_rate", "seed")}
    rows = [
        ("noise model", noise.get("model") or "none (clean labels)"),
        ("requested rate", _rate(noise.get("requested_rate"))),
        ("realised rate", realised_text if noise else "0"),
        ("seed", _rate(noise.get("seed"))),
        ("parameters", "; ".join(f"{k} = {v}" for k, v in params.items()) or "-"),
        ("rows", counts),
        ("training labels", f"{train.get('labels', 0):,} classes in use of {len(record.label_names):,} label names"),
        ("test split", f"shared clean test split ({SHARED}/)" if record.shared_test else f"own copy ({record.name}/)"),
        ("made by", f"noisekit {meta.get('tool_version')}"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    block = "\n".join(commands(meta))
    return f"### `{record.name}`\n\n| | |\n| --- | --- |\n{table}\n\n```bash\n{block}\n```\n"


def _yaml_front(folder: Folder, static: dict[str, Any], default: str) -> dict[str, Any]:
    front = {k: v for k, v in static.items() if k != IMAGES_KEY}
    configs, infos = [], []
    for name, record in folder.configs.items():
        splits = folder.resolved(record)
        files = [{"split": s, "path": list(f.files) if len(f.files) > 1 else f.files[0]} for s, f in splits.items()]
        configs.append({"config_name": name, "data_files": files} | ({"default": True} if name == default else {}))
        feats = features(record.label_names, record.class_names, labels_only=record.labels_only)
        infos.append(
            {
                "config_name": name,
                "features": feats._to_yaml_list(),
                "splits": [{"name": s, "num_bytes": f.arrow_bytes, "num_examples": f.rows} for s, f in splits.items()],
                "download_size": sum(f.download_bytes for f in splits.values()),
                "dataset_size": sum(f.arrow_bytes for f in splits.values()),
            }
        )
    front["configs"] = configs
    front["dataset_info"] = infos
    return front


def render(folder: Folder, *, repo_id: str | None = None) -> str:
    """README.md for every configuration of ``folder`` (records read back from its shards)."""
    records = list(folder.configs.values())
    if not records:
        raise NoisekitError(f"{folder.path}: no configuration to describe")
    dataset = records[0].dataset
    static, body = _split_template(dataset)
    common = (TEMPLATES / "common.md").read_text(encoding="utf-8")
    default = "clean" if "clean" in folder.configs else records[0].name
    labels_only = bool(records[0].labels_only)
    feats = features(records[0].label_names, records[0].class_names, labels_only=labels_only)
    meaning = {
        "image": "the image (original bytes; `datasets.Image`)",
        "path": "the image's path relative to the source dataset's root folder",
        "image_id": "stable id of the image within the source dataset",
        "label": "the training label (noisy in a noisy variant); `ClassLabel` with this configuration's label names",
        "clean_label": "the true class; `ClassLabel` with the source's class names; -1 where unknown",
        "is_noisy": "whether `label` is wrong; null where the true class is unknown",
    }
    kinds = {
        c: getattr(f, "dtype", None) if type(f).__name__ == "Value" else type(f).__name__ for c, f in feats.items()
    }
    columns = "\n".join(f"| `{c}` | {kinds[c]} | {meaning[c]} |" for c in feats)
    summary = ["| config | noise model | requested | realised | seed | " + " | ".join(["train", "test"]) + " |"]
    summary.append("| --- | --- | --- | --- | --- | --- | --- |")
    for r in records:
        noise, splits = r.meta.get("noise") or {}, folder.resolved(r)
        realised = noise.get("realised_rate")
        summary.append(
            f"| `{r.name}` | {noise.get('model') or 'clean'} | {_rate(noise.get('requested_rate'))} | "
            f"{'-' if realised is None else f'{realised:.4f}'} | {_rate(noise.get('seed'))} | "
            f"{_rows(splits, 'train'):,} | {_rows(splits, 'test'):,} |"
        )
    shared_users = [r.name for r in records if r.shared_test]
    own = [r.name for r in records if not r.shared_test]
    test_note = (
        f"The clean test split is stored once in `{SHARED}/` and shared by {', '.join(f'`{n}`' for n in shared_users)}."
        if shared_users
        else ""
    )
    if own:
        test_note += (
            f" {', '.join(f'`{n}`' for n in own)} carr{'ies' if len(own) == 1 else 'y'} their own copy of the test "
            "split: their training labels are re-indexed, so their `label` column names other classes."
        )
    labels_only_note = (
        "\nThis folder was published with `--labels-only`: it holds no image bytes. Join it with your local copy of "
        "the source dataset by `path`, which is relative to that dataset's root folder (the folder `noisekit build` "
        "reads), e.g. `Image.open(Path(root) / row['path'])`, or rebuild the same manifest with the commands below.\n"
        if labels_only
        else ""
    )
    common_text = Template(common).substitute(
        tool_version=__version__,
        summary_table="\n".join(summary),
        test_note=test_note.strip(),
        repo_hint=repo_id or "path/to/this/folder",
        example_config=default,
        columns_table=columns,
        labels_only_note=labels_only_note,
        variants="\n".join(_variant_section(r, folder) for r in records),
    )
    text = Template(body).substitute(common=common_text.strip(), prism_citation=PRISM_CITATION)
    front = yaml.safe_dump(_yaml_front(folder, static, default), sort_keys=False, allow_unicode=True, width=120)
    return f"---\n{front}---\n{text.rstrip()}\n"
