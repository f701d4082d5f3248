"""The one exception type users see: a single-line message naming the file, row or option at fault."""


class NoisekitError(Exception):
    """Bad input or an unusable environment. The CLI prints ``error: <message>`` and exits with status 2."""
