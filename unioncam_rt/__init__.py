"""unioncam-rt: UnionCAM explanations of CNN classifiers, fast enough for production.

Pipeline: model zoo (`zoo`) -> export (`export`) -> engines (`runtime`) -> the method
(`method`) -> `explain` / CLI.
"""

__version__ = "0.1.0"

from .errors import UnionCamError  # noqa: E402


def explain(image, model=None, target=None, method="unioncam", **kwargs):
    """Explain one image; see `unioncam_rt.explainer.explain`."""
    from .explainer import explain as _explain

    return _explain(image, model, target, method, **kwargs)


def __getattr__(name):
    if name == "Explainer":
        from .explainer import Explainer

        return Explainer
    raise AttributeError(name)


__all__ = ["UnionCamError", "explain", "Explainer", "__version__"]
