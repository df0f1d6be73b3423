"""Graph quirks of third-party CNNs, each in a tiny net: layer scale with a shared-weight
trap, in-place operations after the target, adaptive pools that upsample, shape arithmetic
in ONNX graphs from torch's dynamo exporter, ONNX target choice, conventional targets."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
nn = torch.nn

import unioncam_rt  # noqa: E402
from unioncam_rt.cli import app  # noqa: E402
from unioncam_rt.errors import UnionCamError  # noqa: E402
from unioncam_rt.runtime.exported import ExportedEngine  # noqa: E402
from unioncam_rt.runtime.torch_engine import TorchEngine  # noqa: E402
from unioncam_rt.sources.torch_source import build_classifier  # noqa: E402

SIZE = 32
TOLERANCE = 1e-4


class LayerScaleNet(nn.Module):
    """A timm ConvNeXt block: LayerNorm and Linear in NHWC between permutes, then the
    layer-scale ``Mul`` of gamma ([1, C, 1, 1], 1.5 KiB, so it goes to weights.bin), then
    pooling and a linear head."""

    def __init__(self, channels=384, blocks=2):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 4, stride=4)
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(blocks))
        self.fcs = nn.ModuleList(nn.Linear(channels, channels) for _ in range(blocks))
        self.gammas = nn.ParameterList(nn.Parameter(torch.linspace(0.5, 1.5, channels)) for _ in range(blocks))
        self.head = nn.Linear(channels, 5)

    def block(self, x):
        for norm, fc, gamma in zip(self.norms, self.fcs, self.gammas):
            y = fc(norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
            x = x + y.mul(gamma.reshape(1, -1, 1, 1))
        return x

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))


class InPlaceNet(nn.Module):
    """In-place operations on the target's output (``bn``): an in-place add as in ResNet's
    ``out += identity``, then DenseNet's ``F.relu(x, inplace=True)``; a functional pool and
    ``torch.flatten`` in the head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        out = self.bn(self.conv(x))
        out += 0.25
        out = nn.functional.relu(out, inplace=True)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


