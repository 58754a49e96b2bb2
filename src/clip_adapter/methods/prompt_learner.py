"""What CoOp and CoCoOp share: prompt layout, prompt assembly and config.

A learned prompt is a row of token ids whose context slots get learned vectors
instead of their word embeddings. :func:`build_layout` tokenizes
``"<ctx> <classname>."`` once per class (``<ctx>`` is ``"X X … X"`` or the
init phrase), so with the init phrase in place the "end" prompt is exactly the
zero-shot prompt ``"a photo of a <classname>."``. It then reorders the tokens
for the class-token position, as the official code does:

- ``end``:    ``[SOS][ctx][CLASS][. EOS pad]``
- ``middle``: ``[SOS][ctx[:M/2]][CLASS][ctx[M/2:]][. EOS pad]``
- ``front``:  ``[SOS][CLASS][ctx][. EOS pad]``

and records where the ``M`` context vectors go (``slots``, ``[C, M]``).
:func:`assemble` writes context vectors into the frozen token embeddings at
those slots; the backbone's token-level path (``encode_token_embeddings``)
does the rest, in the backbone's precision, while learned parameters stay
float32.

Only the backbone interface is used (``tokenize``, ``embed_tokens``,
``encode_token_embeddings``), so any backbone works, the toy one included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch.utils.checkpoint import checkpoint

from ..core.config import check_choice, check_range, option
from ..core.errors import ArtifactError, ConfigError
from .base import FewShotData, FitResult, Head, Method
from .train import TrainConfig, axis, grid_search, train_head

POSITIONS = ("end", "middle", "front")
PLACEHOLDER = "X"  # the official prompt prefix is "X X … X"
# The official CoOp shots → epochs table (COOP.md): 1 shot 50, 2–4 shots 100, 8–16 shots 200.
COOP_EPOCHS_BY_SHOTS = ("1:50", "2:100", "4:100", "8:200", "16:200")


@dataclass
class PromptConfig(TrainConfig):
    """Options every prompt learner has; training fields come from TrainConfig.

    ``n_ctx`` 16, the random context init and the class name at the end are
    CoOp's official defaults; ``prompt_batch`` bounds memory, it is not a tuned value.
    """

    n_ctx: int = option(16, "number of learned context tokens M (ignored when ctx_init is set: M = its token count)")
    ctx_init: str = option("", "initialise the context from this phrase, e.g. 'a photo of a' (empty: N(0, 0.02²))")
    class_position: str = option("end", "where the class name goes: end, middle or front")
    epochs_by_shots: tuple[str, ...] = option(
        (),
        "SHOTS:EPOCHS pairs, e.g. 1:50,2:100,8:200: epochs of the largest listed shots ≤ the data's (empty: `epochs`)",
    )
    prompt_batch: int = option(
        128,
        "most prompts through the text encoder at once; more are split, and recomputed in the backward pass "
        "to bound memory",
    )
    # Zero epochs is meaningful here: the head is the initial prompt (e.g. the
    # ctx_init phrase, which classifies exactly as zero-shot does).
    min_epochs: ClassVar[int] = 0

    def validate(self) -> None:
        super().validate()
        check_range("n_ctx", self.n_ctx, 1, 1024)
        check_choice("class_position", self.class_position, POSITIONS)
        check_range("prompt_batch", self.prompt_batch, 1, 10_000_000)
        for shots, epochs in self.shots_table():
            check_range("epochs_by_shots shots", shots, 1, 1_000_000)
            check_range("epochs_by_shots epochs", epochs, 0, 100_000)

    def shots_table(self) -> list[tuple[int, int]]:
        """``epochs_by_shots`` as sorted ``(shots, epochs)`` pairs."""
        table = []
        for entry in self.epochs_by_shots:
            shots, sep, epochs = str(entry).partition(":")
            try:
                table.append((int(shots), int(epochs)))
            except ValueError:
                raise ConfigError(f"epochs_by_shots entries are SHOTS:EPOCHS, e.g. 8:200; got {entry!r}") from None
            if not sep:
                raise ConfigError(f"epochs_by_shots entries are SHOTS:EPOCHS, e.g. 8:200; got {entry!r}")
        return sorted(table)

    def epochs_for(self, shots: int) -> int:
        """Epochs for ``shots`` images per class: ``epochs_by_shots`` when set, else ``epochs``.

        Example:
            >>> PromptConfig(epochs_by_shots=("1:50", "2:100", "8:200")).epochs_for(4)
            100
        """
        if not self.epochs_by_shots:
            return self.epochs
        table = self.shots_table()
        fitting = [epochs for s, epochs in table if s <= shots]
        return fitting[-1] if fitting else table[0][1]


# ---------------------------------------------------------------------------------------------
# Prompt layout


@dataclass
class PromptLayout:
    """Token ids of every class prompt and where the learned context goes.

    ``tokens`` ``[C, L]`` int64 (the context slots hold the placeholder or the
    init phrase's ids, which the learned vectors replace); ``slots`` ``[C, M]``
    int64 positions of context token ``j`` in row ``i``; ``init`` the init
    phrase's token embeddings ``[M, W]`` (float32) or None.
    """

    tokens: torch.Tensor
    slots: torch.Tensor
    init: torch.Tensor | None

    @property
    def n_ctx(self) -> int:
        return self.slots.shape[1]


def _content(row: torch.Tensor, eot: int) -> list[int]:
    """Token ids between ``<sot>`` and ``<eot>``."""
    ids = row.tolist()
    return ids[1 : ids.index(eot)] if eot in ids else ids[1:]


def build_layout(
    backbone: Any, classnames: Sequence[str], n_ctx: int, position: str, ctx_init: str = ""
) -> PromptLayout:
    """Tokenize and arrange one prompt per class (see the module docstring).

    Example:
        >>> from clip_adapter.backbones import create_backbone
        >>> bb = create_backbone("toy", pretrained="none", precision="fp32")
        >>> layout = build_layout(bb, ["red circle"], 4, "end", "a photo of a")
        >>> torch.equal(layout.tokens, bb.tokenize(["a photo of a red circle."])), layout.slots.tolist()
        (True, [[1, 2, 3, 4]])
    """
    check_choice("class_position", position, POSITIONS)
    special = backbone.tokenize([""])[0]
    if len(special) < 3:
        raise ConfigError("the backbone's tokenizer has no room for a prompt")
    sot, eot = int(special[0]), int(special[1])
    if ctx_init.strip():
        init_ids = _content(backbone.tokenize([ctx_init.strip()])[0], eot)
        if not init_ids:
            raise ConfigError(f"ctx_init {ctx_init!r} has no tokens")
        ctx_text, n_ctx = ctx_init.strip(), len(init_ids)
    else:
        init_ids = _content(backbone.tokenize([PLACEHOLDER])[0], eot)
        if len(init_ids) != 1:
            raise ConfigError(f"the tokenizer splits the placeholder {PLACEHOLDER!r} into {len(init_ids)} tokens")
        ctx_text, init_ids = " ".join([PLACEHOLDER] * n_ctx), init_ids * n_ctx
    rows = backbone.tokenize([f"{ctx_text} {name}." for name in classnames]).long()
    length = rows.shape[1]
    tokens, slots = torch.empty_like(rows), torch.empty(len(classnames), n_ctx, dtype=torch.long)
    for i, name in enumerate(classnames):
        suffix = _content(backbone.tokenize([f"{name}."])[0], eot)  # name tokens, then "." where kept
        name_ids = _content(backbone.tokenize([name])[0], eot)
        n_name = len(name_ids) if suffix[: len(name_ids)] == name_ids else len(suffix)
        needed = 2 + n_ctx + len(suffix)
        row = rows[i].tolist()
        if needed > length:
            raise ConfigError(
                f"class {name!r}: the prompt needs {needed} tokens but the text encoder takes {length}; "
                "use fewer context tokens or a shorter class name"
            )
        if row[: 1 + n_ctx + len(suffix)] != [sot, *init_ids, *suffix]:
            raise ConfigError(
                f"class {name!r}: the tokenizer splits {ctx_text!r} + the class name differently in one prompt"
            )
        ctx_pos = list(range(1, 1 + n_ctx))
        name_pos = list(range(1 + n_ctx, 1 + n_ctx + n_name))
        if position == "end":
            order = ctx_pos + name_pos
        elif position == "front":
            order = name_pos + ctx_pos
        else:  # middle: half the context, the class name, the other half (official: n_ctx // 2 first)
            half = n_ctx // 2
            order = ctx_pos[:half] + name_pos + ctx_pos[half:]
        perm = [0, *order, *range(1 + n_ctx + n_name, length)]
        tokens[i] = rows[i, perm]
        new_position = {src: dst for dst, src in enumerate(perm)}
        slots[i] = torch.tensor([new_position[p] for p in ctx_pos])
    init = None
    if ctx_init.strip():
        with torch.no_grad():
            init = backbone.embed_tokens(torch.tensor([[sot, *init_ids]]))[0, 1:].float().cpu()
    return PromptLayout(tokens, slots, init)


def assemble(base: torch.Tensor, slots: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """Write context vectors into token embeddings at ``slots``.

    ``base`` ``[C, L, W]`` (frozen token embeddings), ``slots`` ``[C, M]``,
    ``ctx`` ``[M, W]`` (shared) or ``[C, M, W]`` (class-specific) → ``[C, L, W]``.
    Out of place, so gradients reach ``ctx``; computed in ``base``'s dtype.
    """
    c, m = slots.shape
    if ctx.dim() == 2:
        ctx = ctx.unsqueeze(0).expand(c, m, -1)
    rows = torch.arange(c, device=slots.device).unsqueeze(1).expand(c, m)
    return base.index_put((rows, slots), ctx.to(base.dtype))


def assemble_per_image(base: torch.Tensor, slots: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """``[B, M, W]`` per-image contexts → ``[B, C, L, W]`` prompt embeddings (every class, every image)."""
    b, (c, m) = ctx.shape[0], slots.shape
    expanded = base.unsqueeze(0).expand(b, -1, -1, -1).contiguous()
    images = torch.arange(b, device=slots.device).view(b, 1, 1).expand(b, c, m)
    rows = torch.arange(c, device=slots.device).view(1, c, 1).expand(b, c, m)
    values = ctx.to(base.dtype).unsqueeze(1).expand(b, c, m, ctx.shape[-1])
    return expanded.index_put((images, rows, slots.unsqueeze(0).expand(b, c, m)), values)


# ---------------------------------------------------------------------------------------------
# The head side: a backbone reference that is never saved, and checks on it


class PromptHead(Head):
    """A head holding prompt token ids and, while attached, a frozen backbone (never saved)."""

    def __init__(self, config: PromptConfig, meta: dict[str, Any], backbone: Any = None) -> None:
        super().__init__(config, meta)
        self.logit_scale = float(meta["logit_scale"])
        self.register_buffer("tokens", torch.zeros(meta["num_classes"], meta["context_length"], dtype=torch.long))
        self.register_buffer("slots", torch.zeros(meta["num_classes"], meta["n_ctx"], dtype=torch.long))
        self._backbone = None
        self._base: torch.Tensor | None = None  # frozen token embeddings of `tokens`, in the backbone's dtype
        self.register_load_state_dict_post_hook(lambda module, keys: module._on_load())
        if backbone is not None:
            self.attach(backbone)

    @property
    def backbone(self) -> Any:
        return self._backbone

    def attach(self, backbone: Any) -> None:
        """Use ``backbone`` as the text encoder, after checking it fits the head's shapes."""
        length = backbone.tokenize([""]).shape[1]
        width = backbone.embed_tokens(torch.zeros(1, 1, dtype=torch.long)).shape[-1]
        expected = (self.meta["context_length"], self.meta["ctx_width"], self.meta["embed_dim"])
        if (length, width, backbone.embed_dim) != expected:
            raise ArtifactError(
                f"{self.config.__class__.__name__}: the backbone's text encoder (context {length}, width {width}, "
                f"embed {backbone.embed_dim}) does not fit this head "
                f"(context {expected[0]}, width {expected[1]}, embed {expected[2]})"
            )
        self._backbone, self._base = backbone, None

    def set_layout(self, layout: PromptLayout) -> None:
        self.tokens.copy_(layout.tokens)
        self.slots.copy_(layout.slots)
        self._base = None

    def _on_load(self) -> None:
        self._base = None  # token ids may have changed

    def prompt_length(self) -> int:
        """Token positions sent through the encoder: all of them, or up to the last ``<eot>``.

        A causal text encoder reads each prompt at its ``<eot>``, which sees
        only earlier positions, so the padding after the longest prompt's
        ``<eot>`` changes nothing and costs most of the compute (a prompt is
        ~10–25 of CLIP's 77 tokens). Backbones whose ``encode_token_embeddings``
        accepts such cut rows say so with ``accepts_truncated_tokens``.
        """
        if not getattr(self._backbone, "accepts_truncated_tokens", False):
            return self.tokens.shape[1]
        eot = int(self._backbone.tokenize([""])[0][1])
        return int((self.tokens == eot).int().argmax(dim=1).max()) + 1

    def base_embeddings(self) -> torch.Tensor:
        """Frozen token embeddings of the prompts ``[C, L', W]`` (``L' = prompt_length()``), in the backbone's
        dtype (cached)."""
        if self._backbone is None:
            raise ArtifactError(
                f"{self.config.__class__.__name__} head has no backbone attached; load it with backbone=..."
            )
        if self._base is None:
            tokens = self.tokens[:, : self.prompt_length()].to(self._backbone.device)
            with torch.no_grad():
                self._base = self._backbone.embed_tokens(tokens).to(self._backbone.dtype)
        return self._base

    def chunked(self, fn: Callable[..., torch.Tensor], step: int, *tensors: torch.Tensor) -> torch.Tensor:
        """``fn(*tensors)``, computed ``step`` rows at a time when there are more.

        With gradients, each chunk is checkpointed: its activations are freed
        after the forward pass and recomputed in the backward pass, so memory
        holds one chunk's activations (about one extra forward pass of compute).
        The text encoder keeps ~50–90 MB of activations per 77-token prompt
        (ViT-B/32, fp32): CoCoOp's ``batch × C`` prompts would not fit otherwise.
        """
        total = tensors[0].shape[0]
        if total <= step:
            return fn(*tensors)
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        parts = []
        for start in range(0, total, step):
            rows = [t[start : start + step] for t in tensors]
            parts.append(checkpoint(fn, *rows, use_reentrant=False) if grad else fn(*rows))
        return torch.cat(parts)

    # Buffers that belong to the trained classes; everything else (the learned context, a meta-net) is shared.
    CLASS_STATE = ("tokens", "slots", "text")

    def for_classes(
        self, text: torch.Tensor, text_raw: torch.Tensor | None, classnames: list[str], backbone: Any
    ) -> "PromptHead | None":
        """The learned context written into other classes' prompts (CoCoOp's base-to-new test).

        Class-specific contexts (CoOp's ``csc``) belong to the trained classes: None.
        """
        if getattr(self.config, "csc", False) or backbone is None:
            return None
        layout = build_layout(
            backbone, classnames, self.meta["n_ctx"], self.config.class_position, self.config.ctx_init
        )
        meta = {**self.meta, "num_classes": len(classnames), "context_length": int(layout.tokens.shape[1])}
        head = type(self)(self.config, meta, backbone)
        state = head.state_dict()
        state.update({k: v for k, v in self.state_dict().items() if k not in self.CLASS_STATE})
        head.load_state_dict(state)
        head.set_layout(layout)
        head.mark_stale()
        return head.eval()

    def mark_stale(self) -> None:
        """Stored class features (if any) no longer match the context: recompute before use."""
        if hasattr(self, "_stale"):
            self._stale = True

    def encode_prompts(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Text features ``[N, D]`` (float32) of prompt embeddings ``[N, L', W]`` through the frozen encoder."""
        bb = self._backbone
        return bb.encode_token_embeddings(embeddings.to(bb.device), tokens[:, : embeddings.shape[1]].to(bb.device))


def prompt_meta(data: FewShotData, layout: PromptLayout, backbone: Any) -> dict[str, Any]:
    """The shape-fixing integers of a prompt head (plus the logit scale)."""
    width = backbone.embed_tokens(layout.tokens[:1, :1]).shape[-1]
    return {
        "num_classes": data.num_classes,
        "embed_dim": data.embed_dim,
        "ctx_width": int(width),
        "n_ctx": layout.n_ctx,
        "context_length": int(layout.tokens.shape[1]),
        "logit_scale": float(data.logit_scale),
    }


def check_data(data: FewShotData, method: str) -> Any:
    """The backbone of ``data``, checked against the data's shapes."""
    backbone = data.backbone
    if backbone is None:
        raise ConfigError(f"{method} runs the text encoder while training: FewShotData.backbone must be set")
    if backbone.embed_dim != data.embed_dim:
        raise ConfigError(
            f"{method}: backbone embed_dim {backbone.embed_dim} differs from the features' {data.embed_dim}"
        )
    if len(data.classnames) != data.num_classes:
        raise ConfigError(f"{method}: {len(data.classnames)} class names for {data.num_classes} classes")
    return backbone


def shots_of(data: FewShotData) -> int:
    """Training images per class (the most any class has)."""
    if len(data.train_labels) == 0:
        return 0
    return int(torch.bincount(data.train_labels, minlength=data.num_classes).max())


class PromptMethod(Method):
    """What CoOp and CoCoOp share: lay out the prompts, then search the lr on the selection split.

    Subclasses set ``Config`` and ``Head`` (a :class:`PromptHead` with
    ``init_context``) and may extend :meth:`head_meta`.
    """

    needs_backbone = True

    @classmethod
    def build_head(cls, config: PromptConfig, meta: dict[str, Any], backbone: Any = None) -> Head:
        return cls.Head(config, meta, backbone)

    @classmethod
    def head_meta(cls, data: FewShotData, layout: PromptLayout, backbone: Any, cfg: PromptConfig) -> dict[str, Any]:
        return prompt_meta(data, layout, backbone)

    def fit(self, data: FewShotData) -> FitResult:
        cfg: PromptConfig = self.config
        backbone = check_data(data, self.name)
        layout = build_layout(backbone, data.classnames, cfg.n_ctx, cfg.class_position, cfg.ctx_init)
        base_cfg = cfg.replace(n_ctx=layout.n_ctx, epochs=cfg.epochs_for(shots_of(data)))
        meta = self.head_meta(data, layout, backbone, cfg)

        def fit_one(point: dict[str, Any]) -> tuple[Head, dict[str, Any]]:
            run_cfg = base_cfg.replace(lr=point["lr"])
            torch.manual_seed(data.seed)  # default inits (e.g. CoCoOp's meta-net) are seeded too
            head = self.Head(run_cfg, meta, backbone)
            head.set_layout(layout)
            head.init_context(layout, data.seed)
            return head, train_head(head, data, run_cfg, data.seed)

        # The text encoder runs in the loop: it keeps the process's threads.
        return grid_search(data, {"lr": axis(cfg.lr, cfg.lr_grid)}, fit_one, threads=None)
