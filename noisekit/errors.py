"""The one exception type users see: a single-line message naming the file, row or option at fault."""


class NoisekitError(Exception):
    """Bad input or an unusable environment. The CLI prints ``error: <message>`` and exits with status 2."""


class NotBuilt(NoisekitError):
    """The dataset, variant or manifest a reference names is not there (yet): ``noisekit build`` or ``make`` it."""
