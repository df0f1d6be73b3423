"""The model matrix: third-party CNN families (torchvision, timm) run as a new user would.

Each case builds the family's network with seeded random weights (no downloads), then for
one *form* — the ``nn.Module`` itself, or an ONNX file made by torch's TorchScript
(``onnx-ts``) or dynamo (``onnx-dynamo``) exporter with a dynamic batch axis — exports it
with the default target (the family's conventional layer for modules, the last spatial
feature map for ONNX files), compares the engine's gradients with torch autograd at the
same tensor, and explains one image on ONNX Runtime and OpenVINO.

Used by ``tests/test_model_matrix.py`` (small inputs, CI) and
``benchmarks/model_matrix.py`` (full size, the README table).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FORMS = ("module", "onnx-ts", "onnx-dynamo")


@dataclass(frozen=True)
class Case:
    """One family: where its builder lives and the smallest variant's name.

    Attributes:
        family: display name.
        library: ``torchvision`` or ``timm``.
        builder: the builder's name in that library.
        size: the smallest input side (px) at which the default target is spatial and the
            network runs (used by the CI tests).
    """

    family: str
    library: str
    builder: str
    size: int = 64

    @property
    def id(self) -> str:
        return f"{self.library}-{self.builder}"


TORCHVISION = [
    Case("AlexNet", "torchvision", "alexnet", 96),
    Case("VGG", "torchvision", "vgg11", 64),
    Case("ResNet", "torchvision", "resnet18"),
    Case("ResNeXt", "torchvision", "resnext50_32x4d"),
    Case("Wide ResNet", "torchvision", "wide_resnet50_2"),
    Case("DenseNet", "torchvision", "densenet121"),
    Case("SqueezeNet", "torchvision", "squeezenet1_1", 64),
    Case("GoogLeNet", "torchvision", "googlenet"),
    Case("Inception v3", "torchvision", "inception_v3", 96),
    Case("MobileNet v2", "torchvision", "mobilenet_v2"),
    Case("MobileNet v3", "torchvision", "mobilenet_v3_small"),
    Case("MNASNet", "torchvision", "mnasnet0_5"),
    Case("ShuffleNet v2", "torchvision", "shufflenet_v2_x0_5"),
    Case("EfficientNet", "torchvision", "efficientnet_b0"),
    Case("EfficientNet v2", "torchvision", "efficientnet_v2_s"),
    Case("RegNet", "torchvision", "regnet_x_400mf"),
    Case("ConvNeXt", "torchvision", "convnext_tiny"),
]
TIMM = [
    Case("ResNet (timm)", "timm", "resnet18"),
    Case("ResNet-D", "timm", "resnet50d"),
    Case("EfficientNet (timm)", "timm", "efficientnet_b0"),
    Case("EfficientNet-Lite", "timm", "tf_efficientnet_lite0"),
    Case("MobileNet v3 (timm)", "timm", "mobilenetv3_small_050"),
    Case("ConvNeXt (timm)", "timm", "convnext_atto"),
    Case("RegNet (timm)", "timm", "regnetx_002"),
    Case("DenseNet (timm)", "timm", "densenet121"),
    Case("DLA", "timm", "dla34"),
    Case("GhostNet", "timm", "ghostnet_050"),
    Case("MixNet", "timm", "mixnet_s"),
    Case("ReXNet", "timm", "rexnet_100"),
    Case("Res2Net", "timm", "res2net50_14w_8s"),
    Case("ResNeSt", "timm", "resnest14d"),
    Case("CSPNet", "timm", "cspresnet50"),
    Case("RepVGG", "timm", "repvgg_a0"),
    Case("NFNet", "timm", "nf_resnet26"),
    Case("LCNet", "timm", "lcnet_050"),
    Case("DPN", "timm", "dpn68"),
    Case("VoVNet", "timm", "ese_vovnet19b_dw"),
    Case("MobileOne", "timm", "mobileone_s0"),
    Case("Xception", "timm", "xception41", 96),
]
CASES = TORCHVISION + TIMM
BY_ID = {case.id: case for case in CASES}
CLASSES = 7


def build(case: Case, seed: int = 0):
    """The case's network, seeded random weights, ``CLASSES`` classes, eval mode."""
    import torch

    torch.manual_seed(seed)
    if case.library == "torchvision":
        import torchvision

        options = {"aux_logits": False, "init_weights": True} if case.builder in ("googlenet", "inception_v3") else {}
        net = getattr(torchvision.models, case.builder)(num_classes=CLASSES, **options)
    else:
        import timm

        net = timm.create_model(case.builder, pretrained=False, num_classes=CLASSES)
    return net.eval()