class UpsamplingPoolNet(nn.Module):
    """VGG's classifier at a small input: AdaptiveAvgPool2d(3) of a 2x2 map (an output size
    that is not a factor of the input size, which the TorchScript exporter refuses)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, stride=16, padding=1), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(3)
        self.classifier = nn.Linear(6 * 9, 4)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _seeded(net):
    torch.manual_seed(0)
    for p in net.parameters():
        if p.dim() > 1:
            nn.init.normal_(p, std=0.2)
    return net.eval()


def _images(count=2, size=SIZE):
    return np.random.default_rng(3).random((count, 3, size, size)).astype(np.float32)


def _engine_matches_autograd(directory, net, target, size=SIZE):
    reference = TorchEngine(build_classifier(net, target_layer=target, input_size=size))
    engine = ExportedEngine(directory)
    images, classes = _images(size=size), np.array([-1, 1])
    got, want = engine.features(images, classes), reference.features(images, classes)
    for name in ("activations", "gradients"):
        a, b = getattr(got, name), getattr(want, name)
        assert np.abs(a - b).max() <= TOLERANCE * np.abs(b).max(), name
    return engine


def test_layer_scale_runs_on_the_default_runtime(tmp_path):
    """ConvNeXt's failure: the transpose optimiser rewrote gamma in place while the shared
    initializer overrode it. Gamma is now read by the graph itself; the rest is shared."""
    net = _seeded(LayerScaleNet())
    report = unioncam_rt.export(net, tmp_path / "e", target_layer="stem", input_size=SIZE)
    index = json.loads((tmp_path / "e" / "manifest.json").read_text())["weights"]["tensors"]
    shared = {name for name, entry in index.items() if entry["graphs"]}
    assert any("stem" in name for name in shared)  # the conv weight is shared by both graphs
    gamma = [name for name in index if index[name]["shape"] == [1, 384, 1, 1]]
    assert gamma and not any(index[name]["graphs"] for name in gamma)
    engine = _engine_matches_autograd(report.directory, net, "stem")
    cam = unioncam_rt.Explainer(engine=engine, budget=16).explain((_images(1)[0].transpose(1, 2, 0) * 255).astype(np.uint8))
    assert np.isfinite(cam.cam).all()


def test_export_check_opens_the_directory_as_the_runtime_does(tmp_path, monkeypatch):
    """Sharing every initializer again (the old behaviour) fails the export in one line,
    where it used to pass and leave a directory that explain could not run."""
    from unioncam_rt.exporting import weights

    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    convnext = timm.create_model("convnext_pico", pretrained=False, num_classes=3).eval()
    monkeypatch.setattr(weights, "shareable_initializers", lambda model: {t.name for t in model.graph.initializer})
    with pytest.raises(UnionCamError, match="features.onnx failed on onnxruntime"):
        unioncam_rt.export(convnext, tmp_path / "e", target_layer="stages.3", input_size=64)
    assert not (tmp_path / "e").exists()


def test_in_place_operations_after_the_target(tmp_path):
    net = _seeded(InPlaceNet())
    report = unioncam_rt.export(net, tmp_path / "e", target_layer="bn", input_size=SIZE)
    assert all(c.ok for c in report.parity)
    engine = _engine_matches_autograd(report.directory, net, "bn")
    # the activations are the target's output before the in-place ops changed it
    with torch.no_grad():
        x = (torch.from_numpy(_images()) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / \
            torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        want = net.bn(net.conv(x)).numpy()
    got = engine.features(_images(), np.array([-1, -1])).activations
    assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()
    assert (got < 0).any()  # not the ReLU'd tensor


def test_adaptive_pool_that_upsamples_exports(tmp_path):
    net = _seeded(UpsamplingPoolNet())
    report = unioncam_rt.export(net, tmp_path / "e", target_layer="features", input_size=SIZE)
    _engine_matches_autograd(report.directory, net, "features")
    assert type(net.avgpool).forward is nn.AdaptiveAvgPool2d.forward and "forward" not in vars(net.avgpool)


def test_reference_failure_is_one_line(tmp_path):
    class FailsUnderAutograd(InPlaceNet):
        def forward(self, x):
            if torch.is_grad_enabled():
                raise RuntimeError("boom\nsecond line")
            return super().forward(x)

    with pytest.raises(UnionCamError, match="torch reference .* fails: RuntimeError: boom; export with --no-check"):
        unioncam_rt.export(_seeded(FailsUnderAutograd()), tmp_path / "e", target_layer="bn", input_size=SIZE)


def test_one_position_target_is_refused(tmp_path):
    with pytest.raises(UnionCamError, match="one spatial position .* larger --input-size"):
        unioncam_rt.export(_seeded(UpsamplingPoolNet()), tmp_path / "e", target_layer="features", input_size=16)


# --- ONNX files -------------------------------------------------------------------------------

def _dynamo_onnx(net, path, size=SIZE):
    pytest.importorskip("onnxscript")
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(2, 3, size, size),), str(path), dynamo=True, input_names=["input"],
                          output_names=["output"], dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    return path


class FlattenByShapeNet(LayerScaleNet):
    """A head that flattens with ``x.view(x.shape[0], -1)`` after a reshape of the pooled
    map: the dynamo exporter writes ``Shape(input) -> Gather -> Reshape``."""

    def forward(self, x):
        x = self.block(self.stem(x))
        pooled = x.mean((2, 3), keepdim=True)
        return self.head(pooled.view(x.shape[0], -1))


def test_dynamo_onnx_shape_arithmetic_is_not_a_bypass(tmp_path):
    net = _seeded(FlattenByShapeNet())
    path = _dynamo_onnx(net, tmp_path / "net.onnx")
    report = unioncam_rt.export(path, tmp_path / "e")
    assert all(c.ok for c in report.parity)
    # the default target is the last spatial map before the pooling, as in the module
    reference = TorchEngine(build_classifier(net, target_layer="stem", input_size=SIZE))
    images = _images()
    want = reference.features(images, np.array([-1, 1]))
    assert report.manifest.feature_shape == (384, SIZE // 4, SIZE // 4)
    got = ExportedEngine(report.directory).features(images, np.array([-1, 1]))
    # activations of the block output (x after the residual), gradients at that tensor
    with torch.no_grad():
        assert got.activations.shape == want.activations.shape
    assert np.isfinite(got.gradients).all() and np.abs(got.gradients).max() > 0


def test_onnx_inspect_lists_computed_maps_in_their_layout(tmp_path):
    path = _dynamo_onnx(_seeded(FlattenByShapeNet()), tmp_path / "net.onnx")
    result = CliRunner().invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    nhwc = [line for line in lines if " nhwc " in line]
    assert nhwc and all(f"384x{SIZE // 4}x{SIZE // 4}" in line for line in nhwc)  # K x h x w read in NHWC
    default = [line for line in lines if "default target" in line]
    assert len(default) == 1 and " nchw " in default[0]
    assert "1 position: not a target" in result.output  # the pooled map is listed, flagged
    assert not any(name in result.output for name in ("gamma", "weight", "bias"))  # no constants


class NhwcHeadNet(nn.Module):
    """The last spatial map is channels-last: a Linear over NHWC tokens, then a mean over
    the grid (as a Keras-style or Swin-like head)."""

    def __init__(self, channels=24):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 4, stride=4)
        self.norm = nn.LayerNorm(channels)
        self.fc = nn.Linear(channels, channels)
        self.head = nn.Linear(channels, 5)

    def forward(self, x):
        y = self.fc(self.norm(self.stem(x).permute(0, 2, 3, 1)))
        return self.head(y.mean((1, 2)))


def test_onnx_nhwc_target_gets_its_layout_and_post_pool_target_is_refused(tmp_path):
    net = _seeded(NhwcHeadNet())
    path = _dynamo_onnx(net, tmp_path / "net.onnx")
    from unioncam_rt.exporting.onnx_classifier import list_tensors

    tensors = list_tensors(path)
    report = unioncam_rt.export(path, tmp_path / "nhwc")  # the default: the NHWC Linear output
    assert report.manifest.feature_shape == (24, SIZE // 4, SIZE // 4)
    assert report.manifest.target_layer == [t for t in tensors if t.positions > 1][-1].name
    assert [t for t in tensors if t.positions > 1][-1].layout == "nhwc"
    # its activations are the module's NHWC tensor read as K x h x w
    with torch.no_grad():
        x = (torch.from_numpy(_images()) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / \
            torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        want = net.fc(net.norm(net.stem(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2).numpy()
    got = ExportedEngine(report.directory).features(_images(), np.array([-1, -1])).activations
    assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()
    pooled_path = _dynamo_onnx(_seeded(FlattenByShapeNet()), tmp_path / "pooled.onnx")
    pooled = next(t for t in list_tensors(pooled_path) if t.positions == 1)
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--model", str(pooled_path), "--target-layer", pooled.name, "--out",
                                 str(tmp_path / "pooled")])
    assert result.exit_code == 2
    assert "one spatial position" in result.output and "e.g. the last spatial feature map" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "pooled").exists()


def test_onnx_with_a_fixed_batch_of_one_is_refused_with_the_fix(tmp_path):
    pytest.importorskip("onnxscript")
    import warnings

    net = _seeded(FlattenByShapeNet())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(1, 3, SIZE, SIZE),), str(tmp_path / "b1.onnx"), dynamo=True, verbose=False)
    with pytest.raises(UnionCamError, match="fixed batch of 1; re-export it with a dynamic batch axis"):
        unioncam_rt.export(tmp_path / "b1.onnx", tmp_path / "e")


# --- conventional targets ----------------------------------------------------------------------

def test_conventional_targets_of_known_families():
    torchvision = pytest.importorskip("torchvision")
    from unioncam_rt.sources.conventions import conventional_target
    from unioncam_rt.sources.torch_source import Normalize, default_target

    resnet = torchvision.models.resnet18(num_classes=3).eval()
    assert conventional_target(resnet) == "layer4"
    assert default_target(resnet, (64, 64), Normalize((0, 0, 0), (1, 1, 1))) == "layer4"
    assert conventional_target(InPlaceNet()) is None
    timm = pytest.importorskip("timm")
    convnext = timm.create_model("convnext_pico", pretrained=False, num_classes=3).eval()
    assert default_target(convnext, (64, 64), Normalize((0, 0, 0), (1, 1, 1))) == "stages.3"
    result = CliRunner().invoke(app, ["inspect", "torchvision.models:resnet18", "--input-size", "64"])
    assert result.exit_code == 0, result.output
    assert any("layer4" in line and "conventional for ResNet" in line and "default target" in line
               for line in result.output.splitlines())
