"""The torch-CUDA engine against the CPU reference (needs a CUDA GPU: ``pytest -m gpu``)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU", allow_module_level=True)

from unioncam_rt.compare import compare  # noqa: E402
from unioncam_rt.explainer import Explainer  # noqa: E402
from unioncam_rt.runtime.torch_engine import TorchEngine  # noqa: E402
from unioncam_rt.sources.torch_source import build_classifier  # noqa: E402


@pytest.fixture(scope="module")
def classifier():
    return build_classifier("resnet18", "random:0")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((3, 3, 224, 224)).astype(np.float32)


def test_cuda_fp32_matches_the_cpu_reference(classifier, images):
    cpu, gpu = TorchEngine(classifier, "cpu"), TorchEngine(classifier, "cuda", batch_size=8)
    classes = np.array([-1, 3, 999])
    ref, got = cpu.features(images, classes), gpu.features(images, classes)
    for name in ("logits", "activations", "gradients"):
        result = compare(name, getattr(got, name), getattr(ref, name), 1e-3)
        assert result.ok, result
    masks = np.random.default_rng(1).random((21, 1, 7, 7)).astype(np.float32)  # 3 chunks, the last short
    index, cls = np.arange(21) % 3, np.arange(21) * 7 % 1000
    assert np.abs(gpu.masked_probs(images, masks, index, cls) - cpu.masked_probs(images, masks, index, cls)).max() < 1e-5


def test_cuda_fp16_unioncam_stays_close_to_fp32(classifier, images):
    fp32 = Explainer(engine=TorchEngine(classifier, "cuda"), batch_size=64)
    fp16 = Explainer(engine=TorchEngine(classifier, "cuda", "fp16"), batch_size=64)
    for array in images:
        image = (array.transpose(1, 2, 0) * 255).astype(np.uint8)
        a, b = fp32.explain(image, target=5), fp16.explain(image, target=5)
        assert np.corrcoef(a.cam.ravel(), b.cam.ravel())[0, 1] > 0.98


def test_compiled_scoring_equals_eager(classifier, images):
    eager = TorchEngine(classifier, "cuda", batch_size=8)
    compiled = TorchEngine(classifier, "cuda", batch_size=8, compile=True)
    masks = np.random.default_rng(2).random((13, 1, 7, 7)).astype(np.float32)
    index, cls = np.arange(13) % 3, np.arange(13)
    np.testing.assert_allclose(compiled.masked_probs(images, masks, index, cls),
                               eager.masked_probs(images, masks, index, cls), atol=1e-4)
