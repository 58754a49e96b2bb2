"""The options of the multi-label methods (one flat config; each field says which method reads it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..core.config import Default, check_choice, check_range, defaults, option
from ..core.errors import ConfigError
from ..core.optim import EpochsOptimConfig

METHODS = ("zero-shot", "clip-adapter", "unmix")
PROJECTORS = ("linear", "mlp")
AGGREGATIONS = ("softmax", "mean", "max")
DEFAULT_LR = {"unmix": 1e-2, "clip-adapter": 1e-3}  # chosen on the toy task's validation split (see MultiLabelConfig)


@dataclass
@defaults(
    epochs=Default(60, "training epochs (clip-adapter, unmix)"),
    lr=Default(0.0, "AdamW learning rate, cosine decay to 0 (0: the method's, unmix 1e-2, clip-adapter 1e-3)"),
    weight_decay=Default(1e-4, "AdamW weight decay"),
)
class MultiLabelConfig(EpochsOptimConfig):
    """How a multi-label head is built and trained.

    ``DEFAULT_LR`` was chosen on the toy multi-label task's validation split and is reported
    on its test split (``docs/survey.md``), not on held-out data. The ASL values are the ASL
    paper's COCO recipe, ``adapter_*`` CLIP-Adapter's official ones; ``epochs``,
    ``batch_size``, ``weight_decay``, ``projector``, ``mfi_weight`` and ``mfi_offdiag`` have no
    recorded origin and were not checked on held-out data.

    Example:
        >>> MultiLabelConfig(method="zero-shot").positive_template
        'a photo containing a {}'
        >>> MultiLabelConfig(method="unmix", aggregation="median")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: aggregation must be one of softmax, mean, max; got 'median'
    """

    method: str = option("unmix", "zero-shot, clip-adapter (trained with ASL) or unmix (Unmix-CLIP)")
    positive_template: str = option("a photo containing a {}", "prompt saying the class is present ({} = class name)")
    negative_template: str = option(
        "a photo without a {}", "prompt saying the class is absent ({} = class name, optional)"
    )
    logit_scale: float = option(0.0, "scale of the cosine logits; 0 means the backbone's (CLIP: 100)")
    gamma_pos: float = option(0.0, "ASL focusing exponent of positives (γ+)")
    gamma_neg: float = option(4.0, "ASL focusing exponent of negatives (γ-)")
    asl_clip: float = option(0.05, "ASL probability shift of negatives (δ)")
    seed: int = option(0, "seed of initialisation and batch order")
    proj_dim: int = option(0, "unmix: projected dimension d' (0: the backbone's embedding dimension)")
    projector: str = option(
        "mlp", "unmix: linear (identity-initialised) or mlp (that plus a zero-initialised residual MLP)"
    )
    aggregation: str = option(
        "softmax",
        "unmix: location → image logits: softmax (weights from each class's positive "
        "similarity, DualCoOp's), mean or max",
    )
    mfi_weight: float = option(1.0, "unmix: α, weight of the MFI loss")
    mfi_offdiag: float = option(0.2, "unmix: λ, weight of the off-diagonal MFI term")
    adapter_ratio: float = option(0.2, "clip-adapter: residual ratio of the adapted feature (official: 0.2)")
    adapter_reduction: int = option(4, "clip-adapter: bottleneck reduction of the adapter MLP (official: 4)")

    min_epochs: ClassVar[int] = 0  # zero-shot trains nothing

    def validate(self) -> None:
        check_choice("method", self.method, METHODS)
        check_choice("projector", self.projector, PROJECTORS)
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        if self.positive_template.count("{}") != 1:
            raise ConfigError(
                f"positive_template must hold one {{}} for the class name, got {self.positive_template!r}"
            )
        if self.negative_template.count("{}") > 1:
            raise ConfigError(f"negative_template may hold at most one {{}}, got {self.negative_template!r}")
        for name in ("logit_scale", "gamma_pos", "gamma_neg", "mfi_weight", "mfi_offdiag"):
            check_range(name, getattr(self, name), 0.0)
        check_range("asl_clip", self.asl_clip, 0.0, 0.5)
        check_range("lr", self.lr, 0.0, 10.0)
        check_range("proj_dim", self.proj_dim, 0, 65_536)
        check_range("adapter_ratio", self.adapter_ratio, 0.0, 1.0)
        check_range("adapter_reduction", self.adapter_reduction, 1, 1024)
        super().validate()  # last: the checks above name tighter bounds

    @property
    def learning_rate(self) -> float:
        """``lr``, or the method's default (chosen on the toy task's validation split)."""
        return self.lr or DEFAULT_LR.get(self.method, 1e-3)

    @property
    def dense(self) -> bool:
        """Whether the method reads dense (per-location) image features."""
        return self.method == "unmix"

    def prompts(self, classes: tuple[str, ...] | list[str]) -> tuple[list[str], list[str]]:
        """The positive and negative prompt of every class."""
        return [self.positive_template.format(c) for c in classes], [
            self.negative_template.replace("{}", c) for c in classes
        ]
