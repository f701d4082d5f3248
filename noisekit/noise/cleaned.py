"""Cleaned variants: a variant without the training images that a ``prism train`` run on it flagged, or (``relabel``)
with their labels set to the class the filter found most likely.

Only the rows the run judged can change: its noise report holds the run's training split after the validation split
was carved out, so the variant's validation rows (and its test split) are not in it and stay exactly as they were;
the noise record counts them (``not_judged``). An image counts as flagged by the rule of
:func:`noisekit.noise.run_report.is_flagged`; one the run never drew (``never_seen``) is never flagged.

The variant is named ``VARIANT-cleaned`` (``VARIANT-relabelled``), or ``cleaned`` (``relabelled``) for the clean
manifest of a dataset whose noise is real. Its noise record (``model: cleaned``) names the run and its filter, counts
what happened and, where clean labels are known, scores the flags: ``precision`` (flagged images that were noisy) and
``recall`` (noisy judged images that were flagged), then the realised noise rate after cleaning. The record the
variant had is kept as ``from_noise``. ``likely_label`` is a training label of the variant (an index into its
``label_names``, which stay as they were).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from noisekit.errors import NoisekitError
from noisekit.manifest import Manifest, make_frame, read_manifest
from noisekit.noise.run_report import LIKELY, Run, read_run
from noisekit.paths import CLEAN, resolve_manifest

MODEL = "cleaned"


def default_variant(variant: str, *, relabel: bool) -> str:
    suffix = "relabelled" if relabel else "cleaned"
    return suffix if variant == CLEAN else f"{variant}-{suffix}"


def _align(manifest: Manifest, run: Run) -> np.ndarray:
    """The manifest row of each report row; the report must describe this variant's training split as it is now."""
    frame, report, where = manifest.frame, run.report, run.report_path
    name = f"{manifest.meta.dataset}/{manifest.meta.variant}"
    rows = pd.Index(frame["image_id"]).get_indexer(report["image_id"])
    absent = rows < 0
    if absent.any():
        first = report["image_id"][absent].iloc[0]
        raise NoisekitError(
            f"{where}: {int(absent.sum()):,} of {len(rows):,} image_id(s) are not in {name} (first: {first!r}); "
            "the run trained on other data"
        )
    split = frame["split"].to_numpy()[rows]
    outside = split != "train"
    if outside.any():
        raise NoisekitError(
            f"{where}: {int(outside.sum()):,} image_id(s) are in {name}'s {split[outside][0]} split, not its training "
            f"split (first: {report['image_id'][outside].iloc[0]!r})"
        )
    theirs, ours = report["label"].to_numpy(), frame["label"].to_numpy()[rows]
    differ = theirs != ours
    if differ.any():
        i = int(np.flatnonzero(differ)[0])
        raise NoisekitError(
            f"{where}: {int(differ.sum()):,} image(s) carry another label than in {name} (first: "
            f"{report['image_id'].iloc[i]!r}, {theirs[i]} in the run, {ours[i]} in the variant); the variant was "
            "written again since the run"
        )
    return rows


def _likely(manifest: Manifest, run: Run, flagged: np.ndarray) -> np.ndarray:
    """The most likely class of every flagged report row, each one a training label of the variant."""
    where = run.report_path
    if LIKELY not in run.report.columns:
        raise NoisekitError(
            f"{where}: no {LIKELY} column, which --relabel needs (the run's report predates it); train again or "
            "clean without --relabel"
        )
    likely = run.report[LIKELY].to_numpy()[flagged]
    n_labels = len(manifest.meta.labels)
    unknown = (likely < 0) | (likely >= n_labels)
    if unknown.any():
        raise NoisekitError(
            f"{where}: {int(unknown.sum()):,} of {len(likely):,} flagged image(s) have no {LIKELY} in [0, {n_labels}) "
            f"(first: {run.report['image_id'][flagged].iloc[int(np.flatnonzero(unknown)[0])]!r}, {LIKELY} "
            f"{likely[unknown][0]}); --relabel needs one for every flagged image"
        )
    return likely.astype(np.int64)


def _noisy(manifest: Manifest, label: np.ndarray, clean: np.ndarray) -> pd.arrays.BooleanArray:
    """is_noisy of rows with these labels: their class name differs from the clean one's; null where unknown."""
    label_names = np.asarray(manifest.meta.labels, dtype=object)
    class_names = np.asarray(manifest.meta.class_names, dtype=object)
    known = clean >= 0
    differs = label_names[label] != class_names[np.where(known, clean, 0)]
    return pd.array(np.where(known, differs, None).tolist(), dtype="boolean")


def _rate(flags: pd.Series) -> float | None:
    known = flags.dropna()
    return float(known.astype(bool).mean()) if len(known) else None


def _ratio(hits: int, total: int) -> float | None:
    return hits / total if total else None


