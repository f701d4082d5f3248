"""CARS-98N from a real crawl (loopback server) + a fake CARS196 tree: dedup, conflicting labels, leakage, errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fakes import cars_class_names, fake_cars
from image_server import Server, jpeg, running
from PIL import Image, ImageEnhance
from sklearn.datasets import load_sample_images

from noisekit.cli import app
from noisekit.crawl.crawler import CrawlOptions, crawl
from noisekit.crawl.phash import phash
from noisekit.crawl.record import Record
from noisekit.errors import NoisekitError
from noisekit.manifest import read_manifest
from noisekit.sources.build import BuildOptions, build
from noisekit.sources.cars98n import LEAKAGE_MAX_DISTANCE


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _photos() -> list[Image.Image]:
    """scikit-learn's two bundled real photographs (china.jpg, flower.jpg), 427x640."""
    return [Image.fromarray(a) for a in load_sample_images().images]


def _thumbnail(image: Image.Image, width: int = 236) -> Image.Image:
    return image.resize((width, round(width * image.height / image.width)), Image.BICUBIC)


def _crop(image: Image.Image, share: float) -> Image.Image:
    dx, dy = round(image.width * share), round(image.height * share)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (20, 14), 9).save(buf, format="GIF")
    return buf.getvalue()


# (path, label) per row of the list, and what becomes of it
ROWS = [
    ("/a.jpg", 0),  # kept
    ("/b.jpg", 1),  # the same URL under labels 1 and 2: dropped as ambiguous
    ("/b.jpg", 2),
    ("/c.jpg", 3),  # kept
    ("/c-copy.jpg", 3),  # the same bytes as /c.jpg, same label: kept once
    ("/d.jpg", 4),  # the same bytes under two URLs and two labels: dropped as ambiguous
    ("/d-copy.jpg", 5),
    ("/404.jpg", 6),  # failed
    ("/leak.jpg", 7),  # a thumbnail of a CARS196 test photo: excluded
    ("/e.gif", 8),  # kept
    ("/f.jpg", 97),  # kept
    ("/crop.jpg", 9),  # a 3% crop of another test photo, re-encoded: excluded
]
KEPT = {0: 0, 3: 3, 9: 8, 10: 97}  # row -> label


def _cars(root: Path) -> list[tuple[str, int]]:
    items = fake_cars(root, per_class=1)
    china, flower = _photos()
    (root / "car_ims" / "000150.jpg").write_bytes(_jpeg(china.resize((320, 214))))  # class 150: a test image
    (root / "car_ims" / "000160.jpg").write_bytes(_jpeg(flower.resize((320, 214))))
    return items


def _serve(server: Server) -> None:
    china, flower = _photos()
    server.shared.update({"/c-copy.jpg": "/c.jpg", "/d-copy.jpg": "/d.jpg"})
    server.routes["/404.jpg"] = lambda h, n: h.send(b"", status=404)
    server.routes["/leak.jpg"] = lambda h, n: h.send(_jpeg(_thumbnail(china.resize((320, 214))), quality=75))
    server.routes["/crop.jpg"] = lambda h, n: h.send(_jpeg(_crop(flower.resize((320, 214)), 0.03), quality=80))
    server.routes["/e.gif"] = lambda h, n: h.send(_gif(), ctype="image/gif")


@pytest.fixture
def crawled(tmp_path: Path) -> tuple[Path, Path]:
    _cars(tmp_path / "cars")
    with running() as server:
        _serve(server)
        (tmp_path / "list.csv").write_text("".join(f"{server.base}{p},{k}\n" for p, k in ROWS))
        crawl(tmp_path / "list.csv", tmp_path / "crawl", CrawlOptions(threads=4, progress=False))
    return tmp_path / "crawl", tmp_path / "cars"


