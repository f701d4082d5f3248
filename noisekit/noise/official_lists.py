"""The PRISM authors' noisy label lists as a variant, so a user trains on exactly the paper's noisy labels.

A list is ``absolute_path,label`` per line, no header, paths from the authors' machines
(``/data/cars196/images/<class>/<file>.jpg``). Each row is matched to a manifest row by the path's tail: its last k
components equal a manifest ``path``. The variant's training split is exactly the matched rows; the test split is
unchanged.

Two label spaces occur (``--labels``, default ``auto``):

- ``ids``: the authors' symmetric lists keep the dataset's own class ids, 1-based (label k is class k, clean label
  k - 1), as their dataset class reads them (``ret_benchmark/data/datasets/base_dataset.py``: labels used as
  given). The clean label space is kept. An id of a class outside the training split (CUB's symmetric 0.2 / 0.5
  lists carry label 101, a test class, on 6 / 28 rows) stays what the list says: an extra training class, counted
  in ``extra_labels`` / ``extra_label_rows``. An id that is no class of the dataset at all drops its rows, counted in
  ``out_of_range_rows``. A label no image keeps as its clean class (919 of SOP's at 0.5) needs no evidence.
- ``learn``: Small Cluster lists are re-indexed from 0, so the clean class each label stands for is learned: from
  the ``--cleaned`` list when given (its rows carry their true class), else by a vote among the rows carrying that
  label (the most frequent clean class, strictly ahead of the runner-up). If the labels stand for exactly the
  training classes the clean label space is kept; otherwise labels are re-indexed densely and named in
  ``label_names``.
- ``auto``: ``ids`` when at least 90% of the labels with a clear majority clean class (among the cleaned list's rows
  when given) have the class of their own id, else ``learn``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from noisekit.errors import NoisekitError
from noisekit.manifest import Manifest, make_frame
from noisekit.paths import CLEAN, check_name
from noisekit.sources.common import parse_int, read_rows

MODEL = "official_list"
REPORT_KEYS = (
    "list", "cleaned", "labels", "unmapped", "dropped_train_rows", "extra_labels", "extra_label_rows",
    "out_of_range_rows",
)  # fmt: skip
LABEL_SPACES = ("auto", "ids", "learn")
IDS_AGREEMENT = 0.9  # auto: the share of clear-majority labels that must sit on their own id's class


@dataclass(frozen=True)
class ListRow:
    line: int
    path: str
    label: int


def read_list(path: Path) -> list[ListRow]:
    """The rows of an authors' list; malformed rows and paths listed twice are errors naming the line(s)."""
    if not path.is_file():
        raise NoisekitError(f"list file {path} does not exist")
    rows: list[ListRow] = []
    seen: dict[str, int] = {}
    try:
        for number, (image, label) in read_rows(path, fields=2, sep=","):
            if image in seen:
                raise NoisekitError(f"{path}:{number}: {image!r} is listed twice (lines {seen[image]} and {number})")
            seen[image] = number
            rows.append(ListRow(number, image, parse_int(label, path=path, number=number, what="label")))
    except UnicodeDecodeError as exc:
        raise NoisekitError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not rows:
        raise NoisekitError(f"{path}: lists no rows")
    return rows


def map_paths(paths: Sequence[str], manifest_paths: Sequence[str]) -> np.ndarray:
    """For each path, the index of the manifest path equal to its last k components (deepest match first), or -1.

    Shapes: ``(len(paths),)`` int64.
    """
    index = {p: i for i, p in enumerate(manifest_paths)}
    depths = sorted({p.count("/") + 1 for p in manifest_paths}, reverse=True)
    out = np.full(len(paths), -1, dtype=np.int64)
    for j, path in enumerate(paths):
        parts = path.replace("\\", "/").split("/")
        for depth in depths:
            hit = index.get("/".join(parts[-depth:])) if depth <= len(parts) else None
            if hit is not None:
                out[j] = hit
                break
    return out


def _top_two(labels: np.ndarray, classes: np.ndarray) -> dict[int, list[tuple[int, int]]]:
    """Per label (ascending), its two most frequent clean classes with their row counts, in one pass over the rows
    (equal counts keep the order in which the classes first appear)."""
    per: dict[int, Counter] = defaultdict(Counter)
    for label, cls in zip(labels.tolist(), classes.tolist(), strict=True):
        per[label][cls] += 1
    return {label: per[label].most_common(2) for label in sorted(per)}


