"""Modality inversion (Mistretta et al., "Cross the Gap", ICLR 2025): map a feature into the *other* modality.

**OTI** (optimisation-based textual inversion): for each query image, one pseudo-word token
embedding ``v*`` is learned so that the frozen text encoder's output on ``"a photo of {v*}"`` has
maximal cosine with the image's embedding. The inverted query is then a *text* feature, so an
image-to-image search becomes inter-modal (inverted text vs gallery images), the comparison CLIP
was trained for. As in the official code (``src/oti.py``, ``configs/oti/*.yaml``): one pseudo-token,
initialised N(0, 0.02²), AdamW with lr 2e-2 and weight decay 0.01, 150 steps, loss 1 − cosine
(``CosineEmbeddingLoss`` with target 1), template ``"a photo of {}"``, a batch of queries at once.
Only the Backbone token-level path is used (``tokenize``, ``embed_tokens``,
``encode_token_embeddings``), so any backbone works, the toy one and open_clip included.

**OVI** (visual inversion): the official code learns visual pseudo-tokens fed to a ViT *without*
image patches, which needs the ViT's internals. Here the counterpart that every differentiable
image encoder allows is done instead: the *input pixels* of one image per text (in the encoder's
normalised pixel space, started from the dataset mean, i.e. zeros) are optimised so that the
frozen image encoder's output matches the text embedding (pixels are not clipped to the valid
range; AdamW's weight decay pulls them towards the mean grey). It needs the backbone to expose its
torch image encoder (``backbone.model.encode_image``: the toy CLIP and open_clip do); others are
refused with a one-line ConfigError. On the toy CNN (64×64 inputs) it is cheap; on a 224-pixel ViT
it works but costs a full encoder backward per step.

Example (toy CLIP: offline, seconds):
    >>> from clip_adapter.backbones import create_backbone
    >>> import torch
    >>> bb = create_backbone("toy", precision="fp32")
    >>> target = bb.encode_texts(["a photo of a red circle."])
    >>> result = textual_inversion(bb, target, InversionConfig(steps=30))
    >>> result.features.shape == target.shape, result.cosine[0] > 0.8
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..backbones import Backbone
from ..core.config import Default, check_range, defaults, option
from ..core.errors import ConfigError, TrainingError
from ..core.optim import OptimConfig

PLACEHOLDER = "X"  # tokenised as one word by CLIP's BPE and the toy vocabulary; its embedding is replaced


@dataclass
@defaults(
    lr=Default(2e-2, "AdamW learning rate (official: 2e-2)"),
    weight_decay=Default(0.01, "AdamW weight decay (official: 0.01)"),
)
class InversionConfig(OptimConfig):
    """How a pseudo-token (OTI) or a pseudo-image (OVI) is optimised; defaults follow the official OTI config."""

    steps: int = option(150, "optimisation steps (official: OTI 150, OVI 1000)")
    batch_size: int = option(
        64, "queries optimised together (each has its own token; the batch only shares the encoder pass)"
    )
    template: str = option("a photo of {}", "prompt holding the pseudo-token at {} (OTI; official: 'a photo of {}')")
    init_std: float = option(0.02, "std of the pseudo-token's normal initialisation (official: 0.02)")
    seed: int = option(0, "seed of the initialisation")

    def validate(self) -> None:
        check_range("steps", self.steps, 0, 100_000)
        check_range("batch_size", self.batch_size, 1, 65536)
        if not 0 < self.lr <= 10:
            raise ConfigError(f"lr must be in (0, 10], got {self.lr}")
        if not 0 <= self.weight_decay <= 10:
            raise ConfigError(f"weight_decay must be in [0, 10], got {self.weight_decay}")
        if not 0 <= self.init_std <= 10:
            raise ConfigError(f"init_std must be in [0, 10], got {self.init_std}")
        if self.template.count("{}") != 1:
            raise ConfigError(f"template must hold exactly one {{}} for the pseudo-token, got {self.template!r}")
        super().validate()  # last: the checks above name tighter bounds


@dataclass
class InversionResult:
    """Learned pseudo-tokens (or pixels), the inverted features (normalised) and how well they match their targets."""

    params: torch.Tensor  # OTI: [N, W] token embeddings; OVI: [N, 3, H, W] pixels
    features: torch.Tensor  # [N, D] L2-normalised features in the other modality
    cosine: list[float]  # final cosine of each inverted feature with its target
    loss_history: list[float] = field(default_factory=list)  # mean loss per step (first batch)

    def summary(self) -> dict[str, Any]:
        """Mean final cosine and the loss at the first and last step."""
        c = torch.tensor(self.cosine)
        hist = self.loss_history
        return {
            "n": len(self.cosine),
            "mean_cosine": round(float(c.mean()), 6) if len(c) else None,
            "first_loss": round(hist[0], 6) if hist else None,
            "last_loss": round(hist[-1], 6) if hist else None,
        }


@dataclass
class PseudoPrompt:
    """The tokenised template with the placeholder's position (``slot``), cut after end-of-text where allowed."""

    tokens: torch.Tensor  # [1, L]
    base: torch.Tensor  # [1, L, W] frozen token embeddings (float32)
    slot: int


