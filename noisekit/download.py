"""Fetch a dataset's official archive and extract it safely.

Downloads stream with requests (urllib3 Retry for 429/5xx, honouring Retry-After) into ``<file>.part``, are
checked against the server's Content-Length and the archive's known MD5, then renamed. Extraction validates every
member before writing anything: no absolute names, no ``..``, no links, devices or FIFOs; then it unpacks into a
temporary folder inside the target and moves the result into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests
from requests.adapters import HTTPAdapter
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from noisekit import __version__
from noisekit.errors import NoisekitError
from noisekit.progress import progress

USER_AGENT = f"noisekit/{__version__} (+dataset builder)"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One downloadable archive; ``subdir`` is the folder it extracts to (the builder's root)."""

    url: str
    filename: str
    subdir: str
    md5: str | None = None


ARCHIVES: dict[str, tuple[Archive, ...]] = {
    "cub": (
        Archive(
            "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
            "CUB_200_2011.tgz",
            "CUB_200_2011",
            md5="97eceeb196236b17998738112f37df78",
        ),
    ),
    "sop": (
        Archive(
            "https://drive.usercontent.google.com/download?id=1TclrpQOF_ullUP99wk_gjGN8pKvtErG8&export=download&confirm=t",
            "Stanford_Online_Products.zip",
            "Stanford_Online_Products",
        ),
    ),
    "food101n": (
        Archive(
            "https://iudata.blob.core.windows.net/food101/Food-101N_release.zip",
            "Food-101N_release.zip",
            "Food-101N_release",
        ),
        Archive(
            "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
            "food-101.tar.gz",
            "food-101",
            md5="85eeb15f3717b99a5da872d97d918f87",
        ),
    ),
}


MAX_RETRY_AFTER = 60.0  # seconds; a server asking for a longer pause gets this one, so no row can hang for hours


class CappedRetry(Retry):
    """urllib3's Retry, honouring Retry-After up to :data:`MAX_RETRY_AFTER` seconds (urllib3 itself has no cap)."""

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, MAX_RETRY_AFTER)


def http_session(
    *, retries: int = 3, backoff: float = 0.5, user_agent: str = USER_AGENT, pool_maxsize: int = 10
) -> requests.Session:
    """A Session that retries connection errors, 429 and 5xx with exponential backoff and Retry-After."""
    retry = CappedRetry(
        total=retries,
        backoff_factor=backoff,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=pool_maxsize)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent
    return session


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_md5(path: Path, archive: Archive, actual: str) -> None:
    if archive.md5 and actual != archive.md5:
        raise NoisekitError(f"{path}: MD5 {actual} does not match the expected {archive.md5}; delete it and retry")


def fetch(archive: Archive, folder: Path, *, session: requests.Session | None = None, timeout: float = 60) -> Path:
    """Download ``archive`` into ``folder`` (kept if already there and valid); return the file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / archive.filename
    if target.is_file():
        _check_md5(target, archive, _md5(target))
        return target
    session = session or http_session()
    offline_hint = f"download it by hand from {archive.url} and place it at {target}, then rerun"
    part = target.with_name(target.name + ".part")
    try:
        with session.get(archive.url, stream=True, timeout=(10, timeout)) as response:
            if response.status_code != 200:
                raise NoisekitError(f"{archive.url}: HTTP {response.status_code}; {offline_hint}")
            expected = int(response.headers.get("Content-Length", 0)) or None
            digest, size = hashlib.md5(usedforsecurity=False), 0
            with (
                part.open("wb") as fh,
                progress(total=expected, unit="B", unit_scale=True, desc=archive.filename, leave=False) as bar,
            ):
                for chunk in response.iter_content(CHUNK):
                    fh.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
    except requests.RequestException as exc:
        part.unlink(missing_ok=True)
        reason = type(exc).__name__
        raise NoisekitError(f"could not download {archive.url} ({reason}; offline?); {offline_hint}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    try:
        if expected is not None and size != expected:
            raise NoisekitError(f"{archive.url}: received {size} bytes, the server announced {expected}; retry")
        _check_md5(part, archive, digest.hexdigest())
    except NoisekitError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    return target


def _check_name(name: str, archive: Path) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise NoisekitError(f"{archive}: member {name!r} would be written outside the target folder; refused")


def _validate_tar(tar: tarfile.TarFile, archive: Path) -> None:
    for member in tar.getmembers():
        _check_name(member.name, archive)
        if member.issym() or member.islnk():
            raise NoisekitError(f"{archive}: member {member.name!r} is a link ({member.linkname!r}); refused")
        if not (member.isfile() or member.isdir()):
            raise NoisekitError(f"{archive}: member {member.name!r} is not a regular file or folder; refused")


def _validate_zip(zf: zipfile.ZipFile, archive: Path) -> None:
    for info in zf.infolist():
        _check_name(info.filename, archive)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise NoisekitError(f"{archive}: member {info.filename!r} is a symbolic link; refused")


def safe_extract(archive: Path, target: Path) -> list[str]:
    """Extract a tar or zip archive into ``target`` after validating every member; return the top-level names."""
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _validate_zip(zf, archive)
                zf.extractall(staging)
        else:
            try:
                tar = tarfile.open(archive)
            except tarfile.TarError as exc:
                raise NoisekitError(f"{archive}: not a readable tar or zip archive ({exc})") from None
            with tar:
                _validate_tar(tar, archive)
                tar.extractall(staging, filter="data")
        tops = sorted(p.name for p in staging.iterdir())
        for name in tops:
            dest = target / name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            elif dest.exists() or dest.is_symlink():
                dest.unlink()
            os.replace(staging / name, dest)
        return tops
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_and_extract(
    archive: Archive, folder: Path, *, session: requests.Session | None = None, keep_archive: bool = True
) -> Path:
    """Make ``folder/archive.subdir`` exist, downloading and extracting the archive if it does not."""
    root = folder / archive.subdir
    if root.is_dir():
        return root
    path = fetch(archive, folder, session=session)
    safe_extract(path, folder)
    if not root.is_dir():
        raise NoisekitError(f"{path}: extracted, but it holds no {archive.subdir}/ folder")
    if not keep_archive:
        path.unlink()
    return root
