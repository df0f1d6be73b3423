"""Explaining images: load, run one method over an engine in batches, collect results.

This is the library function behind ``unioncam-rt explain`` and `unioncam_rt.explain`.
"""

from __future__ import annotations

import difflib
import re
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .cache import open_cached_engine
from .errors import ImageError, ModelError, UnionCamError
from .images import LoadedImage, load_image, unreadable_link
from .manifest import MANIFEST_NAME
from .memory import DEFAULT_BATCH, batch_for_memory, parse_size
from .method import METHODS, Budget, MethodContext, MethodOptions, finalize
from .method.engine import CamEngine
from .method.ops import softmax
from .method.scoring import ScoreCounter
from .results import Explanation, group_timings, with_own_time
from .runtime.factory import EngineOptions
from .sources import ModelSource

Target = int | str | None
BUDGETED = ("unioncam", "scorecam")  # the methods whose region map a channel budget changes


def is_engine_dir(model) -> bool:
    """True for a path to an exported engine directory (it holds a manifest)."""
    return isinstance(model, (str, Path)) and Path(model).is_dir() and (Path(model) / MANIFEST_NAME).is_file()


def resolve_class(target: Target, class_names: Sequence[str]) -> int:
    """Turn ``--class`` (None, an index, a digit string or a class name) into an index; -1 is top-1."""
    if target is None:
        return -1
    if isinstance(target, str) and re.fullmatch(r"-?[0-9]+", target.strip()):  # ASCII digits: "²" is a name
        target = int(target.strip())
    if isinstance(target, (int, np.integer)):
        if target == -1:
            return -1
        if not 0 <= target < len(class_names):
            raise ModelError(f"class index {target} out of range; this model has classes 0..{len(class_names) - 1}")
        return int(target)
    lowered = [name.lower() for name in class_names]
    key = str(target).strip().lower()
    if key in lowered:
        return lowered.index(key)
    close = difflib.get_close_matches(key, lowered, n=3)
    hint = f"; did you mean: {', '.join(repr(class_names[lowered.index(c)]) for c in close)}" if close else ""
    raise ModelError(f"unknown class name {target!r}{hint}")


def read_image_file(path: Path, input_size: tuple[int, int]) -> LoadedImage | UnionCamError:
    """Load one image file for a run over many: its `UnionCamError`, or an `ImageError` for
    any other exception (a decoder's on untrusted bytes), is returned, not raised."""
    reason = unreadable_link(path)
    if reason:
        return ImageError(f"{path}: {reason}")
    try:
        return load_image(path, input_size)
    except UnionCamError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types on corrupt input
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return ImageError(f"{path}: corrupt or unreadable image ({type(exc).__name__}: {first})")


class _BarProgress:
    """`scoring.Progress` over a tqdm bar."""

    def __init__(self, bar):
        self.bar = bar

    def expect(self, n: int) -> None:
        self.bar.total = (self.bar.total or 0) + n
        self.bar.refresh()

    def advance(self, n: int) -> None:
        self.bar.update(n)


