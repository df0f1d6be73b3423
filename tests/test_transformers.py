"""Vision transformers and targets inside residual blocks: token outputs read as
``[B, K, h, w]`` maps (prefix tokens dropped), channels-last Swin stages, and the partial
derivative at a target that a skip bypasses, each against autograd at the hooked output
(computed here independently of the package, tokens mapped to the grid here too)."""

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
nn = torch.nn

import unioncam_rt  # noqa: E402
from unioncam_rt.cli import app  # noqa: E402
from unioncam_rt.errors import ModelError, UnionCamError  # noqa: E402
from unioncam_rt.manifest import EngineDirError, load_manifest  # noqa: E402
from unioncam_rt.runtime.exported import ExportedEngine  # noqa: E402
from unioncam_rt.sources.conventions import conventional_target, resolve  # noqa: E402
from unioncam_rt.sources.target_map import infer_target_map, token_grid  # noqa: E402
from unioncam_rt.sources.torch_source import build_classifier  # noqa: E402

TOLERANCE = 1e-4


def _images(count, size):
    height, width = (size, size) if isinstance(size, int) else size
    return np.random.default_rng(5).random((count, 3, height, width)).astype(np.float32)


def _grid(tensor, layout, prefix=0, grid=None):
    """The test's own reading of a target output as [B, K, h, w]."""
    if layout == "tokens":
        b, _, c = tensor.shape
        return tensor[:, prefix:].reshape(b, grid[0], grid[1], c).permute(0, 3, 1, 2)
    return tensor.permute(0, 3, 1, 2) if layout == "nhwc" else tensor


def _leaf(model, x):
    """Logits with the target's output replaced by a leaf (the rest reads a copy of it, so
    in-place ops after the target such as ResNet's ``out += identity`` leave it alone)."""
    seen = []

    def hook(module, inputs, output):
        seen.append(output.detach().requires_grad_(True))
        return seen[-1].clone()

    handle = dict(model.net.named_modules())[model.target_layer].register_forward_hook(hook)
    try:
        logits = model.net(model.normalize(x))
    finally:
        handle.remove()
    return logits, seen[0]


def _autograd(net, target, size, images, classes, layout="nchw", prefix=0, grid=None):
    """Activations and d logit[c] / d A at a leaf A (the hooked output), read as a grid."""
    model = build_classifier(net, target_layer=target, input_size=size)
    logits, leaf = _leaf(model, torch.from_numpy(images))
    wanted = torch.from_numpy(classes)
    resolved = torch.where(wanted < 0, logits.argmax(1), wanted)
    (grads,) = torch.autograd.grad(logits.gather(1, resolved[:, None]).sum(), leaf)
    return (_grid(leaf.detach(), layout, prefix, grid).numpy(), _grid(grads, layout, prefix, grid).numpy(),
            resolved.numpy())


def _close(got, want, name):
    error = np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)
    assert error <= TOLERANCE, f"{name}: {error:.2e} of max|ref|"


def _export_matches_autograd(tmp_path, net, target, size, layout="nchw", prefix=0, grid=None, backend="onnxruntime"):
    """Export (target as given, or the default where None), then the default runtime's
    features against the independent autograd reference; returns the manifest."""
    report = unioncam_rt.export(net, tmp_path / "engine", target_layer=target, input_size=size)
    manifest = report.manifest
    engine = ExportedEngine(tmp_path / "engine", backend=backend)
    images = _images(3, size)
    for classes in (np.array([-1, -1, -1]), np.array([0, 3, 9])):
        got = engine.features(images, classes)
        acts, grads, resolved = _autograd(net, manifest.target_layer, size, images, classes, layout, prefix, grid)
        _close(got.activations, acts, "activations")
        _close(got.gradients, grads, "gradients")
        assert got.class_index.tolist() == resolved.tolist()
        assert np.abs(grads).max() > 0
    return manifest


