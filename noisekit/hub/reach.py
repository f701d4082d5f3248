"""Whether the Hub can be reached, asked once before ``datasets`` is: offline, ``datasets`` and huggingface_hub
retry connection errors for about 28 s before they fail, although a refused connection or an unknown host will not
come back within a run. One request with a short timeout answers the same question at once."""

from __future__ import annotations

import os

from noisekit.errors import NoisekitError
from noisekit.hub.refs import Ref

PROBE_SECONDS = 4.0  # connect and read timeout of the one request
TRUE = ("1", "ON", "YES", "TRUE")


def endpoint() -> str:
    """The Hub's URL: HF_ENDPOINT read now (not when huggingface_hub was imported), else huggingface_hub's."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def offline_reason() -> str | None:
    """Why the Hub cannot be reached (HF_HUB_OFFLINE set, a refused connection, an unknown host, no route), or
    ``None`` when one request reaches it. Any HTTP answer, an error status included, counts as reached."""
    import requests
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_OFFLINE", "").upper() in TRUE or constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = endpoint()
    try:
        requests.head(f"{url}/api/datasets", timeout=PROBE_SECONDS, allow_redirects=False)
    except (requests.ConnectionError, requests.Timeout) as exc:
        cause = exc.args[0] if exc.args else exc
        detail = str(getattr(cause, "reason", cause)).split(": ", 1)[-1]
        return f"cannot reach {url}: {detail[:120]}"
    return None


def datasets_offline() -> bool:
    """Whether ``datasets`` itself is in offline mode: it then reads only its cache, and fails at once."""
    import datasets

    return bool(datasets.config.HF_HUB_OFFLINE)


def offline_error(ref: Ref, reason: str) -> NoisekitError:
    return NoisekitError(
        f"{ref}: offline ({reason}); give a local published folder instead (DIR/CONFIG, as noisekit publish writes "
        "it), or use this reference once online so that a copy is cached, then set HF_HUB_OFFLINE=1 to read it"
    )
