"""EfficientNet-Lite0 with its real weights on real ImageNet photos (the slow tests)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

from unioncam_rt.cli import app  # noqa: E402

from .conftest import DEV_IMAGES, dev_rows  # noqa: E402
from .independent import unioncam_one  # noqa: E402

REQUIRED = {"model", "method", "class_index", "class_name", "probability", "top5", "beta_denoise",
            "beta_region", "beta_fused", "branch", "masked_passes", "timings"}


@pytest.mark.slow
def test_explain_cli_on_real_photos_matches_independent_unioncam(tmp_path):
    from typer.testing import CliRunner

    rows = [r for r in dev_rows() if r["file"] in ("n01440764_tench.JPEG", "n02007558_flamingo.JPEG")]
    assert len(rows) == 2
    out = tmp_path / "out"
    args = ["explain", *[str(DEV_IMAGES / r["file"]) for r in rows], "--out", str(out), "--save-npy"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    from unioncam_rt.images import load_image
    from unioncam_rt.sources.torch_source import build_classifier

    model = build_classifier("efficientnet-lite0")
    for row in rows:
        stem = row["file"].rsplit(".", 1)[0]
        record = json.loads((out / f"{stem}.json").read_text())
        assert REQUIRED <= set(record)
        assert record["model"] == "efficientnet-lite0" and record["method"] == "unioncam"
        assert record["class_index"] == int(row["class_index"])
        assert record["branch"] in ("fused", "region")
        assert 0 < record["masked_passes"] <= 1280 + 3
        assert len(record["top5"]) == 5
        cam = np.load(out / f"{stem}.cam.npy")
        image = torch.from_numpy(load_image(DEV_IMAGES / row["file"], (224, 224)).array)
        ref = unioncam_one(model, image, theta=10.0)
        assert ref["class_index"] == record["class_index"]
        assert ref["branch"] == record["branch"]
        assert record["beta_region"] == pytest.approx(ref["beta_region"], abs=1e-4)
        assert np.corrcoef(cam.ravel(), ref["cam"].ravel())[0, 1] >= 0.999
        assert (out / f"{stem}.overlay.png").is_file()
