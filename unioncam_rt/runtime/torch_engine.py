"""The torch engine: autograd gradients (the oracle every exported graph and backend is
checked against), and on CUDA a fast path for masked scoring.

On CUDA the scoring runs whole: all masks of a call go to the GPU at once (only the
``h x w`` masks and the images cross, once), each chunk of ``batch_size`` is upsampled,
multiplied, run, soft-maxed and gathered on the device into one result tensor, and the
host waits once at the end; the network runs channels-last, in fp16 under autocast for
``precision="fp16"``, and with ``compile=True`` through ``torch.compile`` (CUDA graphs for
the fixed chunk shape; the last chunk is padded to it).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from ..errors import UnionCamError, require
from ..method.engine import FeatureBatch
from .backends import check_mode

torch = require("torch", "export")
F = torch.nn.functional


class TorchEngine:
    """`CamEngine` over a `unioncam_rt.sources.torch_source.TorchClassifier` (CPU or CUDA).

    Activations are the target module's output (a forward hook); gradients are
    ``d logit[c] / d A`` from autograd, with ``A`` made a leaf so nothing before it is
    differentiated and a skip around the target is held at its forward value (the partial
    derivative). Both are read as ``[B, K, h, w]`` through the classifier's ``target_map``
    (channels-last and token outputs; see `unioncam_rt.sources.target_map`).

    Args:
        classifier: the torch classifier (any ``forward`` code).
        device: torch device string (default ``"cpu"``).
        precision: ``"fp32"`` (default) or ``"fp16"`` (CUDA only: autocast; outputs float32).
        batch_size: masked images per network call on CUDA (default 128); on the CPU the
            caller's chunks are used as they come.
        compile: ``torch.compile`` the CUDA scoring step (default False).
    """

    def __init__(self, classifier, device: str = "cpu", precision: str = "fp32", batch_size: int = 128,
                 compile: bool = False):
        check_mode("torch", precision)
        self.device = torch.device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise UnionCamError("fp16 with the torch backend needs a CUDA device (--device cuda)")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UnionCamError(f"device {device} requested but torch sees no CUDA GPU")
        self.cuda = self.device.type == "cuda"
        self.backend, self.precision = f"torch-{self.device.type}", precision
        self.classifier = classifier.eval().to(self.device)
        if self.cuda:
            self.classifier = self.classifier.to(memory_format=torch.channels_last)
        self.model_name = classifier.name
        self.input_size = tuple(classifier.input_size)
        self.class_names = list(classifier.class_names)
        self.batch_size = batch_size
        self.chunks_internally = self.cuda  # score_masks hands over all masks in one call
        self._score = torch.compile(self._score_chunk, mode="reduce-overhead") if compile else self._score_chunk
        self._padded = compile
        self._black: np.ndarray | None = None
        with torch.inference_mode():
            probe = torch.zeros(1, 3, *self.input_size, device=self.device)
            _, acts = self.classifier.logits_and_activations(probe)
            self.feature_shape = tuple(int(d) for d in self.classifier.feature_map(acts).shape[1:])

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.precision == "fp16" else nullcontext()

    def _tensor(self, array: np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)

    def _images(self, images: np.ndarray):
        x = self._tensor(images.astype(np.float32, copy=False))
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x

    def features(self, images: np.ndarray, class_index: np.ndarray) -> FeatureBatch:
        x = self._images(images)
        with torch.enable_grad(), self._autocast():
            logits, acts = self.classifier.logits_and_activations(x, leaf=True)
            wanted = self._tensor(np.asarray(class_index, dtype=np.int64))
            resolved = torch.where(wanted < 0, logits.argmax(dim=1), wanted)
            selected = logits.float().gather(1, resolved[:, None]).sum()
            (grads,) = torch.autograd.grad(selected, acts)
        to_map = self.classifier.feature_map
        return FeatureBatch(
            logits=logits.detach().float().cpu().numpy(),
            activations=to_map(acts.detach()).float().cpu().numpy(),
            gradients=to_map(grads).float().cpu().numpy(),
            class_index=resolved.cpu().numpy().astype(np.int64),
        )

    def _score_chunk(self, images, masks, image_index, class_index):
        """One chunk on the device: upsample, multiply, forward, softmax, gather."""
        up = F.interpolate(masks, size=self.input_size, mode="bilinear", align_corners=False)
        masked = images.index_select(0, image_index) * up
        if self.cuda:
            masked = masked.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            logits = self.classifier(masked)
        return F.softmax(logits.float(), dim=1).gather(1, class_index[:, None])[:, 0]

    @torch.inference_mode()
    def masked_probs(self, images, masks, image_index, class_index) -> np.ndarray:
        x = self._images(images)
        m = self._tensor(masks.astype(np.float32, copy=False))
        index = self._tensor(np.asarray(image_index, dtype=np.int64))
        classes = self._tensor(np.asarray(class_index, dtype=np.int64))
        count = len(m)
        step = self.batch_size if self.cuda else max(count, 1)
        out = torch.empty(count, device=self.device)
        for start in range(0, count, step):
            stop = min(start + step, count)
            rows = slice(start, stop)
            if self._padded and stop - start < step:  # keep the compiled graph's shape
                pad = torch.arange(start, start + step, device=self.device).clamp(max=stop - 1)
                out[rows] = self._score(x, m[pad], index[pad], classes[pad])[: stop - start]
            else:
                out[rows] = self._score(x, m[rows], index[rows], classes[rows])
        return out.cpu().numpy()  # the only wait for the device

    @torch.inference_mode()
    def probs(self, images: np.ndarray) -> np.ndarray:
        with self._autocast():
            logits = self.classifier(self._images(images))
        return F.softmax(logits.float(), dim=1).cpu().numpy()

    def black_probs(self) -> np.ndarray:
        if self._black is None:
            black = np.zeros((1, 3, *self.input_size), dtype=np.float32)
            self._black = self.probs(black)[0].astype(np.float64)
        return self._black
