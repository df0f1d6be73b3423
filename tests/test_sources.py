"""Your own classifier: Python factories, nn.Module instances and ONNX files through
export, the Python API and the CLI, and every bad input's one-line error."""

import json
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import unioncam_rt  # noqa: E402
from unioncam_rt.cli import app  # noqa: E402
from unioncam_rt.errors import UnionCamError  # noqa: E402
from unioncam_rt.exporting.pipeline import ExportConfig, export_model  # noqa: E402

from . import heads  # noqa: E402

SIZE = (16, 16)

FACTORY = textwrap.dedent('''
    import torch
    from torch import nn


    class Net(nn.Module):
        """A non-Sequential forward with a skip inside the target block and a BN1d/GELU head."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.block = nn.Conv2d(8, 8, 3, padding=1)
            self.act = nn.ReLU()
            self.fc1 = nn.Linear(8, 12)
            self.bn = nn.BatchNorm1d(12)
            self.fc2 = nn.Linear(12, 4)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = self.act(x + self.block(x))  # the target: the block's output after its skip joins
            return self.fc2(nn.functional.gelu(self.bn(self.fc1(x.mean(dim=(2, 3))))))


    class Skip(Net):
        """The logits see the stem's output directly: a skip around the target ``block``."""

        def forward(self, x):
            s = torch.relu(self.stem(x))
            y = torch.relu(self.block(s)) + s
            return self.fc2(self.fc1(y.mean(dim=(2, 3))))


    def make():
        torch.manual_seed(0)
        return Net().eval()


    def skip():
        torch.manual_seed(0)
        return Skip().eval()


    def not_a_module():
        return 42


    def upsampling_head():
        torch.manual_seed(0)

        class Up(Net):
            def forward(self, x):
                x = torch.relu(self.block(torch.relu(self.stem(x))))
                x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
                return self.fc2(self.fc1(x.mean(dim=(2, 3))))

        return Up().eval()
''')


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "mynet.py"
    path.write_text(FACTORY)
    return path


@pytest.fixture
def picture(tmp_path):
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(path)
    return path


