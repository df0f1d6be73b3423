import json

import numpy as np
import pytest

from unioncam_rt.metrics import (
    AverageDropIncrease,
    InsertionDeletion,
    causal_curves,
    drop_and_increase,
    pixel_order,
    trapezoid_auc,
)


class BrightnessEngine:
    """probs = [mean brightness, 1 - mean brightness]: a model whose answer is easy to predict."""

    input_size = (16, 16)
    feature_shape = (1, 4, 4)

    def probs(self, images):
        m = images.reshape(len(images), -1).mean(1)
        return np.stack([m, 1 - m], 1)

    def masked_probs(self, images, masks, image_index, class_index):
        assert (masks == 1).all()
        return self.probs(images[image_index])[np.arange(len(image_index)), class_index]


def test_auc_and_per_image_terms():
    assert trapezoid_auc(np.ones(113)) == pytest.approx(1.0)
    assert trapezoid_auc(np.linspace(0, 1, 113)) == pytest.approx(0.5)
    assert drop_and_increase(0.8, 0.2) == (pytest.approx(75.0), 0.0)
    assert drop_and_increase(0.5, 0.6) == (0.0, 100.0)


def test_metric_classes_update_summary_reset():
    adi = AverageDropIncrease()
    adi.update(1.0, 0.5)
    adi.update(0.5, 1.0)
    assert adi.summary() == {"avg_drop": 25.0, "avg_increase": 50.0, "images": 2}
    adi.reset()
    assert adi.summary()["images"] == 0
    idel = InsertionDeletion()
    idel.update(np.ones(5), np.zeros(5))
    assert idel.summary()["overall"] == pytest.approx(1.0)


def test_causal_curves_follow_the_saliency_order():
    rng = np.random.default_rng(0)
    image = rng.random((3, 16, 16)).astype(np.float32)
    saliency = rng.random((16, 16)).astype(np.float32)
    ins, dele = causal_curves(BrightnessEngine(), image, saliency, 0, step=8, batch_size=5)
    assert len(ins) == len(dele) == 16 * 16 // 8 + 1
    assert dele[0] == pytest.approx(image.mean(), rel=1e-5) and dele[-1] == 0
    assert ins[-1] == pytest.approx(image.mean(), rel=1e-5)
    assert (np.diff(dele) <= 1e-7).all()
    # deleting the 8 most salient pixels removes exactly their brightness
    top = pixel_order(saliency)[:8]
    expected = image.mean() - image.reshape(3, -1)[:, top].sum() / image.size
    assert dele[1] == pytest.approx(expected, rel=1e-5)


def test_pixel_order_ties_are_row_major():
    assert pixel_order(np.array([[1.0, 2.0], [2.0, 0.0]])).tolist() == [1, 2, 0, 3]


@pytest.mark.slow
def test_evaluate_writes_reports_resumes_and_matches_an_independent_check(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from PIL import Image

    from unioncam_rt.images import load_image
    from unioncam_rt.jobs.evaluate import EvaluateConfig, evaluate
    from unioncam_rt.sources import ModelSource
    from unioncam_rt.sources.torch_source import build_classifier

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    out = tmp_path / "eval"
    config = EvaluateConfig([folder], methods=["gradcam", "layercam"], out=out, save_maps=True, gallery=1,
                            source=ModelSource("resnet18", "random:0"))
    aggregate = evaluate(config, progress=False)
    assert set(aggregate) == {"gradcam", "layercam"} and aggregate["gradcam"]["images"] == 2
    for name in ("results.json", "results.csv", "table.md", "curves.png", "report.html"):
        assert (out / name).is_file()
    assert "gallery/gradcam/a.png" in (out / "report.html").read_text()
    assert "Average Drop" in (out / "table.md").read_text()

    # independent Average Drop / Increase from the saved maps with the torch model
    model = build_classifier("resnet18", "random:0")
    results = json.loads((out / "results.json").read_text())
    for name in ("a", "b"):
        x = torch.from_numpy(load_image(folder / f"{name}.png", (224, 224)).array[None])
        cam = torch.from_numpy(np.load(out / "maps" / "gradcam" / f"{name}.npy"))
        with torch.no_grad():
            p = torch.softmax(model(x), 1)[0]
            c = int(p.argmax())
            o = torch.softmax(model(x * cam), 1)[0, c]
        drop = max(0.0, float(p[c] - o)) / float(p[c]) * 100
        assert results["per_image"][f"{name}.png"]["gradcam"]["avg_drop"] == pytest.approx(drop, abs=1.0)

    # resume: a cut last line is redone, finished pairs are not
    lines = (out / "records.jsonl").read_text().splitlines()
    (out / "records.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    evaluate(config, progress=False)
    redone = (out / "records.jsonl").read_text().splitlines()
    assert len([json.loads(line) for line in redone[:3]]) == 3
    assert json.loads((out / "results.json").read_text())["aggregate"]["layercam"]["images"] == 2
