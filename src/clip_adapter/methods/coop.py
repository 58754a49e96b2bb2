"""CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022).

The prompt ``[SOS][V_1 … V_M][CLASS][. EOS]`` has ``M`` learned context
vectors ``V`` in the text encoder's token-embedding space. They are shared by
every class (unified context) or one set per class (``csc``, class-specific
context). The class text feature ``t_c`` is the frozen text encoder's output at
the EOS token; logits are ``logit_scale · cos(f, t_c)`` and the loss is
cross-entropy. Only the context trains. The image side is cached features: each
epoch uses one random augmented view per image (see :mod:`.train`). The text
encoder runs forward and backward over all ``C`` prompts at every step, in the
backbone's precision (bf16 where fast), while the context stays float32.

Paper and official code (``KaiyangZhou/CoOp:trainers/coop.py``) agree on the
method; where the code says more, we follow the code:

- M = 16, class token at the end, unified context by default. ``middle`` puts
  ``M // 2`` vectors before the class name and the rest after; ``front`` (in
  the code, not the paper) puts the class name first. The code's prompt ends
  with ``"."`` (``[SOS][V…][CLASS][.][EOS]``); the paper writes ``[V…][CLASS]``.
- Random init ``N(0, 0.02²)``. With ``ctx_init`` (e.g. ``"a photo of a"``) the
  context starts at the phrase's token embeddings, so the initial prompt is
  exactly the zero-shot prompt ``"a photo of a {class}."``, and M is the
  phrase's token count (the code counts words, the same for this phrase). The
  code ignores ``csc`` when given an init phrase; here every class's context
  starts from the phrase.
- ``official`` preset (paper §4.1 and the code's configs): SGD lr 0.002,
  momentum 0.9, weight decay 5e-4, batch 32 with the last partial batch dropped
  (Dassl's loader), one warm-up epoch at a constant lr 1e-5, then a cosine
  stepped once per epoch as the trainer's ``update_lr`` does
  (``schedule_unit="epoch"``: constant within an epoch, never reaching 0), a
  fixed lr and the last epoch's model; ``train --preset official`` caches the
  views with Dassl's crop scale (0.08, 1). Its epochs depend
  on the shots (``COOP.md``): 50 for 1 shot, 100 for 2–4, 200 for 8–16. The
  preset sets ``epochs_by_shots`` to that table and reads the shots off the data
  (training images per class); ``epochs`` (200) applies only when the table is
  emptied. For ImageNet the official runs use 50 epochs at every shot count:
  ``epochs_by_shots=[]``, ``epochs=50``.

Departures, all from training on cached features on a CPU: augmentation is
one of ``V`` cached views per image (drawn at random each epoch) rather than a
fresh random crop per epoch, so over 200 epochs an image repeats each of the
default 10 views ~20 times where Dassl shows it 200 different crops;
``view_order="distinct"`` with ``V ≥ epochs`` cached views is exactly the fresh
crops (see :mod:`.train`), and ``benchmarks/views_curve.py`` measures how close
fewer views come. The encoder runs in bf16 (where the backbone does), not fp16.

Default (fast) recipe: AdamW, batch 64, 40 epochs, one linear warm-up epoch;
lr searched over {5e-3, 1e-3, 2e-2} and the epoch chosen on the selection
split. A step costs the same whatever the batch (the text encoder runs over
the ``C`` prompts once), so a larger batch and fewer epochs cut the steps
from 600–800 (official, 16 shots) to 3 × 80. On the toy world (3 tasks × 3
seeds, 16 shots) it matched or beat the official recipe's validation
accuracy; which tasks, and the figures, are not recorded, and the recipe was
not checked on held-out data. It steps the lr per batch (the shared loop's
default, a smooth decay to 0) and draws the view of each image at random
each epoch.

After training the head keeps the final class text features as a buffer, so
prediction needs no text encoder: an artifact loads without a backbone. The
learned context and the prompt token ids (int64) are saved too.

Example:
    >>> import torch
    >>> from clip_adapter.backbones import create_backbone
    >>> from clip_adapter.methods import FewShotData, get_method
    >>> bb = create_backbone("toy", pretrained="none", precision="fp32")
    >>> names = ["red circle", "blue square"]
    >>> x, y = torch.randn(4, 2, bb.embed_dim), torch.tensor([0, 0, 1, 1])  # [N, views, D] image features
    >>> text = torch.nn.functional.normalize(bb.encode_texts([f"a photo of a {n}." for n in names]), dim=-1)
    >>> data = FewShotData(x, y, x[:, 0], y, text, bb.logit_scale, names, backbone=bb)
    >>> coop = get_method("coop")
    >>> result = coop(coop.make_config(ctx_init="a photo of a", epochs=2)).fit(data)
    >>> result.head(x[:, 0]).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.config import Default, defaults, option
from .base import cosine_logits, register
from .prompt_learner import (
    COOP_EPOCHS_BY_SHOTS,
    PromptConfig,
    PromptHead,
    PromptLayout,
    PromptMethod,
    assemble,
)

INIT_STD = 0.02  # official: nn.init.normal_(ctx, std=0.02)


@dataclass
@defaults(
    lr=5e-3,
    weight_decay=0.0,
    epochs=40,
    lr_grid=Default((1e-3, 2e-2), "learning rates searched on validation besides `lr` (empty: just `lr`)"),
    batch_size=Default(64, "images per step (the text encoder costs the same per step whatever the batch)"),
)
class CoOpConfig(PromptConfig):
    """CoOp options; prompt and training fields come from PromptConfig / TrainConfig."""

    csc: bool = option(False, "class-specific context: one set of M vectors per class")
    # Fast recipe (chosen on the toy world's validation accuracy, not checked on held-out data;
    # see the module docstring).


class CoOpHead(PromptHead):
    """Learned context → class text features → ``logit_scale · cos(f, t)``.

    Training mode runs the text encoder (with gradients to ``ctx``); eval mode
    reads the ``text`` buffer, recomputed from ``ctx`` when training changed it.
    """

    def __init__(self, config: CoOpConfig, meta: dict[str, Any], backbone: Any = None) -> None:
        super().__init__(config, meta, backbone)
        c, m, w = meta["num_classes"], meta["n_ctx"], meta["ctx_width"]
        self.ctx = nn.Parameter(torch.zeros((c, m, w) if config.csc else (m, w)))
        self.register_buffer("text", torch.zeros(c, meta["embed_dim"]))
        self._stale = backbone is not None  # `text` does not match `ctx` until computed or loaded

    def init_context(self, layout: PromptLayout, seed: int) -> None:
        """The phrase's embeddings (every class's, with ``csc``), else ``N(0, 0.02²)`` drawn from ``seed``."""
        with torch.no_grad():
            if layout.init is not None:
                self.ctx.copy_(layout.init.expand_as(self.ctx))
            else:
                self.ctx.copy_(torch.randn(self.ctx.shape, generator=torch.Generator().manual_seed(seed)) * INIT_STD)
        self._stale = True

    def class_features(self, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Raw class text features ``[C, D]`` from the context (``self.ctx`` unless given), with gradients."""
        base = self.base_embeddings()
        ctx = self.ctx if ctx is None else ctx
        ctx = ctx.expand(len(base), -1, -1) if ctx.dim() == 2 else ctx  # a view: gradients still reach a shared context

        def encode(base_rows, slots, ctx_rows, tokens):
            return self.encode_prompts(assemble(base_rows, slots, ctx_rows), tokens)

        return self.chunked(encode, self.config.prompt_batch, base, self.slots.to(base.device), ctx, self.tokens)

    @torch.no_grad()
    def refresh_text(self) -> None:
        """Recompute the stored class text features from the current context."""
        self.text.copy_(self.class_features().to(self.text))
        self._stale = False

    def _on_load(self) -> None:
        super()._on_load()
        self._stale = False  # a saved `text` is the one its saved `ctx` gave

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._stale = True
            return cosine_logits(features, self.class_features().to(features.device), self.logit_scale)
        if self._stale:
            self.refresh_text()
        return cosine_logits(features, self.text, self.logit_scale)


@register("coop")
class CoOp(PromptMethod):
    """CoOp: context optimisation for prompts (see the module docstring).

    Example:
        >>> cfg = CoOp.make_config("official")
        >>> cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs_for(1), cfg.epochs_for(16)
        ('sgd', 0.002, 32, 50, 200)
    """

    Config = CoOpConfig
    Head = CoOpHead
    presets = {
        "fast": {},
        "official": {
            "optimizer": "sgd",
            "lr": 2e-3,
            "lr_grid": (),
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "batch_size": 32,
            "epochs": 200,
            "epochs_by_shots": COOP_EPOCHS_BY_SHOTS,
            "warmup_type": "constant",
            "warmup_epochs": 1.0,
            "warmup_lr": 1e-5,
            "select_epoch": False,  # the official code tests the last epoch's model
            "drop_last": True,  # Dassl's training loader
            "schedule_unit": "epoch",  # the trainer steps the lr once, at each epoch's end
        },
    }
    preset_crop_scale = {"official": (0.08, 1.0)}  # Dassl's random resized crop