def pseudo_prompt(backbone: Backbone, template: str) -> PseudoPrompt:
    """Tokenise ``template`` with a placeholder at ``{}`` and find the placeholder's position.

    Example:
        >>> from clip_adapter.backbones import create_backbone
        >>> pseudo_prompt(create_backbone("toy", pretrained="none", precision="fp32"), "a photo of {}").slot
        4
    """
    if template.count("{}") != 1:
        raise ConfigError(f"template must hold exactly one {{}} for the pseudo-token, got {template!r}")
    empty = backbone.tokenize([""])[0].tolist()
    sot, eot = empty[0], empty[1]
    placeholder = _content(backbone.tokenize([PLACEHOLDER])[0].tolist(), eot)
    prefix = _content(backbone.tokenize([template.split("{}")[0].strip()])[0].tolist(), eot)
    tokens = backbone.tokenize([template.format(PLACEHOLDER)]).long()
    slot = 1 + len(prefix)
    row = tokens[0].tolist()
    if len(placeholder) != 1 or row[0] != sot or slot >= len(row) or row[slot] != placeholder[0]:
        raise ConfigError(
            f"template {template!r}: the tokenizer does not keep the pseudo-token as one word after the prefix"
        )
    if getattr(backbone, "accepts_truncated_tokens", False) and eot in row:
        tokens = tokens[:, : row.index(eot) + 1]  # causal text encoders never read the padding
    with torch.no_grad():
        base = backbone.embed_tokens(tokens.to(backbone.device)).float()
    return PseudoPrompt(tokens, base, slot)


def _content(ids: list[int], eot: int) -> list[int]:
    return ids[1 : ids.index(eot)] if eot in ids else ids[1:]


def encode_pseudo_tokens(backbone: Backbone, prompt: PseudoPrompt, pseudo: torch.Tensor) -> torch.Tensor:
    """Raw text features ``[N, D]`` of the template with ``pseudo`` ``[N, W]`` at its slot (differentiable in
    ``pseudo``).

    Example:
        >>> import torch
        >>> from clip_adapter.backbones import create_backbone
        >>> bb = create_backbone("toy", pretrained="none", precision="fp32")
        >>> p = pseudo_prompt(bb, "a photo of {}")
        >>> encode_pseudo_tokens(bb, p, torch.zeros(3, p.base.shape[-1])).shape == (3, bb.embed_dim)
        True
    """
    n = len(pseudo)
    base = prompt.base.expand(n, -1, -1)
    s = prompt.slot
    embeddings = torch.cat([base[:, :s], pseudo.unsqueeze(1).to(base.dtype), base[:, s + 1 :]], dim=1)
    tokens = prompt.tokens.expand(n, -1).to(backbone.device)
    return backbone.encode_token_embeddings(embeddings.to(backbone.device), tokens).float()


