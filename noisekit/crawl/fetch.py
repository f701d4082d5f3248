"""Fetch one URL and keep the body only if it is a whole, decodable image of a sane size.

The checks run in the order that is cheapest to fail: the URL's scheme (only http and https; ``file://`` and the
like are never opened), the HTTP status, the Content-Type, the announced Content-Length, the streamed byte cap,
PIL's header parse (a whitelist of formats, and a pixel cap against decompression bombs), PIL's ``verify``, and a
full decode. A failure is a value, not an exception: :class:`Fetched` carries a status kind and a one-line reason,
and the crawler records them for the row.

A good image is stored under ``images/<h[:2]>/<h><ext>``, h being the SHA-256 of its bytes: never under a name the
server chose, so no URL can write outside the output folder, and identical bodies share one file. It is written to
a temporary file beside its final name and renamed, so a killed crawl leaves no half-written image under a real name.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
from PIL import Image, ImageFile, UnidentifiedImageError
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError

from noisekit.manifest import atomic_path

# Status kinds, one per way a row can end. "ok" is the only success.
OK = "ok"
BAD_URL = "bad_url"  # not an http(s) URL, or a redirect to one; never fetched
HTTP_ERROR = "http_error"  # the final response was not 200 (after retries for 429 and 5xx)
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
TOO_MANY_REDIRECTS = "too_many_redirects"
TOO_LARGE = "too_large"  # the body is larger than max_bytes
NOT_IMAGE = "not_image"  # a non-image content type, or bytes that are no image format we accept
TRUNCATED = "truncated"  # the body or the image data ends early
CORRUPT = "corrupt"  # an image header, but the data does not decode
DECOMPRESSION_BOMB = "decompression_bomb"  # more pixels than max_pixels
KINDS = (
    OK,
    BAD_URL,
    HTTP_ERROR,
    TIMEOUT,
    CONNECTION_ERROR,
    TOO_MANY_REDIRECTS,
    TOO_LARGE,
    NOT_IMAGE,
    TRUNCATED,
    CORRUPT,
    DECOMPRESSION_BOMB,
)

# Formats PIL may parse. Everything else (EPS, which runs Ghostscript; PSD; ICO; ...) is refused unread. JPEG
# includes multi-picture JPEGs (format "MPO"), which PIL opens through its JPEG plugin.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
EXTENSIONS = {
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "PNG": ".png",
    "GIF": ".gif",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "TIFF": ".tif",
}
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's default Image.MAX_IMAGE_PIXELS, checked here whatever the global says
OCTET_STREAMS = ("application/octet-stream", "binary/octet-stream")
CHUNK = 1 << 16
BODY_DEADLINE = 4  # a body must arrive within this many read timeouts in all (defeats servers that drip bytes)
IMAGES = "images"


@dataclass(frozen=True)
class Limits:
    timeout: float  # seconds, for connecting and for each read
    max_bytes: int
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Fetched:
    """What fetching one URL ended as; ``path`` is relative to the output folder."""

    status: str
    error: str | None = None
    http_status: int | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    format: str | None = None
    path: str | None = None


class Failure(Exception):
    def __init__(self, status: str, error: str, http_status: int | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.http_status = status, error, http_status


def host_of(url: str) -> str | None:
    """The lower-cased host[:port] of an http(s) URL, or None if the URL must not be fetched."""
    try:
        parts = urlsplit(url)
        return parts.netloc.lower() if parts.scheme.lower() in ("http", "https") and parts.hostname else None
    except ValueError:
        return None


def check_url(url: str) -> None:
    if not url:
        raise Failure(BAD_URL, "empty URL")
    if host_of(url) is None:
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError:
            scheme = ""
        if scheme in ("http", "https"):
            raise Failure(BAD_URL, f"no host in {url[:80]!r}")
        raise Failure(BAD_URL, f"unsupported scheme {scheme or '(none)'!r}; only http and https are fetched")


def _network_failure(exc: Exception, timeout: float) -> Failure:
    """Map what requests/urllib3 raise to a status kind and a short reason."""
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):  # retries exhausted: the last underlying error says what happened
        reason = reason.reason
    if isinstance(exc, requests.Timeout) or isinstance(reason, ReadTimeoutError):
        return Failure(TIMEOUT, f"no response within the {timeout:g} s timeout")
    if isinstance(exc, requests.TooManyRedirects):
        return Failure(TOO_MANY_REDIRECTS, str(exc).split(".")[0])
    if isinstance(exc, requests.exceptions.InvalidSchema | requests.exceptions.MissingSchema):
        return Failure(BAD_URL, "redirected to a URL that is not http or https")
    if isinstance(exc, requests.exceptions.InvalidURL | ValueError):
        return Failure(BAD_URL, f"invalid URL ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or isinstance(reason, ProtocolError):
        return Failure(TRUNCATED, "the connection closed before the whole body arrived")
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return Failure(CORRUPT, "the body's Content-Encoding does not decode")
    if isinstance(exc, requests.exceptions.SSLError):
        return Failure(CONNECTION_ERROR, "TLS handshake failed")
    detail = str(reason if isinstance(reason, Exception) else exc).rsplit(": ", 1)[-1]
    return Failure(CONNECTION_ERROR, f"could not connect: {detail[:120]}")


def _download(session: requests.Session, url: str, limits: Limits) -> tuple[bytes, int]:
    try:
        with session.get(url, stream=True, timeout=(limits.timeout, limits.timeout)) as response:
            code = response.status_code
            if code != 200:
                raise Failure(HTTP_ERROR, f"HTTP {code} {response.reason or ''}".rstrip(), code)
            ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype and not ctype.startswith("image/") and ctype not in OCTET_STREAMS:
                raise Failure(NOT_IMAGE, f"content type {ctype} is not an image", code)
            announced = response.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) > limits.max_bytes:
                reason = f"Content-Length {int(announced):,} exceeds max_bytes {limits.max_bytes:,}"
                raise Failure(TOO_LARGE, reason, code)
            body = bytearray()
            deadline = time.monotonic() + BODY_DEADLINE * limits.timeout
            for chunk in response.iter_content(CHUNK):
                body += chunk
                if len(body) > limits.max_bytes:
                    raise Failure(TOO_LARGE, f"body exceeds max_bytes {limits.max_bytes:,}", code)
                if time.monotonic() > deadline:
                    raise Failure(TIMEOUT, f"body took longer than {BODY_DEADLINE * limits.timeout:g} s", code)
            return bytes(body), code
    except (requests.RequestException, ValueError) as exc:
        raise _network_failure(exc, limits.timeout) from None


def inspect_image(body: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) of a body that is a whole image; otherwise raise :class:`Failure`."""
    try:
        with Image.open(io.BytesIO(body), formats=FORMATS) as image:
            fmt, (width, height) = image.format or "", image.size
            if width * height > max_pixels:
                reason = f"{width}x{height} = {width * height:,} pixels exceeds max_pixels {max_pixels:,}"
                raise Failure(DECOMPRESSION_BOMB, reason)
            if type(image).verify is ImageFile.ImageFile.verify:  # no integrity check for this format but decoding
                image.load()
                return fmt, width, height
            image.verify()  # PNG: every chunk's CRC
        with Image.open(io.BytesIO(body), formats=FORMATS) as image:
            image.load()  # verify() decodes no pixel data; truncated image data only fails here
    except Failure:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Failure(DECOMPRESSION_BOMB, str(exc).split(" could be")[0]) from None
    except UnidentifiedImageError:
        raise Failure(NOT_IMAGE, f"not an image in an accepted format ({', '.join(FORMATS)})") from None
    except Exception as exc:  # PIL's decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        kind = TRUNCATED if "truncated" in text or isinstance(exc, EOFError) else CORRUPT
        raise Failure(kind, f"does not decode: {text[:120]}") from None
    return fmt, width, height