def _learn_classes(
    labels: np.ndarray, classes: np.ndarray, *, names: Sequence[str], source: Path, vote: bool
) -> dict[int, int]:
    """Authors' label -> clean class, from rows whose clean class is known; one class per label and vice versa."""
    hint = "; pass --cleaned with the authors' cleaned list" if vote else ""
    mapping: dict[int, int] = {}
    for label, ((top, n_top), *rest) in _top_two(labels, classes).items():
        # a vote needs a winner strictly ahead of the runner-up; a cleaned list must keep each label on one class
        if rest and (rest[0][1] == n_top or not vote):
            what = f"tie with {n_top} rows each" if vote else "both carry it"
            pair = f"{names[top]!r} and {names[rest[0][0]]!r}"
            raise NoisekitError(f"{source}: label {label} has no single clean class ({pair} {what}){hint}")
        mapping[int(label)] = int(top)
    owner: dict[int, int] = {}
    for label, cls in mapping.items():
        if cls in owner:
            raise NoisekitError(f"{source}: labels {owner[cls]} and {label} both stand for class {names[cls]!r}{hint}")
        owner[cls] = label
    return mapping


def _check_cleaned(cleaned: list[ListRow], rows: list[ListRow], *, cleaned_path: Path, list_path: Path) -> set[str]:
    """The paths of the cleaned list, which must be rows of the list with the same label."""
    by_path = {r.path: r for r in rows}
    for c in cleaned:
        row = by_path.get(c.path)
        if row is None:
            raise NoisekitError(f"{cleaned_path}:{c.line}: {c.path!r} is not in {list_path.name}; expected a subset")
        if row.label != c.label:
            raise NoisekitError(
                f"{cleaned_path}:{c.line}: label {c.label} differs from {list_path.name}:{row.line}'s label {row.label}"
            )
    return {c.path for c in cleaned}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _match(
    rows: list[ListRow], manifest: Manifest, *, list_path: Path, skip_unmapped: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """(indices into ``rows`` of the rows that match a training image, those images' manifest rows, unmapped count)."""
    frame, dataset = manifest.frame, manifest.meta.dataset
    split = frame["split"].to_numpy()
    target = map_paths([r.path for r in rows], frame["path"].tolist())
    bad = (target < 0) | (split[np.maximum(target, 0)] != "train")
    if bad.any() and not skip_unmapped:
        first = int(np.flatnonzero(bad)[0])
        row, hit = rows[first], target[first]
        why = (
            f"matches no image of {dataset}"
            if hit < 0
            else f"matches {frame['path'].iloc[hit]!r}, a {split[hit]} image of {dataset}, not a training one"
        )
        raise NoisekitError(
            f"{list_path}:{row.line}: {row.path!r} {why} ({int(bad.sum())} unmapped row(s) in all; "
            "--skip-unmapped drops them)"
        )
    mapped = np.flatnonzero(~bad)
    if not len(mapped):
        raise NoisekitError(f"{list_path}: none of its {len(rows)} rows matches a training image of {dataset}")
    first_line: dict[int, int] = {}
    for j in mapped:
        t = int(target[j])
        if t in first_line:
            raise NoisekitError(
                f"{list_path}:{rows[j].line}: {rows[j].path!r} is the same image as line {first_line[t]} "
                f"({frame['path'].iloc[t]})"
            )
        first_line[t] = rows[j].line
    return mapped, target[mapped], int(bad.sum())


def _stand_for(mapping: dict[int, int], labels: np.ndarray, *, source: Path) -> np.ndarray:
    """The clean class each label stands for; a label the mapping lacks is an error."""
    missing = sorted(set(labels.tolist()) - set(mapping))
    if missing:
        raise NoisekitError(f"{source}: no row labelled {missing[0]} tells which clean class it stands for")
    return np.array([mapping[lab] for lab in labels.tolist()], dtype=np.int64)


def fits_ids(labels: np.ndarray, classes: np.ndarray) -> bool:
    """Whether labels are the dataset's 1-based class ids: most labels with a clear majority clean class among their
    rows (strictly ahead of the runner-up) have the class of their own id."""
    majority = [
        ranked[0][0] == label - 1
        for label, ranked in _top_two(labels, classes).items()
        if len(ranked) == 1 or ranked[0][1] > ranked[1][1]
    ]
    return bool(majority) and float(np.mean(majority)) >= IDS_AGREEMENT


@dataclass
class Imported:
    """The matched list rows (``target``: their manifest rows) and what the import decided about each."""

    target: np.ndarray  # (m,) manifest row of each imported list row
    lines: np.ndarray  # (m,) the list's line numbers
    labels: np.ndarray  # (m,) the authors' labels
    classes: np.ndarray  # (m,) clean classes (-1 unknown)
    noisy: np.ndarray  # (m,) bool
    train_label: np.ndarray  # (m,) the label written into the variant
    label_names: tuple[str, ...] | None
    notes: dict[str, Any]
    others_label: np.ndarray | None = None  # re-indexed labels of the other splits' rows, in frame order


def _by_ids(
    found: Imported, names: Sequence[str], train_classes: set[int], *, list_file: Path, cleaned: Path | None
) -> Imported:
    """Label k is clean class k - 1; ids of no class drop their rows; ids of non-training classes stay extra classes."""
    in_range = (found.labels >= 1) & (found.labels <= len(names))
    if not in_range.any():
        raise NoisekitError(
            f"{list_file}: none of its labels is a class id of the dataset (1..{len(names)}); "
            "for re-indexed labels pass --labels learn"
        )
    keep = {f: getattr(found, f)[in_range] for f in ("target", "lines", "labels", "classes", "noisy")}
    stands_for = keep["labels"] - 1
    known = keep["classes"] >= 0
    if cleaned is not None:
        wrong = np.flatnonzero(known & (keep["noisy"] == (stands_for == keep["classes"])))
        if len(wrong):
            k = wrong[0]
            state = "missing from" if keep["noisy"][k] else "kept in"
            own = "its own class" if stands_for[k] == keep["classes"][k] else f"class {names[stands_for[k]]!r}"
            raise NoisekitError(
                f"{list_file}:{keep['lines'][k]}: {state} {cleaned.name} but its label {keep['labels'][k]} "
                f"is {own} (image of {names[keep['classes'][k]]!r})"
            )
    else:
        keep["noisy"] = stands_for != keep["classes"]
    extra = sorted(set(stands_for.tolist()) - train_classes)
    notes = found.notes | {
        "labels": "ids",
        "extra_labels": [names[c] for c in extra],
        "extra_label_rows": int(np.isin(stands_for, extra).sum()),
        "out_of_range_rows": int((~in_range).sum()),
    }
    return Imported(**keep, train_label=stands_for, label_names=None, notes=notes)


def _by_learning(
    found: Imported,
    frame: pd.DataFrame,
    names: Sequence[str],
    train_classes: set[int],
    *,
    list_file: Path,
    cleaned: Path | None,
) -> Imported:
    """Each label stands for the clean class learned from the cleaned list or by vote; re-indexed if needed."""
    labels, classes, known = found.labels, found.classes, found.classes >= 0
    if cleaned is not None:
        use = ~found.noisy & known
        mapping = _learn_classes(labels[use], classes[use], names=names, source=cleaned, vote=False)
        stands_for = _stand_for(mapping, labels, source=cleaned)
        contradicts = np.flatnonzero(found.noisy & known & (stands_for == classes))
        if len(contradicts):
            k = contradicts[0]
            raise NoisekitError(
                f"{list_file}:{found.lines[k]}: missing from {cleaned.name} (so noisy) but its label "
                f"{labels[k]} stands for its own class {names[classes[k]]!r}"
            )
        noisy = found.noisy
    else:
        mapping = _learn_classes(labels[known], classes[known], names=names, source=list_file, vote=True)
        stands_for = _stand_for(mapping, labels, source=list_file)
        noisy = stands_for != classes
    notes = found.notes | {"labels": "learn", "extra_labels": [], "extra_label_rows": 0, "out_of_range_rows": 0}
    if set(mapping.values()) == train_classes:
        return dataclasses.replace(found, noisy=noisy, train_label=stands_for, label_names=None, notes=notes)
    # re-index densely: the authors' labels in their order, then the other splits' classes
    authors = sorted(mapping)
    other_rows = frame["label"].to_numpy()[frame["split"].to_numpy() != "train"]
    others = np.unique(other_rows)
    rank = {lab: k for k, lab in enumerate(authors)}
    label_names = tuple(names[mapping[lab]] for lab in authors) + tuple(names[c] for c in others)
    train_label = np.array([rank[lab] for lab in labels.tolist()], dtype=np.int64)
    others_label = len(authors) + np.searchsorted(others, other_rows)
    return dataclasses.replace(
        found, noisy=noisy, train_label=train_label, label_names=label_names, notes=notes, others_label=others_label
    )


def import_lists(
    manifest: Manifest,
    *,
    list_path: Path | str,
    cleaned_path: Path | str | None = None,
    variant: str,
    skip_unmapped: bool = False,
    labels: str = "auto",
) -> Manifest:
    """The variant of a clean manifest whose training split is exactly the list's rows, with the list's labels.

    With ``cleaned_path`` an image is noisy exactly when it is missing from the cleaned list; without it, when its
    label stands for another class than its own. Rows that match no training image are an error, or with
    ``skip_unmapped`` are dropped and counted in ``noise["unmapped"]``. ``labels``: see the module docstring.
    """
    meta, frame = manifest.meta, manifest.frame
    if meta.variant != CLEAN:
        raise NoisekitError(f"lists are imported onto a clean manifest; {meta.dataset}/{meta.variant} is not")
    if check_name(variant, what="--variant") == CLEAN:
        raise NoisekitError(f"--variant {CLEAN!r} names the clean manifest; choose another name")
    if labels not in LABEL_SPACES:
        raise NoisekitError(f"--labels must be one of {', '.join(LABEL_SPACES)}, got {labels!r}")
    list_file = Path(list_path)
    cleaned_file = Path(cleaned_path) if cleaned_path is not None else None
    rows = read_list(list_file)
    mapped, target, unmapped = _match(rows, manifest, list_path=list_file, skip_unmapped=skip_unmapped)
    found = Imported(
        target=target,
        lines=np.array([rows[j].line for j in mapped], dtype=np.int64),
        labels=np.array([rows[j].label for j in mapped], dtype=np.int64),
        classes=frame["clean_label"].to_numpy()[target],
        noisy=np.zeros(len(mapped), dtype=bool),
        train_label=np.empty(0, dtype=np.int64),
        label_names=None,
        notes={"list": list_file.name, "unmapped": unmapped},
    )
    if cleaned_file is not None:
        kept = _check_cleaned(read_list(cleaned_file), rows, cleaned_path=cleaned_file, list_path=list_file)
        found.noisy = np.array([rows[j].path not in kept for j in mapped], dtype=bool)
    evidence = (found.classes >= 0) & ~found.noisy
    train_classes = set(frame["clean_label"].to_numpy()[frame["split"].to_numpy() == "train"].tolist()) - {-1}
    if labels == "ids" or (labels == "auto" and fits_ids(found.labels[evidence], found.classes[evidence])):
        found = _by_ids(found, meta.class_names, train_classes, list_file=list_file, cleaned=cleaned_file)
    else:
        found = _by_learning(found, frame, meta.class_names, train_classes, list_file=list_file, cleaned=cleaned_file)
    return _variant(manifest, found, variant=variant, list_file=list_file, cleaned_file=cleaned_file)


def _variant(
    manifest: Manifest, found: Imported, *, variant: str, list_file: Path, cleaned_file: Path | None
) -> Manifest:
    """The variant's frame (training split = the imported rows) and its noise record."""
    frame = manifest.frame
    split = frame["split"].to_numpy()
    is_train = split == "train"
    label = frame["label"].to_numpy().copy()
    label[found.target] = found.train_label
    if found.others_label is not None:  # re-indexed: the other splits' classes follow the authors' labels
        label[~is_train] = found.others_label
    known = found.classes >= 0
    flag = pd.array(frame["is_noisy"].to_numpy(dtype=object), dtype="boolean")
    flag[found.target] = pd.array(np.where(known, found.noisy, pd.NA).tolist(), dtype="boolean")
    keep = ~is_train
    keep[found.target] = True
    out = make_frame(
        frame["image_id"].to_numpy()[keep],
        frame["path"].to_numpy()[keep],
        split[keep],
        frame["clean_label"].to_numpy()[keep],
        label=label[keep],
        is_noisy=flag[keep],
    )
    for extra in frame.columns.difference(out.columns):
        out[extra] = frame[extra].to_numpy()[keep]
    n_known = int(known.sum())
    noise: dict[str, Any] = {
        "model": MODEL,
        "requested_rate": None,
        "realised_rate": float(found.noisy[known].sum() / n_known) if n_known else None,
        "seed": None,
        **found.notes,
        "list_sha256": _sha256(list_file),
        "cleaned": cleaned_file.name if cleaned_file is not None else None,
        "cleaned_sha256": _sha256(cleaned_file) if cleaned_file is not None else None,
        "dropped_train_rows": int(is_train.sum() - len(found.target)),
    }
    return manifest.replace(out, variant=variant, noise=noise, label_names=found.label_names)


def report_extra(manifest: Manifest) -> dict[str, Any]:
    """What the noise report adds for an imported list: which files, and what was left out."""
    noise = manifest.meta.noise or {}
    train_labels = int(manifest.split("train")["label"].nunique())
    return {key: noise.get(key) for key in REPORT_KEYS} | {"train_labels": train_labels}
