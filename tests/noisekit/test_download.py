"""Downloads from a real HTTP server on 127.0.0.1 and safe extraction of hostile archives."""

from __future__ import annotations

import io
import socket
import tarfile
import zipfile
from pathlib import Path

import pytest
from fakes import fake_cub, fake_sop

from noisekit.cli import app
from noisekit.download import Archive, download_and_extract, fetch, safe_extract
from noisekit.errors import NoisekitError
from noisekit.manifest import read_manifest


def _tar_dir(src: Path, dest: Path, arcname: str) -> None:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src, arcname=arcname)


def _zip_dir(src: Path, dest: Path, arcname: str) -> None:
    with zipfile.ZipFile(dest, "w") as zf:
        for path in sorted(src.rglob("*")):
            zf.write(path, f"{arcname}/{path.relative_to(src)}")


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_download_cub_tgz_and_build(file_server, tmp_path: Path, home: Path) -> None:
    base, served = file_server
    fake_cub(tmp_path / "src")
    _tar_dir(tmp_path / "src", served / "CUB_200_2011.tgz", "CUB_200_2011")
    import hashlib

    md5 = hashlib.md5((served / "CUB_200_2011.tgz").read_bytes()).hexdigest()
    archive = Archive(f"{base}/CUB_200_2011.tgz", "CUB_200_2011.tgz", "CUB_200_2011", md5=md5)
    root = download_and_extract(archive, tmp_path / "raw")
    assert root == tmp_path / "raw" / "CUB_200_2011"
    assert (root / "images.txt").read_bytes() == (tmp_path / "src" / "images.txt").read_bytes()
    assert _files(tmp_path / "raw" / "CUB_200_2011") == _files(tmp_path / "src")
    assert not list((tmp_path / "raw").glob(".extract-*")) and not list((tmp_path / "raw").glob("*.part"))


def test_cli_download_from_mirror(file_server, runner, tmp_path: Path, home: Path) -> None:
    base, served = file_server
    counts = fake_sop(tmp_path / "src")
    _zip_dir(tmp_path / "src", served / "Stanford_Online_Products.zip", "Stanford_Online_Products")
    args = ["build", "sop", "--download", "--mirror", base, "--root", str(tmp_path / "raw")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    m = read_manifest(home / "sop" / "clean.parquet")
    assert m.counts()["splits"] == counts
    assert (tmp_path / "raw" / "Stanford_Online_Products.zip").is_file()


def test_checksum_mismatch_leaves_nothing(file_server, tmp_path: Path) -> None:
    base, served = file_server
    (served / "a.tgz").write_bytes(b"x" * 1000)
    archive = Archive(f"{base}/a.tgz", "a.tgz", "a", md5="0" * 32)
    with pytest.raises(NoisekitError, match="MD5 .* does not match"):
        fetch(archive, tmp_path / "raw")
    assert _files(tmp_path / "raw") == []


def test_http_404_names_the_url(file_server, tmp_path: Path) -> None:
    base, _ = file_server
    with pytest.raises(NoisekitError, match=r"a\.zip: HTTP 404"):
        fetch(Archive(f"{base}/a.zip", "a.zip", "a"), tmp_path / "raw")


def test_offline_says_where_to_put_the_archive(runner, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = runner.invoke(
        app,
        [
            "build",
            "cub",
            "--download",
            "--mirror",
            f"http://127.0.0.1:{port}",
            "--root",
            str(tmp_path / "raw"),
        ],
    )
    assert result.exit_code == 2
    expected = str(tmp_path / "raw" / "CUB_200_2011.tgz")
    assert result.output.startswith("error: could not download") and f"place it at {expected}" in result.output
    assert "Traceback" not in result.output


def test_archive_already_placed_by_hand_is_used(tmp_path: Path) -> None:
    fake_cub(tmp_path / "src")
    (tmp_path / "raw").mkdir()
    _tar_dir(tmp_path / "src", tmp_path / "raw" / "CUB_200_2011.tgz", "CUB_200_2011")
    archive = Archive("http://127.0.0.1:9/unused", "CUB_200_2011.tgz", "CUB_200_2011")
    assert (download_and_extract(archive, tmp_path / "raw") / "classes.txt").is_file()


def _hostile_tar(path: Path, kind: str) -> None:
    with tarfile.open(path, "w") as tar:
        good = tarfile.TarInfo("data/ok.txt")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"ok"))
        if kind == "dotdot":
            bad = tarfile.TarInfo("data/../../evil.txt")
            bad.size = 4
            tar.addfile(bad, io.BytesIO(b"evil"))
        elif kind == "symlink":
            bad = tarfile.TarInfo("data/passwd")
            bad.type, bad.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(bad)
        elif kind == "absolute":
            bad = tarfile.TarInfo("/tmp/evil.txt")
            bad.size = 4
            tar.addfile(bad, io.BytesIO(b"evil"))


def _hostile_zip(path: Path, kind: str) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data/ok.txt", "ok")
        if kind == "dotdot":
            zf.writestr("data/../../evil.txt", "evil")
        elif kind == "symlink":
            info = zipfile.ZipInfo("data/passwd")
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
        elif kind == "absolute":
            zf.writestr("/tmp/evil.txt", "evil")


@pytest.mark.parametrize("kind", ["dotdot", "symlink", "absolute"])
@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_hostile_archive_refused_nothing_written(tmp_path: Path, kind: str, fmt: str) -> None:
    archive = tmp_path / f"bad.{fmt}"
    (_hostile_tar if fmt == "tar" else _hostile_zip)(archive, kind)
    target = tmp_path / "a" / "b" / "target"
    before = _files(tmp_path)
    with pytest.raises(NoisekitError, match="refused"):
        safe_extract(archive, target)
    assert _files(target) == []  # not even the harmless member
    assert _files(tmp_path) == sorted([*before, "a", "a/b", "a/b/target"])


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "x.tgz").write_bytes(b"plain text, not an archive")
    with pytest.raises(NoisekitError, match="not a readable tar or zip"):
        safe_extract(tmp_path / "x.tgz", tmp_path / "t")
