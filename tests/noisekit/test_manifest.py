"""The Manifest contract: validation names the offending row, writes are atomic and byte-reproducible."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from noisekit.errors import NoisekitError
from noisekit.manifest import Manifest, ManifestMeta, make_frame, read_manifest, validate, write_manifest


def _manifest(**overrides) -> Manifest:
    cols = dict(
        image_id=["a", "b", "c", "d"],
        path=["x/a.png", "x/b.png", "y/c.png", "y/d.png"],
        split=["train", "train", "test", "test"],
        clean_label=[0, 1, 2, 3],
    )
    cols.update(overrides)
    return Manifest(make_frame(**cols), ManifestMeta(dataset="t", root="/r", class_names=("a", "b", "c", "d")))


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    m = _manifest(label=[1, 1, 2, 3])
    m.frame["url"] = ["u1", "u2", "u3", "u4"]  # extra columns (crawled data) survive
    m = m.replace(noise={"model": "symmetric", "seed": 3})
    back = read_manifest(write_manifest(m, tmp_path / "t" / "v.parquet"))
    pd.testing.assert_frame_equal(back.frame, m.frame)
    assert back.meta == m.meta
    assert back.frame["is_noisy"].tolist() == [True, False, False, False]


def test_unknown_clean_label_gives_null_flag() -> None:
    m = _manifest(clean_label=[-1, 1, 2, 3], label=[0, 1, 2, 3])
    assert m.frame["is_noisy"].isna().tolist() == [True, False, False, False]
    validate(m)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(image_id=["a", "a", "c", "d"]), "duplicate image_id 'a'"),
        (dict(label=[0, 1, 2, 9]), "row 3: label 9 is outside"),
        (dict(clean_label=[0, 1, 2, -2], label=[0, 1, 2, 3]), "row 3: clean_label -2"),
        (dict(path=["x/a.png", "/abs/b.png", "y/c.png", "y/d.png"]), "row 1: path '/abs/b.png'"),
        (dict(path=["x/a.png", "x/../../b.png", "y/c.png", "y/d.png"]), "row 1: path"),
        (dict(split=["train", "dev", "test", "test"]), "row 1: split 'dev'"),
        (dict(label=[0, 1, 2, 2], is_noisy=[False, False, False, False]), "row 3: is_noisy=False disagrees"),
    ],
)
def test_validation_names_the_row(tmp_path: Path, overrides: dict, message: str) -> None:
    m = _manifest(**overrides)
    with pytest.raises(NoisekitError, match=message.replace("(", r"\(")):
        write_manifest(m, tmp_path / "m.parquet")
    assert list(tmp_path.iterdir()) == []


def test_not_a_manifest(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b"garbage")
    with pytest.raises(NoisekitError, match="not a readable Parquet manifest"):
        read_manifest(tmp_path / "x.parquet")


def test_write_is_reproducible(tmp_path: Path) -> None:
    a = write_manifest(_manifest(), tmp_path / "a.parquet").read_bytes()
    b = write_manifest(_manifest(), tmp_path / "b.parquet").read_bytes()
    assert a == b
