"""What every method shares: the data it may learn from, the head it returns, the registry.

A method is a config dataclass, a :class:`Head` (a small ``nn.Module`` from
raw image features to logits) and a ``fit``. Adding a method touches its own
module, one ``@register`` line, and nothing else; the shared test matrix picks
it up from the registry.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import Config, check_choice
from ..core.errors import ConfigError
from ..core.registry import Registry

METHODS: Registry[type["Method"]] = Registry("method")
# Where hyper-parameters are chosen: the few-shot validation split (default), nowhere (fixed defaults),
# the dataset's full validation split (what Tip-Adapter's official code does), or the TEST split (oracle:
# what the official Tip-Adapter code does for ImageNet, and for Tip-Adapter-F's epoch everywhere).
PROTOCOLS = ("val", "full-val", "none", "oracle")
CHOSEN_ON = {
    "val": "few-shot validation split",
    "full-val": "full validation split of the dataset",
    "none": "fixed defaults (no selection)",
    "oracle": "TEST split (oracle)",
}


def register(name: str):
    """Class decorator adding a Method subclass to the registry under ``name``."""

    def add(cls: type["Method"]) -> type["Method"]:
        cls.name = name
        return METHODS.register(name)(cls)

    return add


def cosine_logits(image: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale · cos(image, text)``: ``[B, D] × [C, D] → [B, C]``.

    Every method computes CLIP logits through this one function, which is
    what makes α = 0 reproduce zero-shot bit for bit.
    """
    return scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()


