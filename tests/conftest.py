"""Shared fixtures: tiny seeded conv nets wrapped like zoo models, seeded images, real photos."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

DEV_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample-dev"

_BLOCK_TORCH = """
import sys, importlib.abc

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith(("torch.", "torchvision")):
            raise ImportError("torch is blocked in this test")

sys.meta_path.insert(0, NoTorch())
"""


def photo_or_grey(tmp_path: Path) -> Path:
    """A development photo (the tench), or a grey PNG where the photos are absent."""
    image = DEV_IMAGES / "n01440764_tench.JPEG"
    if image.is_file():
        return image
    from PIL import Image

    image = tmp_path / "grey.png"
    Image.new("RGB", (64, 48), (120, 130, 140)).save(image)
    return image


def run_without_torch(body: str, done: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the Python source ``body`` in a fresh interpreter in which importing torch or
    torchvision raises, and check that it printed ``done`` (its last step)."""
    script = _BLOCK_TORCH + textwrap.dedent(body)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    assert done in result.stdout, result.stdout + result.stderr
    return result


def tiny_model(seed: int = 0, dead_channels: int = 3, classes: int = 10, head: str = "vgg"):
    """A `TorchClassifier` over ``Sequential(trunk, head)``: conv-relu-pool-conv-relu trunk
    (16 x 16 x 16 at 32 x 32, the target layer ``trunk``) and a head: ``"vgg"`` (max-pool,
    adaptive avg-pool, MLP with ReLU and dropout) or ``"dense"`` (flatten, MLP: gradients
    vary at every position, so the denoising threshold bites).

    ``dead_channels`` of the 16 target channels get a large negative bias, so they are
    constant (all zero after ReLU) for every input, like dead channels in real nets.
    """
    from collections import OrderedDict

    import torch
    from torch import nn

    from unioncam_rt.sources.torch_source import build_classifier

    torch.manual_seed(seed)
    trunk = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
    )
    with torch.no_grad():
        trunk[3].bias[:dead_channels] = -1e3
    if head == "vgg":
        layers = [nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(2), nn.Flatten(1), nn.Linear(64, 32)]
    else:
        layers = [nn.Flatten(1), nn.Linear(16 * 16 * 16, 32)]
    head = nn.Sequential(*layers, nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, classes))
    net = nn.Sequential(OrderedDict(trunk=trunk, head=head))
    return build_classifier(net, target_layer="trunk", input_size=(32, 32), mean=(0.5, 0.4, 0.3),
                            std=(0.25, 0.2, 0.3), labels=[f"class{i}" for i in range(classes)])


@pytest.fixture(scope="session")
def tiny_engine():
    from unioncam_rt.runtime.torch_engine import TorchEngine

    return TorchEngine(tiny_model())


@pytest.fixture(scope="session")
def tiny_dense_engine():
    from unioncam_rt.runtime.torch_engine import TorchEngine

    return TorchEngine(tiny_model(seed=1, head="dense"))


@pytest.fixture(scope="session")
def tiny_images():
    """Four seeded smooth-ish images, float32 [4, 3, 32, 32] in [0, 1]."""
    rng = np.random.default_rng(0)
    base = rng.random((4, 3, 8, 8))
    from unioncam_rt.method.ops import resize_bilinear

    return np.clip(resize_bilinear(base, (32, 32)) + 0.1 * rng.random((4, 3, 32, 32)), 0, 1).astype(np.float32)


def dev_rows(limit: int | None = None) -> list[dict]:
    """Rows of the development set's labels.csv, or skip the test where it is absent."""
    labels = DEV_IMAGES / "labels.csv"
    if not labels.is_file():
        pytest.skip(f"development images not found at {DEV_IMAGES}")
    with labels.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows[:limit] if limit else rows


@pytest.fixture(autouse=True, scope="session")
def _engine_cache(tmp_path_factory):
    """Exports made by `explain` go to a temporary cache, never the user's."""
    import os

    old = os.environ.get("UNIONCAM_RT_CACHE")
    os.environ["UNIONCAM_RT_CACHE"] = str(tmp_path_factory.mktemp("engine-cache"))
    yield
    if old is None:
        os.environ.pop("UNIONCAM_RT_CACHE", None)
    else:
        os.environ["UNIONCAM_RT_CACHE"] = old


@pytest.fixture(scope="session")
def lite_engine_dir(tmp_path_factory):
    """EfficientNet-Lite0 (real weights) exported once for the whole session."""
    pytest.importorskip("torch")
    from unioncam_rt.exporting.pipeline import ExportConfig, export_model

    out = tmp_path_factory.mktemp("engines") / "lite0"
    export_model(ExportConfig("efficientnet-lite0", out))
    return out
