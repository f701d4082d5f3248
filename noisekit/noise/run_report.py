"""A finished ``prism train`` run folder as noisekit reads it, and the rule that says which images the run flagged.

The folder holds ``summary.json`` (its ``dataset``, ``method``, ``filter``, ``seed``, ...) and
``noise_report.parquet``: one row per image of the run's training split, after its validation split was carved out,
with ``image_id``, ``label``, ``clean_label``, ``is_noisy``, ``times_seen``, ``times_flagged``, ``last_p_clean`` and,
from runs that record it, ``likely_label`` (the class the filter found most likely at the image's last draw, -1 when
unknown). noisekit never imports prism (a stage imports only earlier ones), so prism's report imports the flag rule
from here: the rule has one home.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from noisekit.errors import NoisekitError
from noisekit.manifest import read_parquet

SUMMARY = "summary.json"
REPORT = "noise_report.parquet"
LIKELY = "likely_label"
REQUIRED = ("image_id", "label", "times_seen", "times_flagged")
COUNTS = ("label", "times_seen", "times_flagged")


def is_flagged(times_seen: Any, times_flagged: Any) -> np.ndarray:
    """An image counts as flagged when the filter dropped it in most of the batches that drew it.

    Shapes: ``times_seen`` (n,) and ``times_flagged`` (n,) integer counts -> (n,) bool.
    """
    seen, flagged = np.asarray(times_seen), np.asarray(times_flagged)
    return (seen > 0) & (flagged * 2 > seen)


@dataclass(frozen=True)
class Run:
    """A run folder's summary and noise report (checked), and the report file's sha256 (which run it was)."""

    folder: Path
    summary: dict[str, Any]
    report: pd.DataFrame
    report_sha256: str

    @property
    def report_path(self) -> Path:
        return self.folder / REPORT

    @property
    def summary_path(self) -> Path:
        return self.folder / SUMMARY

    @property
    def dataset(self) -> str:
        return self.summary["dataset"]

    @property
    def method(self) -> str | None:
        return self.summary.get("method", self.summary.get("loss"))  # summaries before "method" say "loss"

    @property
    def filter(self) -> str:
        """The filter that chose the training samples; summaries written before ``filter`` say ``prism: bool``."""
        if "filter" in self.summary:
            return str(self.summary["filter"])
        return "prism" if self.summary.get("prism") else "none"

    def flagged(self) -> np.ndarray:
        """(n,) bool over the report's rows: :func:`is_flagged`."""
        return is_flagged(self.report["times_seen"].to_numpy(), self.report["times_flagged"].to_numpy())


def _summary(folder: Path) -> dict[str, Any]:
    path = folder / SUMMARY
    if not path.is_file():
        raise NoisekitError(f"{folder}: no {SUMMARY}; a finished `prism train` run folder holds one")
    try:
        summary = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NoisekitError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("dataset"), str):
        raise NoisekitError(f'{path}: expected a JSON object with the run\'s "dataset" (a string)')
    return summary


def _check_report(frame: pd.DataFrame, path: Path) -> None:
    """The columns noisekit reads, their types, one row per image, and counts a run can have written."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise NoisekitError(
            f"{path}: missing column(s) {', '.join(missing)} (a run's report has {', '.join(REQUIRED)})"
        )
    for column in (*COUNTS, *([LIKELY] if LIKELY in frame.columns else [])):
        if not pd.api.types.is_integer_dtype(frame[column]):
            raise NoisekitError(f"{path}: column {column} must hold integers, got dtype {frame[column].dtype}")
    not_str = ~frame["image_id"].map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    if not_str.any():
        i = int(np.flatnonzero(not_str)[0])
        raise NoisekitError(f"{path}: row {i}: image_id {frame['image_id'].iloc[i]!r} is not a string")
    dup = frame["image_id"].duplicated()
    if dup.any():
        raise NoisekitError(f"{path}: image_id {frame['image_id'][dup].iloc[0]!r} is listed more than once")
    seen, flagged = frame["times_seen"].to_numpy(), frame["times_flagged"].to_numpy()
    bad = (flagged < 0) | (flagged > seen)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise NoisekitError(f"{path}: row {i}: times_flagged {flagged[i]} is not in [0, times_seen = {seen[i]}]")


def read_run(folder: Path | str) -> Run:
    """Read and check a run folder; a one-line error names the folder or file and what it should hold."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise NoisekitError(f"run folder {folder} does not exist (--from takes the --out folder of `prism train`)")
    summary = _summary(folder)
    path = folder / REPORT
    if not path.is_file():
        raise NoisekitError(f"{folder}: no {REPORT}; a finished `prism train` run folder holds one")
    frame = read_parquet(path, what="noise report").to_pandas()
    _check_report(frame, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Run(folder.resolve(), summary, frame.reset_index(drop=True), digest)
