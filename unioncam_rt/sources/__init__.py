"""Where a classifier comes from, and how to read it (torch-free).

A `ModelSource` names the model and the options that say how to feed it:

* a **zoo** name (``vgg16``, ``resnet50``, ``efficientnet-lite0``...), optionally with the
  user's checkpoint (``weights``), whose class count comes from the checkpoint;
* a **Python factory**, ``PATH.py:FUNCTION`` or ``package.module:FUNCTION``: a callable
  that returns an ``nn.Module`` (any forward code), with ``target_layer`` a module name
  as in ``named_modules()``;
* an **ONNX** classifier file (``*.onnx``), with ``target_layer`` the name of an
  intermediate tensor of the graph;
* an ``nn.Module`` instance (Python API only).

Building the classifier needs the ``export`` extra: `unioncam_rt.sources.torch_source`
for torch models, `unioncam_rt.sources.onnx_source` for ONNX files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import ModelError, UnionCamError
from ..manifest import sha256_file
from ..zoo.spec import IMAGENET_MEAN, IMAGENET_STD, MODELS

LAYOUTS = ("nchw", "nhwc")
TARGET_LAYOUTS = ("nchw", "nhwc", "tokens")


def source_kind(model: Any) -> str:
    """``"zoo"``, ``"python"``, ``"onnx"`` or ``"module"`` for a ``--model`` value."""
    if not isinstance(model, (str, Path)):
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None and isinstance(model, torch.nn.Module):
            return "module"
        raise ModelError(f"model must be a zoo name, a .onnx file, PATH.py:FUNCTION or an nn.Module; "
                         f"got {type(model).__name__}")
    text = str(model)
    if text in MODELS:
        return "zoo"
    if text.lower().endswith(".onnx"):
        return "onnx"
    if ":" in text and text.rsplit(":", 1)[1].isidentifier():
        return "python"
    raise ModelError(f"unknown model {text!r}; give a zoo name ({', '.join(MODELS)}), an ONNX file "
                     "(*.onnx), or a Python factory PATH.py:FUNCTION / package.module:FUNCTION")


def parse_input_size(text: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``"224"`` -> (224, 224); ``"192,160"`` -> (192, 160) as (H, W)."""
    if text is None:
        return None
    if isinstance(text, int):
        text = [text]
    parts = [p for p in str(text).replace("x", ",").split(",") if p.strip()] if isinstance(text, str) else list(text)
    try:
        values = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise UnionCamError(f"--input-size {text!r}: give H,W or one number, e.g. 224 or 192,160") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 8:
        raise UnionCamError(f"--input-size {text!r}: give H,W (each at least 8) or one number")
    return values[0], values[1]


def parse_triple(text: str | Sequence[float] | None, option: str) -> tuple[float, float, float] | None:
    """``"0.5,0.5,0.5"`` (or one number) -> a per-channel (R, G, B) triple."""
    if text is None:
        return None
    parts = [p for p in text.split(",") if p.strip()] if isinstance(text, str) else list(text)
    try:
        values = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise UnionCamError(f"{option} {text!r}: give R,G,B numbers, e.g. 0.485,0.456,0.406") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise UnionCamError(f"{option} {text!r}: give three numbers R,G,B (or one for all)")
    if option == "--std" and min(values) <= 0:
        raise UnionCamError(f"--std {text!r}: every value must be positive")
    return values[0], values[1], values[2]


def read_labels(labels: str | Path | Sequence[str]) -> list[str]:
    """Class names from a file (one per line, or a JSON list) or a sequence.

    Blank lines are ignored; a repeated name is refused (``--class NAME`` must be unambiguous).
    """
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        if not path.is_file():
            raise UnionCamError(f"labels file {path} does not exist")
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UnionCamError(f"labels file {path} is unreadable ({exc})") from None
        if path.suffix.lower() == ".json":
            try:
                names = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UnionCamError(f"labels file {path}: not valid JSON ({exc})") from None
            if not isinstance(names, list):
                raise UnionCamError(f"labels file {path}: expected a JSON list of names")
            names = [str(n) for n in names]
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
        where = str(path)
    else:
        names, where = [str(n) for n in labels], "labels"
    if not names:
        raise UnionCamError(f"{where}: no class names")
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name.lower() in seen:
            raise UnionCamError(f"{where}: class name {name!r} appears twice (entries {seen[name.lower()]} and {index})")
        seen[name.lower()] = index
    return names


def default_labels(count: int) -> list[str]:
    """ImageNet's names for 1000 classes, else ``class_0`` ... ``class_{count-1}``."""
    if count == 1000:
        from ..zoo.spec import imagenet_classes

        return list(imagenet_classes())
    return [f"class_{i}" for i in range(count)]


def check_labels(names: list[str] | None, count: int) -> list[str]:
    """The class names for ``count`` logits: the user's (count must match) or the defaults."""
    if names is None:
        return default_labels(count)
    if len(names) != count:
        raise UnionCamError(f"{len(names)} labels given but the model has {count} outputs (logits)")
    return names