def cleaned(
    manifest: Manifest, run: Run, *, relabel: bool = False, variant: str | None = None
) -> tuple[Manifest, dict[str, Any]]:
    """The cleaned (or relabelled) variant of ``manifest`` from a run on it, and its report figures (rows in order)."""
    if run.filter == "none":
        raise NoisekitError(
            f"{run.summary_path}: the run trained with filter none, so it flagged nothing; clean with a run that "
            "filtered (prism train --filter prism)"
        )
    frame = manifest.frame
    rows = _align(manifest, run)
    flagged = run.flagged()
    touched = rows[flagged]
    label, clean = frame["label"].to_numpy().copy(), frame["clean_label"].to_numpy()
    flags = pd.array(frame["is_noisy"].to_numpy(dtype=object), dtype="boolean")
    keep = np.ones(len(frame), dtype=bool)
    figures = _figures(manifest, run, rows, flagged, relabel=relabel)
    if relabel:
        label[touched] = _likely(manifest, run, flagged)
        flags[touched] = _noisy(manifest, label[touched], clean[touched])
        right = ~flags[touched][clean[touched] >= 0]  # relabelled to their true class, where it is known
        figures["labels_changed"] = int((label[touched] != frame["label"].to_numpy()[touched]).sum())
        figures["relabel_accuracy"] = _ratio(int(right.sum()), len(right))
    else:
        keep[touched] = False
    out = make_frame(
        frame["image_id"].to_numpy()[keep],
        frame["path"].to_numpy()[keep],
        frame["split"].to_numpy()[keep],
        clean[keep],
        label=label[keep],
        is_noisy=flags[keep],
    )
    for extra in frame.columns.difference(out.columns):
        out[extra] = frame[extra].to_numpy()[keep]
    figures["kept"] = int((out["split"] == "train").sum())
    noise = {
        "model": MODEL,
        "requested_rate": None,
        "realised_rate": _rate(out.loc[out["split"] == "train", "is_noisy"]),
        "seed": run.summary.get("seed"),
        **figures,
        "from_noise": manifest.meta.noise,
    }
    name = variant or default_variant(manifest.meta.variant, relabel=relabel)
    return manifest.replace(out, variant=name, noise=noise), figures


def _figures(manifest: Manifest, run: Run, rows: np.ndarray, flagged: np.ndarray, *, relabel: bool) -> dict[str, Any]:
    """Which run, what it judged and flagged, and the flags' precision and recall against the variant's ``is_noisy``
    (the noise record's keys besides model, rates, seed and from_noise; :func:`cleaned` adds the outcome)."""
    train = manifest.split("train")
    truth = manifest.frame["is_noisy"].array[rows]  # the variant's flags of the judged rows
    known, noisy = ~truth.isna().astype(bool), truth.fillna(False).to_numpy(dtype=bool)
    hits, n_flagged = int((flagged & noisy).sum()), int(flagged.sum())
    return {
        "from_variant": manifest.meta.variant,
        "run": str(run.folder),
        "run_report_sha256": run.report_sha256,
        "method": run.method,
        "filter": run.filter,
        "iterations": run.summary.get("iterations"),
        "action": "relabel" if relabel else "remove",
        "train_images_before": int(len(train)),
        "judged": int(len(rows)),
        "not_judged": int(len(train) - len(rows)),
        "never_seen": int((run.report["times_seen"].to_numpy() == 0).sum()),
        "flagged": n_flagged,
        "removed": 0 if relabel else n_flagged,
        "relabelled": n_flagged if relabel else 0,
        "labels_changed": 0,
        "relabel_accuracy": None,
        "precision": _ratio(hits, int((flagged & known).sum())),
        "recall": _ratio(hits, int(noisy.sum())),
        "realised_rate_before": _rate(train["is_noisy"]),
    }


def clean_variant(
    dataset: str, folder: Path | str, *, relabel: bool = False, variant: str | None = None
) -> tuple[Manifest, dict[str, Any]]:
    """Read the variant ``dataset`` (``NAME`` or ``NAME/VARIANT``) and the run folder, check that the run trained on
    this variant, and return :func:`cleaned`'s variant and figures."""
    run = read_run(folder)
    path = resolve_manifest(dataset)
    try:
        trained_on: Path | None = resolve_manifest(run.dataset).resolve()
    except NoisekitError:  # a published or Hub reference, or a variant not in this data home
        trained_on = None
    if trained_on != path.resolve():
        raise NoisekitError(
            f"{run.summary_path}: the run trained on {run.dataset!r}, not on {dataset!r}; --dataset names the variant "
            "the run trained on"
        )
    return cleaned(read_manifest(path), run, relabel=relabel, variant=variant)


def _score(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3f}"


def summary_line(path: Path, report: dict[str, Any], seconds: float) -> str:
    """The one line ``noisekit make cleaned`` prints: what the run flagged, what became of it, where it went."""
    done = f"relabelled {report['relabelled']:,}" if report["action"] == "relabel" else f"removed {report['removed']:,}"
    scores = (
        ""
        if report["precision"] is None and report["recall"] is None
        else f" (precision {_score(report['precision'])}, recall {_score(report['recall'])} against the known flags)"
    )
    before, after = report["realised_rate_before"], report["realised_rate"]
    rates = "" if before is None or after is None else f"; realised rate {before:.4f} -> {after:.4f}"
    return (
        f"{report['dataset']}/{report['variant']}: {done} training image(s) that {report['filter']} flagged among the "
        f"{report['judged']:,} the run judged{scores}; {report['not_judged']:,} not judged kept as they were"
        f"{rates} in {seconds:.1f}s -> {path}"
    )
