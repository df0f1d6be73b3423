"""The manifest against the graphs: what each opened session declares must be what the
manifest says. Torch-free, and needs no ``onnx``: the declarations are read from the
backend's own session (ONNX Runtime's inputs/outputs, OpenVINO's compiled ports,
TensorRT's engine tensors).

Export declares true shapes (`unioncam_rt.exporting.graphs`): every batch axis symbolic and
every other axis concrete. From the manifest, the graphs must declare

* ``features``: ``image [B, 3, H, W]`` and ``class_index [B]`` in; ``logits [B, C]``,
  ``activations`` and ``gradients [B, K, h, w]``, ``resolved_class_index [B]`` out;
* ``scores``: ``image [I, 3, H, W]``, ``masks [M, 1, h, w]``, ``image_index [M]`` and
  ``class_index [M]`` in; ``probs [M]`` out;

with (H, W) = ``input_size``, C = the number of ``class_names`` (and of ``black_probs``),
(K, h, w) = ``feature_shape``. A directory whose graphs say otherwise is refused at open,
in one line naming the tensor, both shapes and the manifest field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..manifest import EngineDirError, Manifest
from .session import Session

BATCH = None  # a symbolic (dynamic) axis


@dataclass(frozen=True)
class Declared:
    """A graph input or output as a session declares it: numpy dtype name and dims (None: symbolic)."""

    dtype: str
    dims: tuple


@dataclass(frozen=True)
class Expected:
    """What the manifest implies for one graph tensor, and from which fields."""

    dtype: str
    dims: tuple
    because: str


def features_contract(manifest: Manifest) -> tuple[dict[str, Expected], dict[str, Expected]]:
    """(inputs, outputs) the features graph must declare."""
    height, width = manifest.input_size
    k, h, w = manifest.feature_shape
    classes = len(manifest.class_names)
    image = Expected("float32", (BATCH, 3, height, width), f"input_size {[height, width]}")
    maps = Expected("float32", (BATCH, k, h, w), f"feature_shape {[k, h, w]}")
    index = Expected("int64", (BATCH,), "one class per image")
    return ({"image": image, "class_index": index},
            {"logits": Expected("float32", (BATCH, classes), f"{classes} class_names and black_probs"),
             "activations": maps, "gradients": maps, "resolved_class_index": index})


def scores_contract(manifest: Manifest) -> tuple[dict[str, Expected], dict[str, Expected]]:
    """(inputs, outputs) the scores graph must declare."""
    height, width = manifest.input_size
    k, h, w = manifest.feature_shape
    per_mask = Expected("int64", (BATCH,), "one per mask")
    return ({"image": Expected("float32", (BATCH, 3, height, width), f"input_size {[height, width]}"),
             "masks": Expected("float32", (BATCH, 1, h, w), f"feature_shape {[k, h, w]}"),
             "image_index": per_mask, "class_index": per_mask},
            {"probs": Expected("float32", (BATCH,), "one probability per mask")})


# --- what a session declares, per backend ------------------------------------------------------

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bfloat16)": "bfloat16"}
_OPENVINO_TYPES = {"f32": "float32", "f16": "float16", "f64": "float64", "i64": "int64", "i32": "int32",
                   "bf16": "bfloat16"}


def _dim(value):
    """A concrete axis length, or None for a symbolic / dynamic one."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _onnxruntime_io(session) -> tuple[dict[str, Declared], dict[str, Declared]]:
    def read(args):
        return {a.name: Declared(_ORT_TYPES.get(a.type, a.type), tuple(_dim(d) for d in a.shape)) for a in args}

    return read(session.session.get_inputs()), read(session.session.get_outputs())


def _openvino_io(session) -> tuple[dict[str, Declared], dict[str, Declared]]:
    from .openvino_session import port_name

    def read(ports):
        out = {}
        for port in ports:
            dims = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            kind = port.get_element_type().get_type_name()
            out[port_name(port)] = Declared(_OPENVINO_TYPES.get(kind, kind), dims)
        return out

    return read(session.compiled.inputs), read(session.compiled.outputs)


def _tensorrt_io(session) -> tuple[dict[str, Declared], dict[str, Declared]]:  # pragma: no cover - needs a GPU
    def read(names):
        return {n: Declared(session.dtypes[n].name, tuple(_dim(int(d)) for d in session.engine.get_tensor_shape(n)))
                for n in names}

    return read(session.input_names), read(session.output_names)


DECLARED_IO = {"onnxruntime": _onnxruntime_io, "openvino": _openvino_io, "tensorrt": _tensorrt_io}


def _show(dims) -> str:
    """``[?, 3, 224, 224]``: ``?`` for a symbolic (batch) axis."""
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _tensor_problem(name: str, kind: str, declared: Declared | None, expected: Expected) -> str | None:
    if declared is None:
        return f"has no {kind} {name!r}"
    if declared.dims != expected.dims:
        return (f"declares {kind} {name} as {_show(declared.dims)}, but the manifest implies "
                f"{_show(expected.dims)} ({expected.because})")
    if declared.dtype != expected.dtype:
        return f"declares {kind} {name} as {declared.dtype}, not {expected.dtype}"
    return None


def check_session(directory: Path, session: Session, contract) -> None:
    """Refuse ``session`` if its declared inputs/outputs differ from ``contract``."""
    reader = DECLARED_IO.get(session.backend)
    if reader is None:
        return
    inputs, outputs = reader(session)
    expected_in, expected_out = contract
    extra = sorted(set(inputs) - set(expected_in))
    if extra:
        raise EngineDirError(f"{directory}: {session.path.name} takes an unexpected input {extra[0]!r} (it must take "
                             f"{', '.join(expected_in)}); the directory is refused (re-export it)")
    for kind, declared, expected in (("input", inputs, expected_in), ("output", outputs, expected_out)):
        for name, want in expected.items():
            problem = _tensor_problem(name, kind, declared.get(name), want)
            if problem:
                raise EngineDirError(f"{directory}: {session.path.name} {problem}; the manifest and the graphs "
                                     "disagree, so the directory is refused (re-export it)")


def check_sessions(directory: Path, manifest: Manifest, features: Session, scores: Session,
                   decision: Session | None = None) -> None:
    """Check an engine's opened sessions against its manifest (see the module docstring)."""
    check_session(directory, features, features_contract(manifest))
    for session in (scores, decision):
        if session is not None:
            check_session(directory, session, scores_contract(manifest))