def store(body: bytes, digest: str, fmt: str, out: Path) -> str:
    """Write ``body`` under its content-derived name (unless already there); return the path relative to ``out``.

    The bytes go to a temporary file in the same folder, renamed onto the final name once complete: a reader (or a
    resumed crawl) sees the whole file or none. Bodies with the same hash are the same bytes, so two threads storing
    one concurrently both rename identical files onto it.
    """
    rel = f"{IMAGES}/{digest[:2]}/{digest}{EXTENSIONS.get(fmt, '.img')}"
    target = out / rel
    if target.is_file():
        return rel
    with atomic_path(target) as tmp:
        tmp.write_bytes(body)
    return rel


def fetch_image(session: requests.Session, url: str, out: Path, limits: Limits) -> Fetched:
    """Fetch, check and store one image; every per-URL problem comes back as a failed :class:`Fetched`."""
    code = None
    try:
        check_url(url)
        body, code = _download(session, url, limits)
        fmt, width, height = inspect_image(body, limits.max_pixels)
    except Failure as failure:
        return Fetched(failure.status, failure.error, failure.http_status or code)
    digest = hashlib.sha256(body).hexdigest()
    path = store(body, digest, fmt, out)
    return Fetched(OK, None, code, digest, width, height, len(body), fmt, path)
