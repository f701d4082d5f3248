"""A reference to one configuration of published data, spelled the same way in noisekit and prism:

- ``DIR/CONFIG``: a configuration's folder inside a published folder (``DIR`` alone when it has one configuration);
- ``hub:OWNER/REPO:CONFIG``: a dataset repository on the Hub (``hub:OWNER/REPO`` when it has one configuration).

``noisekit load`` also takes ``DIR --config CONFIG`` and a bare ``OWNER/REPO`` (as ``datasets`` spells it); prism's
``--config`` is a YAML file, so every hint and error names the spellings above.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from noisekit.errors import NoisekitError
from noisekit.hub.published import read_folder

SPELLINGS = "DIR/CONFIG or hub:OWNER/REPO:CONFIG"


def check_repo_id(repo_id: str, *, what: str = "--push") -> str:
    """``OWNER/REPO`` as huggingface_hub's validator accepts it."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id.count("/") != 1:
        raise NoisekitError(f"{what} {repo_id!r}: expected a dataset repository id OWNER/REPO")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise NoisekitError(
            f"{what} {repo_id!r}: not a valid repository id (letters, digits, '-', '_', '.'; no '--' or '..'; "
            "at most 96 characters; not starting or ending with '-' or '.')"
        ) from None
    return repo_id


@dataclass(frozen=True)
class Ref:
    """A published folder (``local``; ``source`` is its path as given) or a Hub repository id, and a configuration
    (``None``: the only one there is)."""

    source: str
    config: str | None
    local: bool

    @property
    def folder(self) -> Path:
        return Path(self.source).absolute()

    def spell(self, config: str | None = None) -> str:
        """The reference as the user writes it, naming ``config`` (or this reference's own)."""
        config = config or self.config
        if self.local:
            return f"{self.source.rstrip('/')}/{config}" if config else self.source
        return f"hub:{self.source}:{config}" if config else f"hub:{self.source}"

    def __str__(self) -> str:
        return self.spell()


def _local(path: Path) -> Ref | None:
    """``DIR`` or ``DIR/CONFIG`` of a published folder; ``None`` when ``path`` is neither."""
    if path.is_dir() and (path / "README.md").is_file():
        return Ref(str(path), None, True)
    if not (path.parent / "README.md").is_file():
        return None
    configs = read_folder(path.parent).configs
    if path.name in configs:
        return Ref(str(path.parent), path.name, True)
    if configs:  # a published folder without this configuration: say which it has, in the one spelling
        raise NoisekitError(f"{path}: no configuration {path.name!r} (have: {', '.join(configs)})")
    return None


def parse(ref: str, config: str | None = None, *, what: str = "--dataset", bare_repo: bool = False) -> Ref | None:
    """``ref`` (and ``config``, noisekit load's ``--config``) -> a :class:`Ref`; ``None`` for any other reference
    (a data-home name or a manifest path). ``bare_repo``: a name that is no folder is a Hub ``OWNER/REPO``."""
    if ref.startswith("hub:"):
        repo, _, named = ref[4:].partition(":")
        if repo.count("/") != 1:
            raise NoisekitError(f"{what} {ref!r}: expected hub:OWNER/REPO:CONFIG")
        parsed: Ref | None = Ref(check_repo_id(repo, what=f"{what} hub:"), named or None, False)
    else:
        parsed = _local(Path(ref).expanduser())
        if parsed is None and bare_repo and not Path(ref).expanduser().exists():
            parsed = Ref(check_repo_id(ref, what=what), None, False)
    if parsed is None or config is None:
        return parsed
    if parsed.config not in (None, config):
        raise NoisekitError(f"--config {config!r} and {ref} name two configurations; give one ({parsed.spell(config)})")
    return Ref(parsed.source, config, parsed.local)
