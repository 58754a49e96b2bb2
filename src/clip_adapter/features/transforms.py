"""Image → tensor: one centre view for evaluation, seeded augmented views for training.

An augmented view depends only on (image content, view index, seed), never on
batch order or how many images came before it; that is what lets a killed
extraction resume with bit-identical features. It also makes view ``i`` the
same whatever ``views`` is, so ``V`` views are the first ``V`` of any larger set.

Cached views stand in for on-the-fly augmentation. Tip-Adapter itself caches a
fixed set of views (10 at crop scale (0.5, 1): the default here); Dassl, which
trains CoOp, CoCoOp and CLIP-Adapter, draws a fresh crop at scale (0.08, 1)
every time an image is loaded, i.e. once per image per epoch. Their official
presets cache views at (0.08, 1) (``--crop-scale``, picked by ``--preset
official``) and the training loop picks one view per image per epoch (see
:mod:`clip_adapter.methods.train`): at random, so ``V`` views approximate
``epochs`` fresh crops with repeats, or without repeats
(``view_order="distinct"``), which with ``V ≥ epochs`` is the fresh crops
exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from ..backbones.base import PreprocessConfig
from ..core.config import Config, check_range, option

_INTERPOLATION = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


@dataclass
class AugmentConfig(Config):
    """Training-view augmentation (Tip-Adapter's cache recipe by default; Dassl's crops are
    ``crop_scale=(0.08, 1)``)."""

    views: int = option(10, "augmented views cached per training image")
    crop_scale: tuple[float, ...] = option((0.5, 1.0), "random-resized-crop area range")
    crop_ratio: tuple[float, ...] = option((3 / 4, 4 / 3), "random-resized-crop aspect-ratio range")
    flip: bool = option(True, "random horizontal flip (turn off when left/right matters)")

    def validate(self) -> None:
        check_range("views", self.views, 1, 1000)
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be (lo, hi) with 0 < lo <= hi <= 1, got {self.crop_scale}")
        if len(self.crop_ratio) != 2 or not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must be (lo, hi) with 0 < lo <= hi, got {self.crop_ratio}")


def fingerprint(obj: object) -> str:
    """Short stable hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:32]


def eval_transform_id(pre: PreprocessConfig) -> str:
    return fingerprint({"mode": "eval", "preprocess": pre.to_dict()})


def train_transform_id(pre: PreprocessConfig, aug: AugmentConfig) -> str:
    # `views` only says how many views exist; view i is the same whatever the count.
    aug_fields = {k: v for k, v in aug.to_dict().items() if k != "views"}
    return fingerprint({"mode": "train", "preprocess": pre.to_dict(), "augment": aug_fields})


def _to_tensor(img: Image.Image, pre: PreprocessConfig) -> torch.Tensor:
    return TF.normalize(TF.to_tensor(img), list(pre.mean), list(pre.std))


def eval_view(img: Image.Image, pre: PreprocessConfig) -> torch.Tensor:
    """Resize the short side, centre-crop, normalise: CLIP's evaluation preprocessing."""
    interpolation = _INTERPOLATION[pre.interpolation]
    img = TF.resize(img, pre.image_size, interpolation=interpolation, antialias=True)
    return _to_tensor(TF.center_crop(img, [pre.image_size, pre.image_size]), pre)


def view_seed(content_id: str, view: int, seed: int) -> int:
    digest = hashlib.sha256(f"{content_id}:{view}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def train_view(
    img: Image.Image, pre: PreprocessConfig, aug: AugmentConfig, content_id: str, view: int, seed: int
) -> torch.Tensor:
    """Augmented view ``view`` of an image: random resized crop (+ flip), from its own generator."""
    gen = torch.Generator().manual_seed(view_seed(content_id, view, seed))
    top, left, height, width = _crop_box(img.width, img.height, aug, gen)
    size = [pre.image_size, pre.image_size]
    img = TF.resized_crop(
        img, top, left, height, width, size, interpolation=_INTERPOLATION[pre.interpolation], antialias=True
    )
    if aug.flip and torch.rand(1, generator=gen).item() < 0.5:
        img = TF.hflip(img)
    return _to_tensor(img, pre)


def _crop_box(width: int, height: int, aug: AugmentConfig, gen: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box sampling, driven by ``gen``."""
    area = width * height
    log_ratio = (math.log(aug.crop_ratio[0]), math.log(aug.crop_ratio[1]))
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(aug.crop_scale[0], aug.crop_scale[1], generator=gen))
        ratio = math.exp(float(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=gen)))
        w, h = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            return top, left, h, w
    # Fallback: the largest centre crop within the ratio range.
    in_ratio = width / height
    if in_ratio < aug.crop_ratio[0]:
        w, h = width, int(round(width / aug.crop_ratio[0]))
    elif in_ratio > aug.crop_ratio[1]:
        h, w = height, int(round(height * aug.crop_ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w