@dataclass
class ModelSource:
    """A classifier to export or explain, and how to read it.

    Attributes:
        model: zoo name, ``PATH.py:FUNCTION``, ``package.module:FUNCTION``, ``*.onnx`` path,
            or an ``nn.Module`` instance.
        weights: a state_dict file (loaded with ``weights_only=True``) or ``random[:SEED]``;
            default: zoo models' real ImageNet weights, factories' own initialisation.
        labels: class names (file: one per line, or a JSON list; or a sequence). Default:
            ImageNet's for 1000 classes, else ``class_0``...
        target_layer: module name (torch) or tensor name (ONNX). Default: the zoo's choice;
            for other models the last 4-D feature map before the logits.
        input_size: (H, W). Default: zoo 224x224; ONNX: the declared input size; else 224.
        mean, std: per-channel normalisation of [0, 1] RGB, put inside the exported graph.
            Default: the zoo model's; ImageNet's for other models.
        layout: ONNX input layout ``nchw`` or ``nhwc`` (default: detected from the input).
        target_layout: layout of the target's output: ``nchw`` or ``nhwc``, or ``tokens``
            (torch models: a transformer's ``[B, N, C]``). Default: inferred (ONNX: from the
            graph, see `unioncam_rt.exporting.onnx_targets`; torch: from the output's shape, see
            `unioncam_rt.sources.target_map`).
    """

    model: Any
    weights: str | None = None
    labels: str | Path | Sequence[str] | None = None
    target_layer: str | None = None
    input_size: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    layout: str | None = None
    target_layout: str | None = None

    def __post_init__(self):
        self.input_size = parse_input_size(self.input_size)
        self.mean = parse_triple(self.mean, "--mean")
        self.std = parse_triple(self.std, "--std")
        kind = self.kind
        if self.layout is not None and self.layout not in LAYOUTS:
            raise UnionCamError(f"--layout {self.layout!r} unknown; available: {', '.join(LAYOUTS)}")
        if self.target_layout is not None and self.target_layout not in TARGET_LAYOUTS:
            raise UnionCamError(f"--target-layout {self.target_layout!r} unknown; available: "
                                f"{', '.join(TARGET_LAYOUTS)}")
        if kind != "onnx" and self.layout not in (None, "nchw"):
            raise UnionCamError("--layout applies to ONNX models; torch models take NCHW")
        if kind == "onnx" and self.target_layout == "tokens":
            raise UnionCamError("--target-layout tokens applies to torch models; for an ONNX file choose a 4-D target "
                                "tensor (nchw or nhwc), e.g. the patch grid after a Reshape")
        if kind == "onnx" and self.weights is not None:
            raise UnionCamError("--weights does not apply to an ONNX model: its weights are in the file")
        if kind == "onnx" and not Path(self.model).is_file():
            raise UnionCamError(f"ONNX file {self.model} does not exist")

    @property
    def kind(self) -> str:
        return source_kind(self.model)

    @property
    def name(self) -> str:
        """A short display name: the zoo name (``+checkpoint`` stem for a fine-tuned one),
        the factory's name, the ONNX file's stem."""
        kind = self.kind
        if kind == "zoo":
            fine_tuned = self.weights is not None and not str(self.weights).startswith("random")
            return f"{self.model}+{Path(self.weights).stem}" if fine_tuned else str(self.model)
        if kind == "python":
            return str(self.model).rsplit(":", 1)[1]
        if kind == "onnx":
            return Path(self.model).stem
        return type(self.model).__name__

    def label_names(self) -> list[str] | None:
        return None if self.labels is None else read_labels(self.labels)

    def resolved_mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.kind == "zoo":
            spec = MODELS[str(self.model)]
            return self.mean or spec.mean, self.std or spec.std
        return self.mean or IMAGENET_MEAN, self.std or IMAGENET_STD

    def cache_key(self) -> str:
        """A digest of everything that decides the exported graphs (files by content)."""
        kind = self.kind
        if kind == "module":
            raise UnionCamError("an nn.Module instance has no cache entry; export it with unioncam_rt.export(..., out=DIR)")
        model = str(self.model)
        fields: dict[str, Any] = {"kind": kind, "model": model}
        if kind == "onnx":
            fields["model"] = sha256_file(Path(model))
        elif kind == "python":
            location = model.rsplit(":", 1)[0]
            if location.endswith(".py") or "/" in location:
                path = Path(location)
                if not path.is_file():
                    raise UnionCamError(f"factory file {path} does not exist")
                fields["factory_sha256"] = sha256_file(path)
        weights = self.weights
        if weights is not None and not str(weights).startswith("random"):
            path = Path(weights)
            if not path.is_file():
                raise UnionCamError(f"weights file {path} does not exist")
            weights = "sha256:" + sha256_file(path)
        fields.update(weights=weights, labels=self.label_names(), target_layer=self.target_layer,
                      input_size=self.input_size, mean=self.mean, std=self.std, layout=self.layout,
                      target_layout=self.target_layout)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
