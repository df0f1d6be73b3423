"""Third-party CNN families as a new user brings them (see ``tests/model_matrix.py``).

Every torchvision classification family and the main timm CNN families, as ``nn.Module``s,
and a subset as ONNX files from both torch exporters: each exports with its default
target, its gradients equal torch autograd's at the same tensor within 1e-4, and it
explains on ONNX Runtime and OpenVINO with the same map (Pearson >= 0.999). Small inputs
(64-96 px), seeded random weights; the full-size run is ``benchmarks/model_matrix.py``.
"""

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("openvino")
timm = pytest.importorskip("timm")

from .model_matrix import BY_ID, CASES, run  # noqa: E402

GRADIENT_TOLERANCE = 1e-4
MAP_PEARSON = 0.999
# ONNX forms: one family per kind of graph quirk (layer scale with NHWC LayerNorm, in-place
# ReLU after the target, concatenations, squeeze-excitation, grouped convs, adaptive pools)
ONNX_CASES = ["timm-convnext_atto", "torchvision-densenet121", "torchvision-mobilenet_v3_small",
              "torchvision-resnet18", "timm-efficientnet_b0", "torchvision-shufflenet_v2_x0_5"]


# ONNX files whose default target (the last spatial map) is no module's output, so autograd
# has no hook there; their gradients are held to central differences by the export's check
OTHER_TENSOR = {"torchvision-densenet121": "the ReLU after `features` is a functional call"}


def _check(result):
    assert result.ok, result.error
    assert result.pearson_openvino >= MAP_PEARSON, result
    if result.form != "module" and result.case in OTHER_TENSOR:
        return
    assert result.target_is_torch_target, f"{result.case} {result.form}: target {result.target} is not the torch default"
    assert result.gradient_error <= GRADIENT_TOLERANCE, result


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_module_exports_and_explains(case, tmp_path):
    _check(run(case, "module", tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("form", ["onnx-ts", "onnx-dynamo"])
@pytest.mark.parametrize("case_id", ONNX_CASES)
def test_onnx_file_exports_and_explains(case_id, form, tmp_path):
    if form == "onnx-dynamo":
        pytest.importorskip("onnxscript")
    _check(run(BY_ID[case_id], form, tmp_path))
