"""CoCoOp (Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022).

CoOp's context made image-conditional: a meta-net
``Linear(D, D//16) → ReLU → Linear(D//16, W)`` maps the L2-normalised image
feature ``f`` to a shift ``π(f)`` added to every context token,
``V_m(f) = V_m + π(f)``. Each image thus gets its own ``C`` prompts, run through
the frozen text encoder: logits are ``logit_scale · cos(f, t_c(f))`` and the
loss is cross-entropy. The context and the meta-net train; the encoders stay
frozen. Because the prompts depend on the image, predicting runs the text
encoder ``C`` times per image, and an artifact needs its backbone to load.

Paper and official code (``KaiyangZhou/CoOp:trainers/cocoop.py``,
``configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml``) agree on the
method; where the code says more, we follow the code:

- M = 4 context tokens initialised from ``"a photo of a"`` (``ctx_init``;
  empty means ``N(0, 0.02²)``); class token at the end. The meta-net has
  biases, PyTorch's default init and hidden width ``D // 16`` (the paper says
  only "two-layer bottleneck, 16× reduction"), and reads the L2-normalised
  image feature.
- ``official`` preset: SGD lr 0.002, momentum 0.9, weight decay 5e-4, batch 1,
  10 epochs, one warm-up epoch at a constant lr 1e-5, then a cosine stepped
  once per epoch at the epoch's end (``schedule_unit="epoch"``, the trainer's
  ``update_lr``): epochs 2–10 run at 2e-3 · ½(1 + cos(π(e − 1)/10)), so the
  last one at 1.9e-4 rather than a per-batch cosine's 0; a fixed lr and the
  last epoch's model; views cached with Dassl's crop scale (0.08, 1).

The official code loops over the images of a batch; here all ``B × C`` prompts
of a batch go through the encoder together (the same function, batched), at
most ``prompt_batch`` prompts per call; in training, the chunks are
checkpointed so memory stays bounded whatever ``batch_size × C``. The encoder
runs in the backbone's precision (bf16 where the backbone uses it) while the
context and the meta-net stay float32.
As for CoOp, augmentation is one of the ``V`` cached views per image, drawn
at random each epoch, where Dassl re-crops every image every epoch: over the
official 10 epochs the default 10 views give an image about 6.5 distinct crops
(``V·(1 − (1 − 1/V)^E)``); ``view_order="distinct"`` with ``V ≥ 10`` gives it
10, exactly the fresh crops (see :mod:`.train`). ``class_position``
middle/front is an extension: the official CoCoOp puts the class name at the
end.

Default (fast) recipe: AdamW lr 5e-3, batch 8, 3 epochs with half an epoch of
linear warm-up, the epoch chosen on the selection split (no lr grid: every
grid point is a full run, and CoCoOp is the expensive method). A CoCoOp
epoch costs ``N × C`` prompt passes whatever the batch, so the saving comes
from fewer epochs (3 instead of 10). On the toy world (3 tasks × 3 seeds,
16 shots) it matched or beat the official recipe's validation accuracy;
which tasks, and the figures, are not recorded, and the recipe was not
checked on held-out data. It steps the lr per batch
(``schedule_unit="step"``): over 3 epochs a per-epoch cosine would be three
plateaus, and half an epoch of warm-up has no per-epoch form.

Example:
    >>> import torch
    >>> from clip_adapter.backbones import create_backbone
    >>> from clip_adapter.methods import FewShotData, get_method
    >>> bb = create_backbone("toy", pretrained="none", precision="fp32")
    >>> names = ["red circle", "blue square"]
    >>> x, y = torch.randn(4, 2, bb.embed_dim), torch.tensor([0, 0, 1, 1])
    >>> text = torch.nn.functional.normalize(bb.encode_texts([f"a photo of a {n}." for n in names]), dim=-1)
    >>> data = FewShotData(x, y, x[:, 0], y, text, bb.logit_scale, names, backbone=bb)
    >>> cocoop = get_method("cocoop")
    >>> head = cocoop(cocoop.make_config(epochs=1)).fit(data).head
    >>> head.predict_logits(x[:, 0]).shape  # runs the text encoder: C prompts per image
    torch.Size([4, 2])
    >>> # Classifier.from_pretrained(path, backbone=bb): a CoCoOp artifact needs its backbone
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import Default, check_range, defaults, option
from ..core.errors import ArtifactError
from .base import FewShotData, cosine_logits, register
from .coop import INIT_STD
from .prompt_learner import (
    PromptConfig,
    PromptHead,
    PromptLayout,
    PromptMethod,
    assemble_per_image,
    prompt_meta,
)


@dataclass
@defaults(
    lr=5e-3,
    weight_decay=0.0,
    epochs=3,
    batch_size=Default(8, "images per step (each brings C prompts through the text encoder)"),
    warmup_epochs=Default(0.5, "linear warm-up length, in epochs, before the cosine decay"),
)
class CoCoOpConfig(PromptConfig):
    """CoCoOp options; prompt and training fields come from PromptConfig / TrainConfig."""

    n_ctx: int = option(4, "number of learned context tokens M (ignored when ctx_init is set: M = its token count)")
    ctx_init: str = option("a photo of a", "initialise the context from this phrase (empty: N(0, 0.02²))")
    meta_reduction: int = option(16, "meta-net hidden width: embed_dim // meta_reduction")
    # Fast recipe (chosen on the toy world's validation accuracy, not checked on held-out data;
    # see the module docstring).

    def validate(self) -> None:
        super().validate()
        check_range("meta_reduction", self.meta_reduction, 1, 65536)


class CoCoOpHead(PromptHead):
    """Context + meta-net shift per image → ``C`` prompts per image → ``logit_scale · cos(f, t(f))``.

    Holds a reference to the frozen backbone (never saved with the head).
    """

    def __init__(self, config: CoCoOpConfig, meta: dict[str, Any], backbone: Any = None) -> None:
        if backbone is None:
            raise ArtifactError(
                "cocoop runs the text encoder for every image: load it with the backbone it was trained on "
                "(backbone=...)"
            )
        super().__init__(config, meta, backbone)
        dim, width, hidden = meta["embed_dim"], meta["ctx_width"], meta["meta_hidden"]
        self.ctx = nn.Parameter(torch.zeros(meta["n_ctx"], width))
        self.meta_net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, width))

    def init_context(self, layout: PromptLayout, seed: int) -> None:
        """The phrase's embeddings, else ``N(0, 0.02²)`` drawn from ``seed``."""
        with torch.no_grad():
            if layout.init is not None:
                self.ctx.copy_(layout.init)
            else:
                self.ctx.copy_(torch.randn(self.ctx.shape, generator=torch.Generator().manual_seed(seed)) * INIT_STD)

    def class_features(self, image: torch.Tensor) -> torch.Tensor:
        """Raw text features ``[B, C, D]`` of every class's prompt conditioned on each (normalised) image."""
        contexts = self.ctx.unsqueeze(0) + self.meta_net(image).unsqueeze(1)  # [B, M, W]: π(f) added to every token
        base = self.base_embeddings()
        slots, c = self.slots.to(base.device), len(base)

        def encode(contexts_rows: torch.Tensor) -> torch.Tensor:
            prompts = assemble_per_image(base, slots, contexts_rows)  # [b, C, L, W]
            b = len(contexts_rows)
            return self.encode_prompts(prompts.flatten(0, 1), self.tokens.repeat(b, 1)).view(b, c, -1)

        images_per_call = max(1, self.config.prompt_batch // c)
        return self.chunked(encode, images_per_call, contexts).to(image.device)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        image = F.normalize(features.float(), dim=-1)
        if len(image) == 0:
            return torch.empty(0, self.meta["num_classes"])
        text = self.class_features(image)
        return torch.cat([cosine_logits(image[i : i + 1], text[i], self.logit_scale) for i in range(len(image))])


@register("cocoop")
class CoCoOp(PromptMethod):
    """CoCoOp: conditional context optimisation (see the module docstring).

    Example:
        >>> CoCoOp.make_config().meta_reduction
        16
    """

    Config = CoCoOpConfig
    Head = CoCoOpHead
    presets = {
        "fast": {},
        "official": {
            "optimizer": "sgd",
            "lr": 2e-3,
            "lr_grid": (),
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "batch_size": 1,
            "epochs": 10,
            "n_ctx": 4,
            "ctx_init": "a photo of a",
            "warmup_type": "constant",
            "warmup_epochs": 1.0,
            "warmup_lr": 1e-5,
            "select_epoch": False,  # the official code tests the last epoch's model
            "drop_last": True,  # Dassl's training loader
            "schedule_unit": "epoch",  # the trainer steps the lr once, at each epoch's end
        },
    }
    preset_crop_scale = {"official": (0.08, 1.0)}  # Dassl's random resized crop

    @classmethod
    def head_meta(cls, data: FewShotData, layout: PromptLayout, backbone: Any, cfg: CoCoOpConfig) -> dict[str, Any]:
        return {**prompt_meta(data, layout, backbone), "meta_hidden": max(1, data.embed_dim // cfg.meta_reduction)}
