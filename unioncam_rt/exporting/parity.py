"""The export's self-check: the exported engine directory, opened exactly as the runtime
opens it (`ExportedEngine`: shared initializers from ``weights.bin``, the runtime's
optimisation level; every installed CPU backend), against a reference.

* torch models: torch autograd (`TorchEngine`) for logits, activations, gradients, the
  resolved class and masked probabilities;
* ONNX models: the user's own graph in ONNX Runtime for logits and activations, and the
  gradient against central differences of the head (a directional derivative per image);
* every other installed backend (OpenVINO fp32): against ONNX Runtime's outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..compare import Comparison, compare
from ..errors import ModelError, UnionCamError
from ..method.ops import resize_bilinear, softmax

GRAPH_TOLERANCE = 1e-4  # max abs error relative to the reference tensor's max abs value
DIFFERENCE_TOLERANCE = 5e-2  # central differences in float32 are coarse: this catches wrong rules, not rounding
DIRECTIONS = 4  # random directions per image
STEPS = (1e-2, 1e-3, 1e-4)  # central-difference steps, relative to the largest activation
PROBABILITY_SCALE = 1e-2  # masked probabilities all near 0 (a random-weight net) are compared on this scale


def sample_inputs(input_size, feature_shape, classes: int, seed: int = 0):
    """Deterministic smooth images, classes and masks for the parity check."""
    rng = np.random.default_rng(seed)
    height, width = input_size
    images = np.clip(resize_bilinear(rng.random((2, 3, 8, 8)), (height, width)), 0, 1).astype(np.float32)
    masks = rng.random((5, 1, *feature_shape[1:])).astype(np.float32)
    chosen = np.array([-1, min(7, classes - 1)], dtype=np.int64)
    mask_classes = np.arange(1, 6, dtype=np.int64) % classes
    return images, chosen, masks, np.array([0, 1, 1, 0, 1]), mask_classes


def open_engine(directory: Path, backend: str = "onnxruntime"):
    """The staged engine directory opened as the runtime opens it (CPU, fp32), closed on exit."""
    from contextlib import closing

    from ..runtime.exported import ExportedEngine

    providers = ["CPUExecutionProvider"] if backend == "onnxruntime" else None
    return closing(ExportedEngine(directory, backend=backend, providers=providers))


def other_backends() -> list[str]:
    """The installed CPU backends besides ONNX Runtime that every export is checked on."""
    import importlib.util

    return ["openvino"] if importlib.util.find_spec("openvino") is not None else []


def black_probs(engine, input_size) -> np.ndarray:
    """Softmax of the all-black image for every class, from the exported features graph."""
    logits = engine.features(np.zeros((1, 3, *input_size), np.float32), np.array([0], np.int64)).logits
    return softmax(logits[0].astype(np.float64))


def engine_outputs(engine, images, classes, masks, image_index, mask_classes) -> dict[str, np.ndarray]:
    """What the parity check compares, from one engine."""
    batch = engine.features(images, classes)
    return {"logits": batch.logits, "activations": batch.activations, "gradients": batch.gradients,
            "class_index": batch.class_index,
            "probs": engine.masked_probs(images, masks, image_index, mask_classes)}


def compare_outputs(got: dict, want: dict, tolerance: float = GRAPH_TOLERANCE, prefix: str = "") -> list[Comparison]:
    """`compare` of every output two engines share (the class index exactly)."""
    return [compare(prefix + name, got[name], want[name], 0.0 if name == "class_index" else tolerance,
                    PROBABILITY_SCALE if name == "probs" else 0.0)
            for name in want if name in got]


def torch_parity(engine, torch_engine, images, classes, masks, image_index, mask_classes,
                 tolerance: float = GRAPH_TOLERANCE) -> list[Comparison]:
    """The exported engine (ONNX Runtime, CPU, fp32) vs the torch autograd reference."""
    try:
        ref = torch_engine.features(images, classes)
        want = {"logits": ref.logits, "activations": ref.activations, "gradients": ref.gradients,
                "class_index": ref.class_index,
                "probs": torch_engine.masked_probs(images, masks, image_index, mask_classes)}
    except UnionCamError:
        raise
    except Exception as exc:  # the user's forward code under autograd
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelError(f"the torch reference (autograd through the model's forward) fails: {type(exc).__name__}: "
                         f"{first[:300]}; export with --no-check to skip the comparison") from None
    return compare_outputs(engine_outputs(engine, images, classes, masks, image_index, mask_classes), want, tolerance)


def _head_model(forward):
    """The forward graph cut at the target: ``target -> logits``, and the trunk tensors
    besides the target that the head reads (a skip around the target, or shapes), which
    become inputs too: fed at their forward values, they are held fixed as the exported
    gradient holds them (a partial derivative)."""
    from .onnx_graph import GraphReader, TensorProto, helper, onnx

    model = onnx.ModelProto()
    model.CopyFrom(forward.model)
    graph = model.graph
    reader = GraphReader(graph, forward.directory)
    trunk = reader.ancestors(forward.target)  # the target itself is now an input
    needed = reader.ancestors("logits")
    keep = [n for n in graph.node if any(o in needed for o in n.output) and not any(o in trunk for o in n.output)]
    del graph.node[:]
    graph.node.extend(keep)
    produced = {o for n in keep for o in n.output} | {i.name for i in graph.initializer}
    extra = sorted({i for n in keep for i in n.input if i and i in trunk and i not in produced and i != forward.target
                    and not reader.is_constant(i)})
    del graph.input[:]
    for name in [forward.target, *extra]:
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return model, extra


def onnx_parity(directory: Path, engine, classifier, images, classes, tolerance: float = GRAPH_TOLERANCE,
                seed: int = 0) -> list[Comparison]:
    """The exported features graph vs the user's ONNX graph (logits, activations) and vs
    central differences of the head (gradients)."""
    from .onnx_graph import run_onnx

    forward = classifier.forward
    mean = np.asarray(classifier.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(classifier.std, np.float32).reshape(1, 3, 1, 1)
    fed = (images - mean) / std
    if classifier.layout == "nhwc":
        fed = fed.transpose(0, 2, 3, 1)
    names = [classifier.logits_name, classifier.target_layer]
    runs = [run_onnx(classifier.original, {classifier.input_name: np.ascontiguousarray(fed[i:i + 1])}, names, directory)
            for i in range(len(fed))]  # one image a run: the user's graph may declare batch 1
    want = {name: np.concatenate([run[name] for run in runs]) for name in names}
    batch = engine.features(images, classes)
    got = {"logits": batch.logits, "activations": batch.activations, "gradients": batch.gradients,
           "resolved_class_index": batch.class_index}
    acts = want[classifier.target_layer]
    if forward.target_layout == "nhwc":
        acts = acts.transpose(0, 3, 1, 2)
    results = [compare("logits", got["logits"], want[classifier.logits_name], tolerance),
               compare("activations", got["activations"], acts, tolerance)]
    head, shape_inputs = _head_model(forward)
    grads = got["gradients"]
    target_acts = want[classifier.target_layer]
    if forward.target_layout == "nhwc":
        grads = grads.transpose(0, 2, 3, 1)
    rng = np.random.default_rng(seed)
    rows, analytic, plan, row_image = [], [], [], []
    for i, c in enumerate(got["resolved_class_index"]):
        a = target_acts[i].astype(np.float32)
        for _ in range(DIRECTIONS):
            # perturb only non-zero activations: a ReLU's zeros are where max pooling ties
            v = (rng.standard_normal(a.shape) * (a != 0)).astype(np.float32)
            analytic.append(float((grads[i].astype(np.float64) * v).sum()))
            for step in STEPS:
                eps = step * max(float(np.abs(a).max()), 1e-3) / max(float(np.abs(v).max()), 1e-12)
                plan.append((len(analytic) - 1, int(c), eps, len(rows)))
                rows += [a + eps * v, a - eps * v]
                row_image += [i, i]
    feeds = {forward.target: np.stack(rows).astype(np.float32)}
    if shape_inputs:  # the trunk's values for each row's image, at the rows' batch size
        fed = images[row_image]
        trunk = [name for name in shape_inputs if name != "image"]
        feeds.update(run_onnx(forward.model, {"image": fed}, trunk, directory) if trunk else {})
        if "image" in shape_inputs:
            feeds["image"] = fed
    logits = run_onnx(head, feeds, ["logits"], directory)["logits"]
    errors = np.full(len(analytic), np.inf)
    for direction, c, eps, row in plan:
        numeric = (float(logits[row, c]) - float(logits[row + 1, c])) / (2 * eps)
        expected = analytic[direction]
        # the best of the step sizes: a large step may cross a kink, a small one drown in rounding
        errors[direction] = min(errors[direction],
                                abs(numeric - expected) / max(abs(numeric), abs(expected), 1e-9))
    # the median over directions: one direction whose step crosses a kink (ReLU, a max
    # pooling near-tie) must not fail the check; a wrong rule is off in most directions
    results.append(Comparison("gradients (central differences, median relative error)", float(np.max(errors)),
                              float(np.median(errors)), DIFFERENCE_TOLERANCE))
    results.append(compare("class_index", got["resolved_class_index"],
                           np.where(classes < 0, want[classifier.logits_name].argmax(1), classes), 0.0))
    return results
