"""The one exception type users see: a single-line message naming the file, row or option at fault."""


class NoisekitError(Exception):
    """Bad input or an unusable environment. The CLI prints ``error: <message>`` and exits with status 2."""


class NotBuilt(NoisekitError):
    """The dataset, variant or manifest a reference names is not there (yet): ``noisekit build`` or ``make`` it."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as the one line users see. torch re-raises an error of a DataLoader worker as the same
    type with the message "Caught X in DataLoader worker process N" and the worker's whole traceback; its last line
    is the original ``module.X: message``."""
    text = str(exc)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        return last.partition(": ")[2] or last
    return text