class Explainer:
    """Explains images with one method over one engine, in batches.

    Args:
        model: what to explain: an exported engine directory, a zoo name (default
            ``"efficientnet-lite0"``, which works offline), ``PATH.py:FUNCTION`` /
            ``package.module:FUNCTION``, or an ONNX classifier file; a model that is not an
            engine directory is exported once into the cache (see `unioncam_rt.cache`).
        method: one of `METHODS` (default ``"unioncam"``).
        theta: UnionCAM's denoising percentile (default 10).
        batch_size: masked images per engine call (default 16; on this CPU a masked pass costs
            the same per image from 8 to 32, and 16 halves the activation memory of 32).
        max_memory: a peak-memory budget (bytes or ``"2GB"``): the batch size is capped to
            fit it (exported engines; see `unioncam_rt.memory`). Default: no budget.
        budget: region-map channels scored per image: 0 / None (default, exact), a count
            K, ``"coverS[:K]"``, or a `Budget` (selection rule and fill); approximate, see
            `unioncam_rt.method.budget`.
        images_per_step: images whose masks share engine calls (default 4).
        weights: model weights (default: zoo models' real ones).
        backend: ``"onnxruntime"`` (default), ``"openvino"``, ``"tensorrt"`` or ``"torch"`` (the reference).
        engine_dir: exported engine directory (default: ``model`` if it is one, else the cache).
        providers: ONNX Runtime execution providers (default: the best available).
        precision: ``"fp32"`` (default), ``"bf16"`` (openvino), ``"fp16"`` or ``"int8"``; see `EngineOptions`.
        device: torch device of the torch backend (default ``"cpu"``).
        engine: an already-built `CamEngine` (then the engine options are not used).
        progress: show tqdm bars for exporting and masked scoring (default False).
        **source_options: how to read a non-zoo model (``labels``, ``target_layer``,
            ``input_size``, ``mean``, ``std``, ``layout``, ``target_layout``); see
            `unioncam_rt.sources.ModelSource`.
    """

    def __init__(
        self,
        model=None,
        *,
        method: str = "unioncam",
        theta: float = 10.0,
        batch_size: int | None = None,
        max_memory: int | str | None = None,
        budget=None,
        images_per_step: int = 4,
        weights: str | None = None,
        backend: str = "onnxruntime",
        engine_dir: str | Path | None = None,
        providers: list[str] | None = None,
        precision: str = "fp32",
        device: str = "cpu",
        engine: CamEngine | None = None,
        progress: bool = False,
        **source_options,
    ):
        if method not in METHODS:
            raise UnionCamError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
        if not 0 <= theta <= 100:
            raise UnionCamError(f"theta {theta} must be a percentile in [0, 100]")
        if (batch_size is not None and batch_size < 1) or images_per_step < 1:
            raise UnionCamError("batch size and images per step must be at least 1")
        memory_budget = parse_size(max_memory) if max_memory is not None else None
        channel_budget = Budget.parse(budget)
        self.method = method
        self.images_per_step = images_per_step
        if engine is None:
            if engine_dir is None and is_engine_dir(model):
                model, engine_dir = None, model
            if isinstance(model, ModelSource):
                source = model
            else:
                source = ModelSource(model, weights, **source_options) if model is not None else None
            options = EngineOptions(backend, Path(engine_dir) if engine_dir else None, providers, precision, device)
            engine = open_cached_engine(source, options, progress=progress)
        self.engine = engine
        self.progress = progress
        batch = batch_size or DEFAULT_BATCH
        if batch_size is not None and getattr(engine, "chunks_internally", False):
            engine.batch_size = batch_size  # the device batch of an engine that chunks on its device
        if memory_budget is not None:
            per_image = getattr(engine, "scoring_bytes_per_image", 0)
            if not per_image:
                raise UnionCamError("--max-memory applies to exported engines on the CPU (--backend onnxruntime)")
            batch = batch_for_memory(memory_budget, per_image, getattr(engine, "unread_weights_bytes", 0), batch)
        self.options = MethodOptions(theta=theta, batch_size=batch, budget=channel_budget)
        self.backend_name = " ".join(str(part) for part in (getattr(engine, "backend", None),
                                                             getattr(engine, "precision", None)) if part)

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    def class_index(self, target: Target) -> int:
        return resolve_class(target, self.engine.class_names)

    def explain_loaded(self, images: Sequence[LoadedImage], targets: Sequence[int]) -> list[Explanation]:
        """Explain already-loaded images (one step: their masks share engine calls)."""
        batch = np.stack([image.array for image in images])
        started = time.perf_counter()
        feats = self.engine.features(batch, np.asarray(targets, dtype=np.int64))
        features_s = time.perf_counter() - started
        counter = ScoreCounter.for_batch(len(images))
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=0, desc="masked passes", unit="pass", leave=False, disable=None)
        try:
            ctx = MethodContext(self.engine, batch, feats, self.options, counter, _BarProgress(bar) if bar else None)
            started = time.perf_counter()
            saliency = METHODS[self.method](ctx)
            cams, constant = finalize(saliency.maps, self.engine.input_size)
            method_s = time.perf_counter() - started
        finally:
            if bar is not None:
                bar.close()
        probs = softmax(feats.logits.astype(np.float64))
        names = self.engine.class_names
        shares = group_timings(features_s, method_s, counter.per_image.tolist())
        out = []
        for i, image in enumerate(images):
            c = int(feats.class_index[i])
            top = np.argsort(-probs[i])[:5]
            out.append(Explanation(
                image=image, model=self.model_name, method=self.method, cam=cams[i], class_index=c,
                class_name=names[c], probability=float(probs[i, c]),
                top5=[(int(k), names[k], float(probs[i, k])) for k in top],
                masked_passes=int(counter.per_image[i]), constant_map=bool(constant[i]),
                union=saliency.union[i] if saliency.union else None, theta=self.options.theta,
                timings=with_own_time(shares[i]),
                budget=self._budget_record(saliency.union[i] if saliency.union else None),
                backend=self.backend_name or None,
            ))
        return out

    def _budget_record(self, parts) -> dict | None:
        """The JSON's ``budget``: the run's budget and, under a tie rule, whether this image's
        near tie was decided again (``ties.rechecked``)."""
        if self.method not in BUDGETED:
            return None
        record = self.options.budget.describe()
        if record is not None and "ties" in record and parts is not None:
            record["ties"]["rechecked"] = parts.rechecked
        return record

    def iter_files(self, paths: Iterable[str | Path], target: Target = None) -> Iterator[tuple[Path, Explanation | UnionCamError]]:
        """Explain files ``images_per_step`` at a time; a bad file yields its error, the rest go on.

        An image that cannot be read never joins a step. If a step of several images fails
        (a `UnionCamError` from the engine), each of its images is explained alone, so
        only the one at fault is reported.
        """
        c = self.class_index(target)
        pending: list[tuple[Path, LoadedImage, float]] = []
        for path in paths:
            path = Path(path)
            started = time.perf_counter()
            loaded = read_image_file(path, self.engine.input_size)
            if isinstance(loaded, UnionCamError):
                yield path, loaded
                continue
            pending.append((path, loaded, time.perf_counter() - started))
            if len(pending) >= self.images_per_step:
                yield from self._explain_step(pending, c)
                pending = []
        if pending:
            yield from self._explain_step(pending, c)

    def _explain_step(self, pending: list[tuple[Path, LoadedImage, float]], c: int):
        """Explain loaded images together; on a `UnionCamError`, one by one (each failure yielded)."""
        try:
            results = self.explain_loaded([item for _, item, _ in pending], [c] * len(pending))
        except UnionCamError as exc:
            if len(pending) == 1:
                yield pending[0][0], UnionCamError(f"{pending[0][0]}: {exc}")
                return
            for item in pending:
                yield from self._explain_step([item], c)
            return
        for (path, _, load_s), result in zip(pending, results):
            result.timings = with_own_time(result.timings, load_s=load_s)
            yield path, result

    def explain(self, image, target: Target = None) -> Explanation:
        """Explain one image (path, PIL image or HxWx3 uint8 array)."""
        c = self.class_index(target)
        started = time.perf_counter()
        loaded = load_image(image, self.engine.input_size)
        load_s = time.perf_counter() - started
        result = self.explain_loaded([loaded], [c])[0]
        result.timings = with_own_time(result.timings, load_s=load_s)
        return result


def explain(image, model=None, target: Target = None, method: str = "unioncam", **kwargs) -> Explanation:
    """Explain one image in one call.

    Args:
        image: a path, a PIL image or an HxWx3 uint8 RGB array.
        model: engine directory, zoo name (default ``"efficientnet-lite0"``), Python factory
            or ONNX file; see `Explainer`.
        target: class index or name to explain (default: the top-1 prediction).
        method: CAM method (default ``"unioncam"``).
        **kwargs: passed to `Explainer` (``theta``, ``batch_size``, ``backend``, ``engine_dir``...).

    Returns:
        An `Explanation` with ``cam``, ``class_index``, ``union`` (betas, branch) and more.
    """
    return Explainer(model, method=method, **kwargs).explain(image, target)