def onnx_file(net, form: str, size: int, path: Path) -> Path:
    """``net`` written to ``path`` by torch's TorchScript or dynamo exporter, dynamic batch."""
    import torch

    image = torch.rand(2, 3, size, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if form == "onnx-ts":
            torch.onnx.export(net, (image,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        else:
            torch.onnx.export(net, (image,), str(path), dynamo=True, input_names=["input"], output_names=["output"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    return path


@dataclass
class Result:
    """What one case and form gave (None: not reached)."""

    family: str
    case: str
    form: str
    size: int
    ok: bool = False
    error: str | None = None
    target: str | None = None
    feature_shape: list | None = None
    gradient_error: float | None = None  # max |engine - autograd| / max |autograd| at the same tensor
    target_is_torch_target: bool | None = None
    pearson_openvino: float | None = None  # ONNX Runtime map vs OpenVINO map
    seconds: dict = field(default_factory=dict)

    def row(self) -> dict:
        return asdict(self)


def _images(size: int, count: int = 2) -> np.ndarray:
    from unioncam_rt.method.ops import resize_bilinear

    rng = np.random.default_rng(1)
    return np.clip(resize_bilinear(rng.random((count, 3, 6, 6)), (size, size)), 0, 1).astype(np.float32)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b, atol=1e-6) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def run(case: Case, form: str, workdir: Path, size: int | None = None, budget: int | str = 16) -> Result:
    """Export ``case`` in ``form``, check its gradients and explain one image on ONNX
    Runtime and OpenVINO; errors are recorded, not raised."""
    import unioncam_rt
    from unioncam_rt import Explainer
    from unioncam_rt.errors import UnionCamError
    from unioncam_rt.runtime.exported import ExportedEngine
    from unioncam_rt.runtime.torch_engine import TorchEngine
    from unioncam_rt.sources.torch_source import build_classifier

    size = size or case.size
    result = Result(case.family, case.id, form, size)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        net = build(case)
        reference = TorchEngine(build_classifier(net, input_size=size))
        model = net if form == "module" else onnx_file(net, form, size, workdir / f"{case.id}.{form}.onnx")
        result.seconds["model"] = time.perf_counter() - started
        started = time.perf_counter()
        report = unioncam_rt.export(model, workdir / f"{case.id}.{form}", input_size=size)
        result.seconds["export"] = time.perf_counter() - started
        manifest = report.manifest
        result.target, result.feature_shape = manifest.target_layer, list(manifest.feature_shape)
        images, classes = _images(size), np.array([-1, 3])
        maps = {}
        for backend in ("onnxruntime", "openvino"):
            engine = ExportedEngine(report.directory, backend=backend)
            if backend == "onnxruntime":
                got, want = engine.features(images, classes), reference.features(images, classes)
                same = got.activations.shape == want.activations.shape and np.allclose(
                    got.activations, want.activations, rtol=0, atol=1e-4 * max(np.abs(want.activations).max(), 1e-12))
                result.target_is_torch_target = bool(same)
                if same:
                    scale = max(float(np.abs(want.gradients).max()), 1e-30)
                    result.gradient_error = float(np.abs(got.gradients - want.gradients).max()) / scale
            started = time.perf_counter()
            photo = (images[0].transpose(1, 2, 0) * 255).round().astype(np.uint8)
            explanation = Explainer(engine=engine, budget=budget).explain(photo)
            result.seconds[f"explain {backend}"] = time.perf_counter() - started
            maps[backend] = explanation.cam
            engine.close()
        result.pearson_openvino = _pearson(maps["onnxruntime"], maps["openvino"])
        result.ok = True
    except UnionCamError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a crash is a finding of the matrix, recorded with its type
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result.error = f"crash {type(exc).__name__}: {first[:300]}"
    return result