@dataclass
class FewShotData:
    """Everything a method may learn from. The test split is never here.

    ``train`` holds ``V`` augmented views per image (``[N, V, D]``, raw
    features); ``val`` one centre view per image; ``text`` the class
    embeddings, L2-normalised (prompt-ensembled when several templates).
    ``selection`` is what hyper-parameters are chosen on: the few-shot
    validation split (protocol ``val``), the dataset's whole validation split
    (``full-val``, passed as ``selection_override``), or, only when asked
    for, the test split (``oracle``, passed the same way).
    ``train_centre`` (optional, ``[N, D]``) is each training image's centre
    view, the view test images are encoded with; the pipeline fills it, other
    constructors may leave it ``None``. It describes the images of ``train``
    as given: a method that reshapes ``train`` (CLAP's views as samples) need
    not keep it in step, so a consumer checks its row count
    (:meth:`centre_views`).
    """

    train: torch.Tensor
    train_labels: torch.Tensor
    val: torch.Tensor
    val_labels: torch.Tensor
    text: torch.Tensor
    logit_scale: float
    classnames: list[str]
    templates: tuple[str, ...] = ("a photo of a {}.",)
    seed: int = 1
    protocol: str = "val"
    backbone: Any = None  # only prompt-learning methods (CoOp, CoCoOp) use it
    selection_override: tuple[torch.Tensor, torch.Tensor] | None = (
        None  # oracle: the test split; full-val: the full val split
    )
    text_raw: torch.Tensor | None = None  # per-class mean of the raw prompt embeddings (CLAP's anchors)
    train_centre: torch.Tensor | None = None  # [N, D] centre view of each training image (None: not encoded)

    def __post_init__(self) -> None:
        check_choice("protocol", self.protocol, PROTOCOLS)
        if self.train_centre is not None and (
            self.train_centre.dim() != 2 or self.train_centre.shape[-1] != self.train.shape[-1]
        ):
            raise ConfigError(
                f"train_centre must be [N, D] with D = {self.train.shape[-1]} (the training features' width); "
                f"got shape {list(self.train_centre.shape)}"
            )
        if (
            self.protocol == "full-val" and self.selection_override is None
        ):  # never fall back to the few-shot split unsaid
            raise ConfigError(
                "protocol full-val needs the full validation split's features (selection_override); got none"
            )

    @property
    def num_classes(self) -> int:
        return self.text.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.text.shape[1]

    @property
    def selection(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.protocol in ("oracle", "full-val") and self.selection_override is not None:
            return self.selection_override
        return self.val, self.val_labels

    def train_means(self) -> torch.Tensor:
        """One feature per training image: the mean of its augmented views."""
        return self.train.mean(dim=1)

    def centre_views(self) -> torch.Tensor | None:
        """The training images' centre views ``[N, D]``, or ``None`` when absent or not one per image of ``train``.

        Example:
            >>> x = torch.randn(2, 3, 4)
            >>> data = FewShotData(
            ...     x, torch.tensor([0, 1]), x[:, 0], torch.tensor([0, 1]), torch.eye(2, 4), 10.0, ["a", "b"]
            ... )
            >>> data.centre_views() is None, dataclasses.replace(data, train_centre=x[:, 0]).centre_views().shape
            (True, torch.Size([2, 4]))
        """
        centre = self.train_centre
        return centre if centre is not None and centre.shape[0] == self.train.shape[0] else None


class Head(nn.Module):
    """A trained classifier on raw image features: ``forward([B, D]) → [B, C]`` logits.

    ``meta`` holds the integers that fix tensor shapes (classes, dims, …) so
    an empty head can be built before weights are loaded and checked.
    """

    def __init__(self, config: Config, meta: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.meta = dict(meta)

    def regularizer(self) -> torch.Tensor | float:
        """Extra training loss (e.g. CLAP's constraint); zero by default."""
        return 0.0

    def for_classes(
        self, text: torch.Tensor, text_raw: torch.Tensor | None, classnames: list[str], backbone: Any
    ) -> "Head | None":
        """This trained head rebuilt for other classes, given their (ensembled, normalised) prompt embeddings.

        The base-to-new protocol tests a head on classes it never saw. Heads whose
        parameters do not belong to particular classes (zero-shot, CLIP-Adapter,
        CoOp's shared context, CoCoOp) override this; the default ``None`` says the
        head cannot (a linear probe's weights, Tip-Adapter's cache and GDA's class
        means exist only for the trained classes).
        """
        return None

    @torch.no_grad()
    def predict_logits(self, features: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        was_training = self.training
        self.eval()
        out = torch.cat([self(chunk) for chunk in features.split(batch_size)]) if len(features) else torch.empty(0)
        self.train(was_training)
        return out


@dataclass
class FitResult:
    """A fitted head plus the evidence: chosen hyper-parameters, validation score, history."""

    head: Head
    selected: dict[str, Any] = field(default_factory=dict)
    val_accuracy: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    method: str | None = None  # the method whose head this is, when not the one fitted (``auto`` picks one)


class Method(abc.ABC):
    """A few-shot method: ``Method(config).fit(data) → FitResult``.

    Subclasses set ``Config`` (a Config dataclass) and ``Head`` and implement
    ``fit``; ``needs_backbone`` marks methods that run the text encoder while
    training or predicting.
    """

    name: ClassVar[str] = "abstract"
    Config: ClassVar[type[Config]]
    Head: ClassVar[type[Head]]
    needs_backbone: ClassVar[bool] = False
    uses_text: ClassVar[bool] = True  # the class names reach the classifier (their prompts must be readable)
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    preset_crop_scale: ClassVar[dict[str, tuple[float, float]]] = {}  # training-view crops a preset's recipe uses

    def __init__(self, config: Config | None = None) -> None:
        self.config = config if config is not None else self.Config()

    @abc.abstractmethod
    def fit(self, data: FewShotData) -> FitResult:
        """Learn from ``data`` (never the test split) and return the head."""

    @classmethod
    def build_head(cls, config: Config, meta: dict[str, Any], backbone: Any = None) -> Head:
        """An untrained head of the right shapes, for loading saved weights into."""
        return cls.Head(config, meta)

    @classmethod
    def make_config(cls, preset: str | None = None, **overrides: Any) -> Config:
        """The method's config from a named preset plus overrides (validated)."""
        known = {f.name for f in dataclasses.fields(cls.Config)}  # type: ignore[arg-type]
        unknown = sorted(set(overrides) - known)
        if unknown:  # a typo must not be silently ignored (files from newer versions only warn)
            raise ConfigError(
                f"{cls.name} has no option {unknown[0]!r}; options: {', '.join(sorted(known)) or '(none)'}"
            )
        base: dict[str, Any] = {}
        if preset:
            check_choice(f"{cls.name} preset", preset, sorted(cls.presets) or ["(none)"])
            base = dict(cls.presets[preset])
        return cls.Config.from_dict({**base, **overrides}, where=f"{cls.name} config")


def get_method(name: str) -> type[Method]:
    """The Method class registered under ``name`` (ConfigError listing the choices if unknown)."""
    return METHODS.get(name)


def for_dataset(method: str, config: Config, dataset: str | None) -> Config:
    """``config`` with what depends on the dataset filled in, for methods that have such settings.

    A method opts in with a ``for_dataset(config, dataset)`` classmethod: Tip-Adapter's
    ``settings="auto"`` becomes the official per-dataset search range and starting α, β
    when ``dataset`` names one of the standard datasets; ``auto`` passes the name on to
    its candidates.

    Example:
        >>> for_dataset("tip-adapter", get_method("tip-adapter").Config(), "dtd").beta_max
        13.0
    """
    hook = getattr(get_method(method), "for_dataset", None)
    return hook(config, dataset) if hook is not None else config


@torch.no_grad()
def large_recipe(setting: str, large: str, n: int, above: int, auto_allowed: bool = True) -> bool:
    """Whether a method's recipe switch picks its large-N recipe for ``n`` training images.

    ``setting`` is the config's choice: ``"auto"`` takes the large recipe above ``above`` images (where
    ``auto_allowed``: an option the large recipe cannot honour keeps the small one), and naming ``large``
    forces it; anything else is the small recipe.

    Example:
        >>> large_recipe("auto", "lbfgs", 2_001, 2_000), large_recipe("auto", "lbfgs", 2_000, 2_000)
        (True, False)
        >>> large_recipe("lbfgs", "lbfgs", 10, 2_000), large_recipe("sgd", "lbfgs", 10**6, 2_000)
        (True, False)
    """
    if setting == "auto":
        return auto_allowed and n > above
    return setting == large


def evaluate_head(head: Head, features: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``head`` on ``features``."""
    if len(labels) == 0:
        return 0.0, 0.0
    logits = head.predict_logits(features)
    accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
    return accuracy, F.cross_entropy(logits, labels).item()


def better(score: tuple[float, float], best: tuple[float, float] | None) -> bool:
    """Higher accuracy wins; ties (common with 1–4 validation shots) go to lower loss."""
    return best is None or score[0] > best[0] or (score[0] == best[0] and score[1] < best[1])


def selection_record(protocol: str, grid: dict[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
    """How hyper-parameters were chosen, recorded with every result."""
    return {"protocol": protocol, "chosen_on": CHOSEN_ON[protocol], "grid": grid, "chosen": chosen}


__all__ = [
    "FewShotData",
    "FitResult",
    "Head",
    "METHODS",
    "Method",
    "cosine_logits",
    "evaluate_head",
    "get_method",
    "register",
]