def _total_derivative(net, target, size, images, cls):
    """d logit / d (the target's output) where the skip reads that same tensor too: what a
    gradient through every consumer would give (not the partial derivative)."""
    model = build_classifier(net, target_layer=target, input_size=size)
    module = dict(net.named_modules())[target]
    seen = []

    def hook(m, inputs, output):
        seen.append(output)
        output.retain_grad()

    handle = module.register_forward_hook(hook)
    try:
        logits = model(torch.from_numpy(images))
    finally:
        handle.remove()
    logits[:, cls].sum().backward()
    return seen[0].grad.numpy()


# --- inner-residual targets: partial derivatives -------------------------------------------------

@pytest.mark.parametrize("target", ["layer4.1.conv2", "layer4.1.bn2"])
def test_resnet_target_inside_a_residual_block(tmp_path, target):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    report = unioncam_rt.export(net, tmp_path / "engine", target_layer=target, input_size=64)
    assert "layer4.1/Add" in report.bypass and "partial derivative" in report.summary()
    _export_matches_autograd(tmp_path / "again", net, target, 64)


class SkipAroundIdentity(nn.Module):
    """The target ``inner`` returns its input, which the skip also reads: in the traced
    graph the module's output and the skip's input are one tensor."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.inner = nn.Identity()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        return self.fc((torch.relu(self.conv(self.inner(s))) + s).mean((2, 3)))


def test_a_target_that_returns_the_skip_s_own_tensor_gets_the_partial_derivative(tmp_path):
    torch.manual_seed(0)
    net = SkipAroundIdentity().eval()
    _export_matches_autograd(tmp_path, net, "inner", 16)
    images = _images(3, 16)
    total = _total_derivative(net, "inner", 16, images, 2)
    _, partial, _ = _autograd(net, "inner", 16, images, np.array([2, 2, 2]))
    assert np.abs(total - partial).max() > 0.1 * np.abs(partial).max()  # the two differ: the check can fail


def test_an_onnx_file_with_a_skip_around_its_target_passes_central_differences(tmp_path):
    torch.manual_seed(0)
    net = SkipAroundIdentity().eval()

    class WithTarget(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            s = torch.relu(net.stem(x))
            inner = torch.relu(net.conv(s))
            return net.fc((inner + s).mean((2, 3))), inner

    path = tmp_path / "skip.onnx"
    torch.onnx.export(WithTarget().eval(), (torch.rand(2, 3, 16, 16),), str(path), input_names=["x"],
                      output_names=["y", "inner"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}, "inner": {0: "n"}},
                      opset_version=17, dynamo=False)
    report = unioncam_rt.export(str(path), tmp_path / "engine", target_layer="inner")
    differences = [c for c in report.parity if "central differences" in c.name]
    assert differences and differences[0].ok and report.bypass


# --- token maps ---------------------------------------------------------------------------------

def _timm(name, **kwargs):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()


def test_timm_vit_default_target_is_the_last_block_s_norm1_read_as_a_token_grid(tmp_path):
    net = _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3)
    manifest = _export_matches_autograd(tmp_path, net, None, 32, "tokens", 1, (4, 4))
    assert manifest.target_layer == "blocks.2.norm1" and manifest.feature_shape == (192, 4, 4)
    assert manifest.target_map == {"layout": "tokens", "shape": [17, 192], "prefix_tokens": 1, "grid": [4, 4]}
    ops = set()
    for graph in ("features.onnx", "scores.onnx"):
        import onnx

        ops |= {n.op_type for n in onnx.load(str(tmp_path / "engine" / graph), load_external_data=False).graph.node}
    assert "ScatterElements" not in ops  # the class token's Gather has a constant index: a MatMul backward


def test_deit_distillation_token_is_a_second_prefix_token(tmp_path):
    net = _timm("deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, depth=2)
    manifest = _export_matches_autograd(tmp_path, net, "blocks.1.norm1", 32, "tokens", 2, (4, 4))
    assert manifest.target_map["prefix_tokens"] == 2


def test_register_tokens_and_token_mean_pooling(tmp_path):
    net = _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, reg_tokens=4, global_pool="avg",
                class_token=False)
    manifest = _export_matches_autograd(tmp_path, net, "blocks.1", 32, "tokens", 4, (4, 4))
    assert manifest.target_map["prefix_tokens"] == 4


def test_non_square_input_grid(tmp_path):
    net = _timm("vit_tiny_patch16_224", img_size=(32, 48), patch_size=8, depth=2)
    manifest = _export_matches_autograd(tmp_path, net, "blocks.1.norm1", (32, 48), "tokens", 1, (4, 6))
    assert manifest.feature_shape == (192, 4, 6)


@pytest.mark.parametrize("target", ["blocks.1", "norm"])
def test_a_head_reading_only_the_class_token_is_refused_with_the_layer_to_use(tmp_path, target):
    net = _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)
    with pytest.raises(ModelError, match=r"read none of its 4x4 patch tokens .* choose blocks\.1\.norm1$"):
        unioncam_rt.export(net, tmp_path / "engine", target_layer=target, input_size=32)
    assert not (tmp_path / "engine").exists()


def test_timm_swin_channels_last_stage_with_shifted_windows(tmp_path):
    net = _timm("swin_tiny_patch4_window7_224", img_size=64, window_size=4, depths=(2, 2), num_heads=(2, 4),
                embed_dim=32)
    manifest = _export_matches_autograd(tmp_path, net, None, 64, "nhwc")
    assert manifest.target_layer == "layers.1.blocks.1.norm1" and manifest.feature_shape == (64, 8, 8)
    assert manifest.target_map == {"layout": "nhwc", "shape": [8, 8, 64]}


def _torchvision_vit():
    pytest.importorskip("torchvision")
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    net = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                            num_classes=10)
    nn.init.normal_(net.heads.head.weight, std=0.5)  # torchvision starts the head at zero
    return net.eval()


def test_torchvision_vit_with_nn_multihead_attention(tmp_path):
    net = _torchvision_vit()
    manifest = _export_matches_autograd(tmp_path, net, None, 32, "tokens", 1, (4, 4))
    assert manifest.target_layer == "encoder.layers.encoder_layer_1.ln_1"


def test_torchvision_swin_last_stage(tmp_path):
    pytest.importorskip("torchvision")
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    net = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                          num_classes=10).eval()
    manifest = _export_matches_autograd(tmp_path, net, None, 64, "nhwc")
    assert manifest.target_layer == "features.3" and manifest.feature_shape == (32, 8, 8)


def test_explain_a_vit_on_the_default_runtime_exact_and_fast(tmp_path):
    net = _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)
    report = unioncam_rt.export(net, tmp_path / "engine", input_size=32)
    image = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    exact = unioncam_rt.Explainer(report.directory).explain(image)
    assert exact.cam.shape == (32, 32) and np.isfinite(exact.cam).all() and exact.cam.max() > 0
    budgeted = unioncam_rt.Explainer(report.directory, budget=24).explain(image)
    assert np.isfinite(budgeted.cam).all() and budgeted.masked_passes < exact.masked_passes


# --- reading, conventions, manifest, inspect -----------------------------------------------------

def test_token_grid_from_the_count_or_the_patch_size():
    assert token_grid(197, (224, 224)) == (1, (14, 14))
    assert token_grid(198, (224, 224)) == (2, (14, 14))
    assert token_grid(201, (224, 224), patch_size=16) == (5, (14, 14))
    assert token_grid(24, (32, 48)) == (0, (4, 6))
    assert token_grid(25, (32, 48), patch_size=(8, 8)) == (1, (4, 6))
    assert token_grid(197, (224, 224), patch_size=16) == (1, (14, 14))
    assert infer_target_map((7, 7, 768), (224, 224)).layout == "nhwc"
    assert infer_target_map((768, 7, 7), (224, 224)).layout == "nchw"
    assert infer_target_map((8, 8, 8), (64, 64), channels_last=True).layout == "nhwc"
    with pytest.raises(ModelError, match="must be a 4-D feature map"):
        infer_target_map((12,), (64, 64))


def test_last_index_components_resolve_dynamically():
    names = {"blocks", "blocks.0", "blocks.1", "blocks.11", "blocks.11.norm1", "blocks.2.norm1",
             "encoder.layers.encoder_layer_3.ln_1", "encoder.layers.encoder_layer_12.ln_1",
             "encoder.layers.encoder_layer_3", "encoder.layers.encoder_layer_12"}
    assert resolve("blocks.-1.norm1", names) == "blocks.11.norm1"
    assert resolve("encoder.layers.encoder_layer_-1.ln_1", names) == "encoder.layers.encoder_layer_12.ln_1"
    assert resolve("stages.-1", names) is None
    assert conventional_target(_timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=5)) == "blocks.4.norm1"


def test_an_unknown_transformer_family_defaults_to_a_layer_whose_patch_tokens_are_read():
    timm = pytest.importorskip("timm")
    from unioncam_rt.sources.torch_source import Normalize, default_target

    class MyViT(timm.models.vision_transformer.VisionTransformer):  # no convention for this class
        pass

    torch.manual_seed(0)
    net = MyViT(img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2, num_classes=10).eval()
    # not the last block's output or the final norm (class token only), not attn.k_norm (heads x tokens x dims)
    assert default_target(net, (32, 32), Normalize((0, 0, 0), (1, 1, 1))) == "blocks.1.attn.qkv"


def test_inspect_lists_token_layers_and_the_conventional_target(tmp_path):
    pytest.importorskip("timm")
    factory = tmp_path / "vit.py"
    factory.write_text("import timm\n\ndef make():\n    return timm.create_model('vit_tiny_patch16_224', "
                       "pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=10)\n")
    result = CliRunner().invoke(app, ["inspect", f"{factory}:make", "--input-size", "32"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.strip().startswith("blocks.1.norm1 "))
    assert "tokens (1 prefix)" in line and "192x4x4" in line and "conventional for VisionTransformer" in line
    last = next(line for line in result.output.splitlines() if line.strip().startswith("blocks.1 "))
    assert "patch tokens unread (class token only): not a target" in last
    export = CliRunner().invoke(app, ["export", "--model", f"{factory}:make", "--input-size", "32",
                                      "--out", str(tmp_path / "engine")])
    assert export.exit_code == 0, export.output
    shown = CliRunner().invoke(app, ["inspect", str(tmp_path / "engine")])
    assert "from tokens 17x192: 1 prefix tokens dropped, 4x4 patch grid" in shown.output, shown.output


def test_manifest_target_map_is_optional_and_checked(tmp_path):
    net = _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)
    directory = unioncam_rt.export(net, tmp_path / "engine", input_size=32).directory
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    for bad, words in (({**data["target_map"], "prefix_tokens": 2}, "prefix_tokens + h*w = N"),
                       ({**data["target_map"], "layout": "tokens_nhwc"}, "expected {} or {layout: nchw|nhwc|tokens")):
        path.write_text(json.dumps({**data, "target_map": bad}))
        with pytest.raises(EngineDirError, match=re.escape(words)):
            load_manifest(directory)
    path.write_text(json.dumps({k: v for k, v in data.items() if k != "target_map"}))  # an older export
    assert load_manifest(directory).target_map == {}


def test_token_layout_is_refused_for_onnx_files(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"")
    with pytest.raises(UnionCamError, match="--target-layout tokens applies to torch models"):
        unioncam_rt.export(str(path), tmp_path / "engine", target_layout="tokens")