def _optimise(
    targets: torch.Tensor, init: torch.Tensor, encode, config: InversionConfig, what: str
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """AdamW on ``init`` so that ``encode(params)`` has maximal cosine with ``targets`` (normalised)."""
    params = torch.nn.Parameter(init.clone())
    opt = torch.optim.AdamW([params], lr=config.lr, weight_decay=config.weight_decay)
    history: list[float] = []
    with torch.enable_grad():
        for step in range(config.steps):
            opt.zero_grad(set_to_none=True)
            # Sum (not the official mean) over the batch: each query's token gets the gradient of its
            # own loss whatever the batch size, so batching never changes a result; the log is the mean.
            per_query = 1 - F.cosine_similarity(encode(params), targets, dim=-1)
            loss = per_query.sum()
            if not torch.isfinite(loss):
                raise TrainingError(f"{what}: the loss became non-finite at step {step + 1}; lower --inversion-lr")
            loss.backward()
            opt.step()
            history.append(float(per_query.mean().detach()))
    with torch.no_grad():
        final = F.normalize(encode(params.detach()), dim=-1)
    return params.detach(), final, history


def textual_inversion(
    backbone: Backbone, image_features: torch.Tensor, config: InversionConfig | None = None
) -> InversionResult:
    """OTI: one pseudo-token per row of ``image_features`` ``[N, D]``; see the module docstring (and its example)."""
    config = config or InversionConfig()
    config.validate()
    prompt = pseudo_prompt(backbone, config.template)
    targets = F.normalize(image_features.float(), dim=-1).to(backbone.device)
    width = prompt.base.shape[-1]
    gen = torch.Generator().manual_seed(config.seed)
    init = torch.randn(len(targets), width, generator=gen) * config.init_std
    return _batched(
        targets,
        init.to(backbone.device),
        lambda p: encode_pseudo_tokens(backbone, prompt, p),
        config,
        "textual inversion",
    )


def visual_inversion(
    backbone: Backbone, text_features: torch.Tensor, config: InversionConfig | None = None
) -> InversionResult:
    """OVI (pixel variant): one optimised input image per row of ``text_features``; see the module docstring.

    Example:
        >>> from clip_adapter.backbones import create_backbone
        >>> bb = create_backbone("toy", precision="fp32")
        >>> r = visual_inversion(bb, bb.encode_texts(["a photo of a red circle."]), InversionConfig(steps=40, lr=0.05))
        >>> r.params.shape[1:], r.cosine[0] > 0.5
        (torch.Size([3, 64, 64]), True)
    """
    config = config or InversionConfig()
    config.validate()
    encoder = image_encoder(backbone)
    size = backbone.preprocess.image_size
    targets = F.normalize(text_features.float(), dim=-1).to(backbone.device)
    # The normalised pixel space's zero is the dataset-mean grey; a little seeded noise breaks symmetry.
    gen = torch.Generator().manual_seed(config.seed)
    init = torch.randn(len(targets), 3, size, size, generator=gen) * config.init_std
    return _batched(
        targets, init.to(backbone.device), lambda p: encoder(p.to(backbone.dtype)).float(), config, "visual inversion"
    )


def image_encoder(backbone: Backbone):
    """The backbone's differentiable torch image encoder, or a one-line ConfigError saying why there is none."""
    model = getattr(backbone, "model", None)
    encode = getattr(model, "encode_image", None)
    if not callable(encode):
        raise ConfigError(
            "visual inversion needs a backbone whose image encoder is a torch module; "
            f"{backbone.provider} backbones do not expose one"
        )
    return encode


def _batched(targets: torch.Tensor, init: torch.Tensor, encode, config: InversionConfig, what: str) -> InversionResult:
    params, feats, cos, history = [], [], [], []
    for start in range(0, len(targets), config.batch_size):
        chunk = slice(start, start + config.batch_size)
        p, f, h = _optimise(targets[chunk], init[chunk], encode, config, what)
        params.append(p.cpu())
        feats.append(f.cpu())
        cos += (f * targets[chunk]).sum(-1).cpu().tolist()
        history = history or h
    if not params:
        return InversionResult(init.cpu(), torch.empty(0, targets.shape[-1]), [], [])
    return InversionResult(
        torch.cat(params), torch.cat(feats), [round(c, 6) for c in cos], [round(v, 6) for v in history]
    )
