"""Exceptions.

`UnionCamError` is the one base for problems a user can act on (a bad image, an unknown
model, a class id out of range, a tampered engine). The CLI prints its message on one line
and exits non-zero without a traceback. Anything else escaping the library is a bug.
"""


class UnionCamError(Exception):
    """A user-facing error: the message names the bad value and what is allowed."""


class ImageError(UnionCamError):
    """An input image could not be read or converted."""


class ModelError(UnionCamError):
    """A model, its weights or its target class are unusable."""


class DependencyError(UnionCamError):
    """An optional dependency (torch, onnx, tensorrt, ...) is needed but not installed."""


def require(module: str, extra: str):
    """Import an optional module or raise a `DependencyError` naming the pip extra.

    Args:
        module: the module to import, e.g. ``"torch"``.
        extra: the unioncam-rt extra that installs it, e.g. ``"export"``.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DependencyError(
            f"{module} is not installed; it comes with: pip install 'unioncam-rt[{extra}]'"
        ) from exc