def test_cars98n_train_is_the_crawl_test_is_cars196(crawled, home: Path) -> None:
    crawl_dir, cars_root = crawled
    path, result = build("cars98n", BuildOptions(crawl=crawl_dir, cars_root=cars_root), overwrite=True)
    m = read_manifest(path)
    assert m.meta.class_names == tuple(cars_class_names())
    assert m.counts() == {"splits": {"train": 4, "test": 98}, "classes": {"train": 4, "test": 98}}

    train = m.split("train").set_index("image_id")
    assert list(train.index) == [f"cars98n/{row:05d}" for row in KEPT]
    assert list(train["label"]) == list(KEPT.values())
    assert (train["clean_label"] == -1).all() and train["is_noisy"].isna().all()
    assert (train["status"] == "ok").all() and train["error"].isna().all() and (train["width"] > 0).all()
    for image_id, row in train.iterrows():
        assert m.resolve(row["path"]) == crawl_dir / row["path"] and m.resolve(row["path"]).is_file()
        assert row["url"].endswith(ROWS[int(image_id.split("/")[1])][0])
        assert Path(row["path"]).stem == row["sha256"]

    test = m.split("test")
    assert test["image_id"].iloc[0] == "cars196/car_ims/000099" and set(test["label"]) == set(range(98, 196))
    assert (test["label"] == test["clean_label"]).all() and not test["is_noisy"].any()
    assert m.resolve(test["path"].iloc[0]) == cars_root / "car_ims" / "000099.jpg"
    assert test["url"].isna().all()

    report = json.loads((home / "cars98n" / "clean.leakage.json").read_text())
    figures = report["figures"]
    assert figures["failed_rows"] == {"http_error": 1} and figures["ok_rows"] == 11
    assert figures["duplicate_rows_dropped"] == 1
    assert (figures["conflicting_images_dropped"], figures["conflicting_rows_dropped"]) == (2, 4)
    conflicts = report["conflicting_labels"]["images"]
    assert sorted((c["rows"], c["labels"]) for c in conflicts) == [([1, 2], [1, 2]), ([5, 6], [4, 5])]
    leaks = {leak["row"]: leak for leak in report["leakage"]["excluded"]}
    assert set(leaks) == {8, 11} and report["leakage"]["max_distance"] == LEAKAGE_MAX_DISTANCE
    assert (
        leaks[8]["test_image_id"] == "cars196/car_ims/000150" and leaks[11]["test_image_id"] == "cars196/car_ims/000160"
    )
    assert all(leak["distance"] <= LEAKAGE_MAX_DISTANCE for leak in leaks.values())
    assert figures["train_images"] == 4 and figures["leaked_images_excluded"] == 2
    assert any("2 near-duplicate(s) of CARS196 test images excluded" in n for n in result.notes)
    assert any("2 image(s) (4 rows) under several labels dropped" in n for n in result.notes)

    first = path.read_bytes()
    build("cars98n", BuildOptions(crawl=crawl_dir, cars_root=cars_root))
    assert path.read_bytes() == first  # the same crawl gives a byte-identical manifest


def test_cli_build_cars98n(crawled, runner, home: Path) -> None:
    crawl_dir, cars_root = crawled
    result = runner.invoke(app, ["build", "cars98n", "--crawl", str(crawl_dir), "--cars-root", str(cars_root)])
    assert result.exit_code == 0, result.output
    assert "cars98n: 12 crawl rows: 11 ok, 1 failed (http_error 1)" in result.output
    assert "built cars98n: 102 images" in result.output
    missing = runner.invoke(app, ["build", "cars98n", "--cars-root", str(cars_root)])
    assert missing.exit_code == 2 and "error: cars98n: --crawl is required" in missing.output


def test_cars98n_refuses_bad_crawls(tmp_path: Path) -> None:
    _cars(tmp_path / "cars")
    cars_root = tmp_path / "cars"
    with pytest.raises(NoisekitError, match="--cars-root is required"):
        build("cars98n", BuildOptions(crawl=tmp_path))
    with pytest.raises(NoisekitError, match="holds no crawl.parquet"):
        build("cars98n", BuildOptions(crawl=tmp_path / "cars", cars_root=cars_root))

    pending = tmp_path / "pending"
    pending.mkdir()
    Record.new(["http://127.0.0.1:1/a.jpg"], [0], {}).write(pending)
    with pytest.raises(NoisekitError, match=r"1 of 1 rows are not crawled yet.*--resume"):
        build("cars98n", BuildOptions(crawl=pending, cars_root=cars_root))

    with running() as server:
        (tmp_path / "list.csv").write_text(f"{server.base}/a.jpg,98\n")
        crawl(tmp_path / "list.csv", tmp_path / "c98", CrawlOptions(progress=False))
    with pytest.raises(NoisekitError, match=r"crawl\.parquet: row 0: label 98 is not a CARS-98N class 0-97"):
        build("cars98n", BuildOptions(crawl=tmp_path / "c98", cars_root=cars_root))


def test_leakage_threshold_separates_copies_from_other_pictures() -> None:
    """LEAKAGE_MAX_DISTANCE catches what web copies of a photo look like and nothing unrelated."""
    for photo in _photos():
        original = phash(Image.open(io.BytesIO(_jpeg(photo, 95))))
        copies = [
            _jpeg(_thumbnail(photo), 75),  # a Pinterest-sized thumbnail
            _jpeg(_crop(photo, 0.03), 85),
            _jpeg(ImageEnhance.Brightness(photo).enhance(1.15), 85),
            _jpeg(photo.convert("L"), 85),
        ]
        for data in copies:
            assert bin(original ^ phash(Image.open(io.BytesIO(data)))).count("1") <= LEAKAGE_MAX_DISTANCE
    china, flower = (phash(p) for p in _photos())
    unrelated = [phash(Image.open(io.BytesIO(jpeg(seed, (160, 120))))) for seed in range(40)]
    pictures = [china, flower, *unrelated]
    distances = [bin(a ^ b).count("1") for i, a in enumerate(pictures) for b in pictures[i + 1 :]]
    assert min(distances) > LEAKAGE_MAX_DISTANCE and np.median(distances) >= 24