def onnx_file(tmp_path, net, name="model.onnx", nhwc=False, softmax=False, batch_one=False):
    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            y = self.net(x.permute(0, 3, 1, 2) if nhwc else x)
            return torch.softmax(y, dim=1) if softmax else y

    shape = (1 if batch_one else 2, *SIZE, 3) if nhwc else (1 if batch_one else 2, 3, *SIZE)
    path = tmp_path / name
    dynamic = None if batch_one else {"x": {0: "n"}, "y": {0: "n"}}
    torch.onnx.export(Wrapped().eval(), (torch.rand(*shape),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes=dynamic, opset_version=13, dynamo=False)
    return path


def test_python_factory_export_and_explain_with_labels(tmp_path, factory, picture):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\nfish\n")
    out = tmp_path / "engine"
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--model", f"{factory}:make", "--target-layer", "act", "--input-size",
                                 "20,24", "--labels", str(labels), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "make (python)" in result.output and "20x24" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == ["cat", "dog", "bird", "fish"]
    assert manifest["source"]["kind"] == "python" and manifest["source"]["factory"].endswith("mynet.py:make")
    assert manifest["input_size"] == [20, 24] and manifest["target_layer"] == "act"
    result = runner.invoke(app, ["explain", str(picture), "--engine", str(out), "--class", "Dog",
                                 "--out", str(tmp_path / "o"), "--save-npy"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "o" / "photo.json").read_text())
    assert record["class_index"] == 1 and record["class_name"] == "dog"
    assert {t["class_name"] for t in record["top5"]} == {"cat", "dog", "bird", "fish"}
    assert np.load(tmp_path / "o" / "photo.cam.npy").shape == (20, 24)


def test_python_api_exports_a_module_and_an_onnx_file(tmp_path, picture):
    net = heads.build("gap_bn1d_gelu_mlp")
    report = unioncam_rt.export(net, tmp_path / "m", target_layer="features", labels=list("abcde"), input_size=16)
    assert report.manifest.source["kind"] == "module" and report.manifest.class_names == list("abcde")
    explainer = unioncam_rt.Explainer(tmp_path / "m", batch_size=16)
    result = explainer.explain(picture, target="c")
    assert result.class_name == "c" and result.cam.shape == SIZE
    path = onnx_file(tmp_path, net)
    report = unioncam_rt.export(str(path), tmp_path / "o", labels=list("abcde"))
    assert report.manifest.source["kind"] == "onnx" and report.manifest.layout == "nchw"
    got = unioncam_rt.Explainer(tmp_path / "o", batch_size=16).explain(picture, target="c")
    assert got.branch == result.branch
    assert np.corrcoef(got.cam.ravel(), result.cam.ravel())[0, 1] > 0.999


def test_nhwc_softmax_batch_one_onnx_explains_the_logits(tmp_path, picture):
    net = heads.build("conv3x3_overlapping_maxpool")
    path = onnx_file(tmp_path, net, nhwc=True, softmax=True, batch_one=True)
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "<- default target" in result.output and "8x8x8" in result.output
    report = export_model(ExportConfig(str(path), tmp_path / "e"))
    manifest = report.manifest
    # the default target: the last 4-D map before the logits (here the max pooling's output)
    assert manifest.layout == "nhwc" and manifest.input_size == SIZE and manifest.feature_shape == (8, 4, 4)
    engine = unioncam_rt.Explainer(tmp_path / "e").engine
    images = np.random.default_rng(0).random((2, 3, *SIZE)).astype(np.float32)
    normalised = (torch.from_numpy(images) - torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)) / torch.tensor(
        (0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = net(normalised).numpy()
    np.testing.assert_allclose(engine.features(images, np.array([-1, -1])).logits, logits, atol=1e-5)


def test_target_tensor_in_nhwc(tmp_path):
    net = heads.build("gap_bn1d_gelu_mlp")

    class Keras(torch.nn.Module):  # a channels-last graph, as converted TensorFlow models are
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            features = self.net.features(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # [B, h, w, K]
            return self.net.head[5](self.net.head[2](features.mean(dim=(1, 2)))), features

    path = tmp_path / "k.onnx"
    torch.onnx.export(Keras().eval(), (torch.rand(2, *SIZE, 3),), str(path), input_names=["x"], output_names=["y", "f"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}, "f": {0: "n"}}, opset_version=13, dynamo=False)
    report = export_model(ExportConfig(str(path), tmp_path / "e", target_layer="f", target_layout="nhwc"))
    assert report.manifest.feature_shape == (8, 8, 8) and report.manifest.layout == "nhwc"
    assert all(c.ok for c in report.parity)
    images = np.random.default_rng(0).random((2, 3, *SIZE)).astype(np.float32)
    from unioncam_rt.runtime.exported import ExportedEngine

    got = ExportedEngine(tmp_path / "e").features(images, np.array([1, 3]))
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    x = ((torch.from_numpy(images) - mean) / std).permute(0, 2, 3, 1)
    features = net.features(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().requires_grad_(True)
    logits = net.head[5](net.head[2](features.mean(dim=(1, 2))))
    (grads,) = torch.autograd.grad(logits[[0, 1], [1, 3]].sum(), features)
    np.testing.assert_allclose(got.activations, features.detach().permute(0, 3, 1, 2).numpy(), atol=1e-5)
    np.testing.assert_allclose(got.gradients, grads.permute(0, 3, 1, 2).numpy(), atol=1e-6)


def _error_lines(output: str) -> list[str]:
    """The output less the export's progress lines (printed per finished step without a
    terminal): what remains must be the one error line, and it must come last."""
    lines = [line for line in output.strip().splitlines() if not line.startswith("export ")]
    assert lines and lines[-1].startswith("error: "), output
    return lines


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("args,words", [
    (["--target-layer", "blok"], "target layer 'blok' is not a module of the model; closest: block"),
    (["--target-layer", "fc1"], "must be a 4-D feature map"),
    (["--labels", "LABELS3"], "3 labels given but the model has 4 outputs"),
    (["--input-size", "2"], "--input-size '2': give H,W (each at least 8)"),
    (["--weights", "BADWEIGHTS"], "mynet.py:make: tensor 'fc2.weight' is [5, 12] in the checkpoint but [4, 12]"),
    (["--model", "FACTORY:nope"], "has no callable 'nope'"),
    (["--model", "FACTORY:not_a_module"], "not_a_module() returned int, not a torch.nn.Module"),
    (["--model", "no_such_module_xyz:make"], "cannot import module no_such_module_xyz"),
    (["--model", "FACTORY:upsampling_head", "--target-layer", "block"], "head op Resize"),
    (["--model", "alexnet"], "unknown model 'alexnet'"),
])
def test_bad_models_get_one_line_errors_and_leave_nothing(tmp_path, factory, args, words):
    (tmp_path / "labels3.txt").write_text("a\nb\nc\n")
    namespace: dict = {}
    exec(compile(FACTORY, "factory", "exec"), namespace)
    bad = namespace["make"]().state_dict()
    bad["fc2.weight"] = torch.zeros(5, 12)
    torch.save(bad, tmp_path / "bad.pth")
    subs = {"LABELS3": str(tmp_path / "labels3.txt"), "BADWEIGHTS": str(tmp_path / "bad.pth")}
    args = [subs.get(a, a.replace("FACTORY", str(factory))) for a in args]
    options = {"--model": f"{factory}:make", "--target-layer": "act", "--input-size": "16"}
    options.update(dict(zip(args[::2], args[1::2])))
    result = run_cli("export", *[x for pair in options.items() for x in pair], "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert words in result.output, result.output
    assert "Traceback" not in result.output and len(_error_lines(result.output)) == 1
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_bad_onnx_files_get_one_line_errors(tmp_path):
    net = heads.build("gap_bn1d_gelu_mlp")
    good = onnx_file(tmp_path, net)
    two = tmp_path / "two.onnx"
    torch.onnx.export(heads.WithFeatures(net), (torch.rand(2, 3, *SIZE),), str(two), input_names=["x"],
                      output_names=["a", "b"], opset_version=13, dynamo=False)
    model = onnx.load(str(two))
    model.graph.output.append(onnx.helper.make_tensor_value_info("a2", onnx.TensorProto.FLOAT, [2, 5]))
    model.graph.node.append(onnx.helper.make_node("Identity", ["a"], ["a2"]))
    onnx.save(model, str(tmp_path / "twologits.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    cases = [
        ([tmp_path / "junk.onnx"], "is not a readable ONNX model"),
        ([tmp_path / "twologits.onnx"], "is not a classifier: it needs exactly one 2-D float output"),
        ([good, "--target-layer", "nothing_here"], "target tensor 'nothing_here' is not computed in"),
        ([good, "--target-layer", "/net/head/head.2/Gemm_output_0"], "must be a 4-D feature map"),
        ([good, "--weights", "x.pth"], "--weights does not apply to an ONNX model"),
        ([tmp_path / "missing.onnx"], "does not exist"),
    ]
    for args, words in cases:
        result = run_cli("export", "--model", *args, "--out", tmp_path / "out")
        assert result.exit_code == 2 and words in result.output, (args, result.output)
        assert len(_error_lines(result.output)) == 1
        assert not (tmp_path / "out").exists()


def test_input_size_the_network_rejects(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 3))
    with pytest.raises(UnionCamError, match="the network rejects input size 20x20"):
        export_model(ExportConfig(net, tmp_path / "e", target_layer="1", input_size=20))
    export_model(ExportConfig(net, tmp_path / "e", target_layer="1", input_size=16))


def test_an_onnx_file_from_torch_s_default_dynamo_exporter(tmp_path):
    """torch >= 2.9 exports with dynamo by default: opset 20 (a Gelu node, ReduceMean with
    axes as an input, BatchNorm1d folded into Gemm), a non-224 input, a ResNet-style block."""
    pytest.importorskip("onnxscript")
    net = heads.build("gap_bn1d_gelu_mlp")
    path = tmp_path / "dynamo.onnx"
    torch.onnx.export(heads.WithFeatures(net), (torch.rand(2, 3, 24, 20),), str(path), input_names=["x"],
                      output_names=["logits", "feat"], dynamic_shapes={"x": {0: torch.export.Dim("b")}}, dynamo=True)
    assert max(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")) >= 18
    report = export_model(ExportConfig(str(path), tmp_path / "e", target_layer="feat"))
    assert all(c.ok for c in report.parity) and report.manifest.input_size == (24, 20)
    from unioncam_rt.runtime.exported import ExportedEngine
    from unioncam_rt.sources.torch_source import build_classifier

    from .independent import logits_and_leaf_activations

    images = np.random.default_rng(3).random((3, 3, 24, 20)).astype(np.float32)
    got = ExportedEngine(tmp_path / "e").features(images, np.array([-1, 1, 4]))
    logits, acts = logits_and_leaf_activations(build_classifier(net, target_layer="features", input_size=(24, 20)),
                                               torch.from_numpy(images))
    chosen = torch.tensor([int(logits[0].argmax()), 1, 4])
    (grads,) = torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), acts)
    scale = float(grads.abs().max())
    assert float(np.abs(got.gradients - grads.numpy()).max()) <= 1e-4 * scale
    assert got.class_index.tolist() == chosen.tolist()
