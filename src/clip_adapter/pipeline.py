"""From a dataset and a backbone to a trained classifier and a result record.

The steps every entry point shares (CLI ``train``, the demo, the benchmark):
sample the few-shot split, encode what is not cached, fit the method on
features, evaluate on the test split, and record everything that produced the
number.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ._version import __version__
from .artifacts import Classifier
from .backbones.base import Backbone
from .core.config import SEED_MAX, Config, check_choice, check_range, option
from .core.errors import ConfigError, DataError
from .data import Dataset, FewShotSplit, Sample, ensemble, mean_raw, prompts_for, resolve_templates, sample_few_shot
from .data.classnames import match_classes
from .data.dataset import SPLITS
from .data.templates import dataset_key
from .features import AugmentConfig, ExtractStats, default_cache_dir, extract_images, image_store, prompt_embeddings
from .inference import score_features
from .methods import FewShotData, get_method
from .methods.base import PROTOCOLS, for_dataset
from .metrics import classification_report


@dataclass
class FeatureConfig(Config):
    """How images become cached features."""

    views: int = option(10, "augmented views cached per training image")
    aug_seed: int = option(0, "seed of the augmented views (shared across few-shot seeds so the cache is reused)")
    flip: bool = option(True, "random horizontal flip in training views")
    crop_scale: tuple[float, ...] = option(
        (0.5, 1.0),
        "random-resized-crop area range of training views: (0.5, 1) Tip-Adapter's cache, "
        "(0.08, 1) Dassl's (CoOp, CoCoOp, CLIP-Adapter)",
    )
    batch_size: int = option(64, "images per encoder batch")
    skip_bad: bool = option(False, "leave unreadable images out (and list them) instead of stopping")
    cache_dir: str = option("", "feature cache directory (default: $CLIP_ADAPTER_CACHE or ~/.cache/clip-adapter)")

    def validate(self) -> None:
        check_range("views", self.views, 1, 1000)
        check_range("batch_size", self.batch_size, 1, 65536)
        check_range("aug_seed", self.aug_seed, 0, SEED_MAX)
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(
                f"crop_scale must be LO,HI with 0 < LO <= HI <= 1, got {','.join(map(str, self.crop_scale))}"
            )

    def augment(self) -> AugmentConfig:
        return AugmentConfig(views=self.views, flip=self.flip, crop_scale=tuple(self.crop_scale))

    def cache_path(self):
        return self.cache_dir or default_cache_dir()


@dataclass
class RunConfig(Config):
    """One few-shot run: which method, how many shots, which seed, which protocol."""

    method: str = option("clip-adapter", "method name (see `clip-adapter methods`)")
    shots: int = option(16, "training images per class (CoOp protocol)")
    seed: int = option(1, "few-shot sampling and training seed")
    protocol: str = option(
        "val",
        "hyper-parameters chosen on: val (few-shot validation), full-val (the dataset's whole validation split), "
        "none (defaults) or oracle (TEST)",
    )
    templates: tuple[str, ...] = option((), "prompt templates; empty = the dataset's default")
    allow_unknown_words: bool = option(
        False, "train a prompt-based method even if the tokenizer cannot read some class names"
    )

    def validate(self) -> None:
        check_range("shots", self.shots, 0, 100_000)
        check_range("seed", self.seed, 0, SEED_MAX)
        check_choice("protocol", self.protocol, PROTOCOLS)
        get_method(self.method)


@dataclass
class SplitFeatures:
    """Cached features of one few-shot split, ready for a method."""

    train: torch.Tensor
    train_labels: torch.Tensor
    val: torch.Tensor
    val_labels: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    text: torch.Tensor
    text_raw: torch.Tensor
    stats: ExtractStats = field(default_factory=ExtractStats)
    full_val: tuple[torch.Tensor, torch.Tensor] | None = None  # protocol full-val: the whole validation split
    train_centre: torch.Tensor | None = None  # [N, D] centre view of each training image (None: not encoded)


def templates_for(dataset: Dataset, requested: tuple[str, ...] | str | None = None) -> tuple[str, ...]:
    """The run's templates: those asked for, else the dataset's own, else its name's default."""
    return resolve_templates(requested or dataset.templates or None, dataset.name)


def templates_source(dataset: Dataset, requested: tuple[str, ...] | str | None = None) -> str:
    """Where :func:`templates_for`'s templates came from, in words (recorded with every result)."""
    if requested:
        return "requested (--template)"
    if dataset.templates:
        return "declared by the dataset's split file (meta.templates)"
    key = dataset_key(dataset.name)
    if key:
        return f"CoOp's template for {key}"
    return f"default: no standard dataset matched the name {dataset.name!r} (pass --template to choose)"


UNREADABLE_HINT = (
    "rename the classes (--classnames FILE), use a backbone with an open vocabulary, or pass --allow-unknown-words"
)


@dataclass
class PromptProblems:
    """Class names a backbone's tokenizer cannot read, and groups of classes whose prompts tokenize identically."""

    tokenizer: str
    unknown: dict[str, list[str]]
    clashes: list[list[str]]

    def __bool__(self) -> bool:
        return bool(self.unknown or self.clashes)

    def message(self) -> str:
        """Every problem in one line (the first few of each kind)."""
        parts = []
        if self.unknown:
            shown = "; ".join(f"{name!r}: {', '.join(words)}" for name, words in list(self.unknown.items())[:5])
            more = "; …" if len(self.unknown) > 5 else ""
            parts.append(
                f"{len(self.unknown)} class name(s) hold words the {self.tokenizer} tokenizer "
                f"cannot read ({shown}{more})"
            )
        if self.clashes:
            parts.append(
                "identical prompts for " + "; ".join(" = ".join(repr(n) for n in group) for group in self.clashes[:3])
            )
        return "; ".join(parts)


def prompt_problems(backbone: Backbone, classnames: list[str], templates: tuple[str, ...]) -> PromptProblems:
    """What :func:`check_prompts_readable` refuses, as data (``validate`` reports each problem; ``train`` the
    first few).

    A tokenizer with a closed vocabulary (the toy CLIP's) maps unknown words to
    one ``<unk>`` token, so "siamese" and "pug" would get identical prompts and
    identical text embeddings: every prompt-based method would then guess
    between them.
    """
    unknown = backbone.unknown_words(list(classnames))
    return PromptProblems(backbone.name, unknown, identical_prompt_classes(backbone, classnames, templates))


def prompts_refused(run: RunConfig) -> bool:
    """Whether ``train`` refuses unreadable or identical prompts for ``run``: the method reads them and the user
    did not allow it."""
    return getattr(get_method(run.method), "uses_text", True) and not run.allow_unknown_words


def check_prompts_readable(
    backbone: Backbone, classnames: list[str], templates: tuple[str, ...], run: RunConfig
) -> None:
    """Refuse (for methods that read the prompts) class names the backbone's tokenizer cannot read.

    See :func:`prompt_problems`. The names and words are reported;
    ``allow_unknown_words`` turns the refusal into a warning.
    """
    problems = prompt_problems(backbone, classnames, templates)
    if not problems:
        return
    if prompts_refused(run):
        raise DataError(f"{problems.message()}; {UNREADABLE_HINT}")
    warnings.warn(problems.message())


def identical_prompt_classes(backbone: Backbone, classnames: list[str], templates: tuple[str, ...]) -> list[list[str]]:
    """Groups of classes whose prompts tokenize identically (so their text embeddings are equal)."""
    tokens = backbone.tokenize(prompts_for(classnames, templates)).reshape(len(classnames), -1)
    groups: dict[bytes, list[str]] = {}
    for name, row in zip(classnames, tokens):
        groups.setdefault(row.numpy().tobytes(), []).append(name)
    return [group for group in groups.values() if len(group) > 1]


def encode_split(
    backbone: Backbone,
    split: FewShotSplit,
    templates: tuple[str, ...],
    features: FeatureConfig,
    with_test: bool = True,
    full_val: list[Sample] | None = None,
) -> SplitFeatures:
    """Encode (or read from the cache) the train views, val, test and class prompts of ``split``.

    ``full_val`` (protocol ``full-val``): the dataset's whole validation split, encoded like val (one
    centre view; the few-shot val images among them come from the cache).
    The training images are also encoded once as centre views (``train_centre``, one more row per image
    beside its ``views`` augmented ones): ``auto`` scores held-out training images on the view test
    images are seen in.
    """
    store, stats = image_store(backbone, features.cache_path()), ExtractStats()

    def encode(samples, augment, desc, count_skipped=True):
        paths = [s.path for s in samples]
        feats, kept, run_stats = extract_images(
            backbone, paths, store, augment, features.aug_seed, features.batch_size, features.skip_bad, desc
        )
        if not count_skipped:  # the same images read a second time: their skips are already listed
            run_stats.skipped = []
        stats.merge(run_stats)
        return feats, torch.tensor([samples[i].label for i in kept], dtype=torch.long), kept

    train, train_labels, train_kept = encode(split.train, features.augment(), "train views")
    centre, _, centre_kept = encode(split.train, None, "train centre", count_skipped=False)
    train_centre = centre if centre_kept == train_kept else None  # the same images, in the same order, or none
    val, val_labels, _ = encode(split.val, None, "val")
    test, test_labels, _ = (
        encode(split.test, None, "test")
        if with_test
        else (torch.empty(0, backbone.embed_dim), torch.empty(0, dtype=torch.long), [])
    )
    whole_val = encode(full_val, None, "full val")[:2] if full_val is not None else None
    prompts = prompt_embeddings(backbone, split.dataset.classnames, templates, features.cache_path())
    classes = split.dataset.num_classes
    return SplitFeatures(
        train,
        train_labels,
        val,
        val_labels,
        test,
        test_labels,
        ensemble(prompts, classes),
        mean_raw(prompts, classes),
        stats,
        whole_val,
        train_centre,
    )


def full_validation(dataset: Dataset, protocol: str) -> list[Sample] | None:
    """The samples protocol ``full-val`` chooses on: the dataset's whole validation split (None for other protocols).

    A dataset without one (ImageNet in CoOp's layout) is refused: the official Tip-Adapter code searches
    ImageNet on the test split, which is protocol ``oracle`` here.
    """
    if protocol != "full-val":
        return None
    samples = dataset.split("val")
    if not samples:
        raise DataError(
            f"protocol full-val: dataset {dataset.name} has no validation split to choose on "
            "(use --protocol val, or oracle to choose on TEST as the official code does for ImageNet)"
        )
    return samples


def sample_split(dataset: Dataset, shots: int, seed: int) -> FewShotSplit:
    """The CoOp few-shot split, warning for classes with fewer images than asked for."""
    if dataset.count("train") == 0 and shots > 0:
        raise DataError(f"dataset {dataset.name} has no training images")
    split = sample_few_shot(dataset, shots, seed)
    for name, counts in split.short_classes.items():
        detail = ", ".join(f"{n} {s}" for s, n in counts.items())
        warnings.warn(f"class {name!r} has fewer images than asked for ({detail}); using all it has")
    return split


def few_shot_data(
    feats: SplitFeatures, backbone: Backbone, classnames: list[str], templates: tuple[str, ...], run: RunConfig
) -> FewShotData:
    """What the method may learn from; the selection split is the whole val split under ``full-val``, test only
    under ``oracle``."""
    override = {"oracle": (feats.test, feats.test_labels), "full-val": feats.full_val}.get(run.protocol)
    return FewShotData(
        feats.train,
        feats.train_labels,
        feats.val,
        feats.val_labels,
        feats.text,
        backbone.logit_scale,
        list(classnames),
        templates,
        run.seed,
        run.protocol,
        backbone,
        override,
        feats.text_raw,
        feats.train_centre,
    )


def fit(
    run: RunConfig, method_config: Config, data: FewShotData, backbone: Backbone
) -> tuple[Classifier, dict[str, Any]]:
    """Fit ``run.method`` on ``data``; return the classifier and the fit record."""
    method = get_method(run.method)(method_config)
    if data.train.shape[0] == 0 and run.method != "zero-shot":
        raise DataError(f"{run.method} needs training images; got none (shots={run.shots})")
    torch.manual_seed(run.seed)
    start = time.perf_counter()
    result = method.fit(data)
    seconds = time.perf_counter() - start
    # `auto` fits another method's head: the artifact is an ordinary artifact of that method.
    clf = Classifier(
        result.method or run.method, result.head, data.classnames, data.templates, backbone.describe(), result.selected
    )
    return clf, {
        "selection": result.selected,
        "val_accuracy": result.val_accuracy,
        "fit_seconds": round(seconds, 3),
        "history": result.history,
    }


def versions() -> dict[str, str]:
    import open_clip

    return {
        "clip_adapter": __version__,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
    }


def split_fingerprint(split: FewShotSplit) -> str:
    """SHA-256 of the sampled split (paths, labels, class names) and its sampling parameters."""
    payload = json.dumps(split.to_json(), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class PreparedSplit:
    """A sampled split with its features: what every method of a (dataset, shots, seed) cell shares."""

    dataset: Dataset
    split: FewShotSplit
    templates: tuple[str, ...]
    features: SplitFeatures
    feature_config: FeatureConfig
    encode_seconds: float


def prepare(
    backbone: Backbone, dataset: Dataset, run: RunConfig, features: FeatureConfig | None = None
) -> PreparedSplit:
    """Sample the few-shot split of ``run`` and encode (or read from the cache) its features."""
    features = features or FeatureConfig()
    templates = templates_for(dataset, run.templates)
    check_prompts_readable(backbone, dataset.classnames, templates, run)
    full_val = full_validation(dataset, run.protocol)  # refused before any encoding when there is none
    split = sample_split(dataset, run.shots, run.seed)
    start = time.perf_counter()
    feats = encode_split(backbone, split, templates, features, full_val=full_val)
    return PreparedSplit(dataset, split, templates, feats, features, time.perf_counter() - start)


def fit_and_evaluate(
    backbone: Backbone, prepared: PreparedSplit, run: RunConfig, method_config: Config | None = None
) -> tuple[Classifier, dict[str, Any]]:
    """Fit ``run.method`` on a prepared split and evaluate it (and zero-shot) on the test split."""
    method_config = for_dataset(run.method, method_config or get_method(run.method).Config(), prepared.dataset.name)
    feats, dataset = prepared.features, prepared.dataset
    data = few_shot_data(feats, backbone, dataset.classnames, prepared.templates, run)
    clf, record = fit(run, method_config, data, backbone)
    zero_shot, _ = fit(run.replace(method="zero-shot"), get_method("zero-shot").Config(), data, backbone)
    test = classification_report(clf.logits(feats.test), feats.test_labels, dataset.classnames)
    zs_test = classification_report(zero_shot.logits(feats.test), feats.test_labels, dataset.classnames)
    result = {
        "run": run.to_dict(),
        "shots_requested": run.shots,
        "shots_used": shots_used(feats.train_labels, dataset.classnames),
        "method": run.method,
        "method_config": clf.head.config.to_dict(),
        "features": {**prepared.feature_config.to_dict(), "cache_dir": str(prepared.feature_config.cache_path())},
        "protocol": run.protocol,
        **record,
        "test": test,
        "zero_shot_test_accuracy": zs_test["accuracy"],
        "zero_shot_test_calibration": zs_test["calibration"],
        "backbone": backbone.describe(),
        "templates": list(prepared.templates),
        "templates_source": templates_source(dataset, run.templates),
        "data": {
            "dataset": dataset.name,
            "root": str(dataset.root.resolve()),
            "num_classes": dataset.num_classes,
            "fingerprint": split_fingerprint(prepared.split),
            "counts": {
                "train": len(feats.train_labels),
                "val": len(feats.val_labels),
                "test": len(feats.test_labels),
                "selection": len(data.selection[1]),
            },
            "short_classes": prepared.split.short_classes,
        },
        "extraction": feats.stats.to_dict(),
        "timings": {"encode_seconds": round(prepared.encode_seconds, 3), "fit_seconds": record["fit_seconds"]},
        "versions": versions(),
    }
    return clf, result


def shots_used(train_labels: torch.Tensor, classnames: list[str]) -> dict[str, Any]:
    """Training images per class the method really saw: ``min``, ``max`` and the classes with fewer than ``max``.

    ``--shots 64`` on a folder with 10 images per class trains on 10, and a
    result that said 64 would be compared with real 64-shot runs; ``run.shots``
    stays the number asked for (the bench groups by it), this is what was used.

    Example:
        >>> shots_used(torch.tensor([0, 0, 1]), ["cat", "dog"])
        {'min': 1, 'max': 2, 'classes_below_max': {'dog': 1}}
    """
    counts = torch.bincount(train_labels.long(), minlength=len(classnames)).tolist() if len(classnames) else []
    top = max(counts, default=0)
    return {
        "min": min(counts, default=0),
        "max": top,
        "classes_below_max": {n: c for n, c in zip(classnames, counts) if c < top},
    }


def shots_text(result: dict[str, Any]) -> str:
    """``16-shot``, or what was used when it differs from what was asked (``10-shot (64 requested)``).

    Example:
        >>> shots_text({"run": {"shots": 64}, "shots_used": {"min": 3, "max": 10}})
        '3-10-shot (64 requested)'
    """
    requested = result["run"]["shots"]
    used = result.get("shots_used")  # absent from results written before it was recorded
    if not used or used["min"] == used["max"] == requested:
        return f"{requested}-shot"
    span = str(used["max"]) if used["min"] == used["max"] else f"{used['min']}-{used['max']}"
    return f"{span}-shot ({requested} requested)"


LOG_FIELDS = ("candidate", "epoch", "loss", "lr", "selection_accuracy", "selection_loss")


def epoch_log_csv(history: list[dict[str, Any]]) -> str:
    """The per-epoch records of every candidate a run trained, as CSV (the run's ``log.csv``).

    Example:
        >>> print(epoch_log_csv([{"alpha": 0.2, "epochs": [{"epoch": 1, "loss": 0.5, "lr": 0.001}]}]), end="")
        candidate,epoch,loss,lr,selection_accuracy,selection_loss
        alpha=0.2,1,0.5,0.001,,
    """
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for record in history:
        name = " ".join(
            f"{k}={v}" for k, v in record.items() if k in ("lr", "alpha", "beta") and not isinstance(v, (list, dict))
        )
        for row in record.get("epochs", []):
            writer.writerow({"candidate": name, **row})
    return buffer.getvalue()


def run_few_shot(
    backbone: Backbone,
    dataset: Dataset,
    run: RunConfig,
    method_config: Config | None = None,
    features: FeatureConfig | None = None,
) -> tuple[Classifier, dict[str, Any], FewShotSplit]:
    """Sample, encode, fit and evaluate one run; returns ``(classifier, result, split)``.

    Example:
        >>> # clf, result, split = run_few_shot(create_backbone("toy"), load_dataset("photos"), RunConfig(shots=4))
    """
    prepared = prepare(backbone, dataset, run, features)
    clf, result = fit_and_evaluate(backbone, prepared, run, method_config)
    return clf, result, prepared.split


def split_samples(dataset: Dataset, split: str) -> list[Sample]:
    """The samples of ``split``; ``all``: every image of the dataset (a separate held-out folder, say)."""
    return [s for name in SPLITS for s in dataset.split(name)] if split == "all" else dataset.split(split)


@dataclass
class LabelledSamples:
    """What :func:`encode_labelled` read: the samples of the split, which of them were read, and how."""

    samples: list[Sample]
    stats: ExtractStats


def encode_labelled(
    clf: Classifier,
    backbone: Backbone,
    dataset: Dataset,
    split: str,
    cache_dir: Any,
    where: str,
    batch_size: int = 64,
    skip_bad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, list[int], Any]:
    """Features and artifact-ordered labels of ``dataset``'s ``split`` (``all``: every image), classes matched by name.

    One path for ``eval`` and for fitting a trust record: a class the artifact was
    not trained on is refused (one DataError naming it), a subset of its classes
    is fine. Returns ``(features, labels, kept, read)``: ``kept`` indexes the
    samples that were read, ``read`` a :class:`LabelledSamples`.
    """
    labels_of = match_classes(dataset.classnames, clf.classnames, where)
    samples = split_samples(dataset, split)
    if not samples:
        raise DataError(f"{where} has no {split} images")
    store = image_store(backbone, cache_dir or default_cache_dir())
    feats, kept, stats = extract_images(
        backbone, [s.path for s in samples], store, None, 0, batch_size, skip_bad, split
    )
    if not kept:
        raise DataError(f"{where}: none of its {len(samples)} {split} images could be read (all were skipped)")
    labels = torch.tensor([labels_of[samples[i].label] for i in kept], dtype=torch.long)
    return feats, labels, kept, LabelledSamples(samples, stats)


def trust_report(clf: Classifier, scores: Any, labels: torch.Tensor) -> dict[str, Any]:
    """What the artifact's trust record does on labelled images: the uncalibrated calibration, the sets' coverage."""
    from .trust.calibration import calibration_report
    from .trust.conformal import conformal_report

    out: dict[str, Any] = {}
    trust = clf.trust
    if trust is not None and trust.calibration is not None:
        out["uncalibrated"] = calibration_report(scores.raw, labels)
    if trust is not None and trust.conformal is not None:
        out["conformal"] = {
            "score": trust.conformal.score,
            "class_conditional": trust.conformal.class_conditional,
            "n_calibration": trust.conformal.n_calibration,
            **conformal_report(scores.sets, labels, trust.conformal.alpha),
        }
    return out


def ood_report(
    clf: Classifier, backbone: Backbone, id_logits: torch.Tensor, ood_logits: torch.Tensor
) -> dict[str, Any]:
    """AUROC and FPR at 95 % TPR of the artifact's OOD score (MCM when it has no detector), in vs out of
    distribution."""
    from .trust.ood import auroc, fpr_at_tpr, ood_scores

    detector = clf.trust.ood if clf.trust is not None else None
    if detector is not None:
        inside, outside = detector.scores(id_logits), detector.scores(ood_logits)
        name = detector.score
    else:
        from .trust.fit import ood_logit_scale  # the scale `clip-adapter ood` would fit MCM with

        scale = ood_logit_scale(clf, backbone)
        inside, outside = (ood_scores(x, "mcm", logit_scale=scale) for x in (id_logits, ood_logits))
        name = "mcm"
    report = {
        "score": name,
        "num_in_distribution": len(inside),
        "num_out_of_distribution": len(outside),
        "auroc": auroc(inside, outside),
        "fpr_at_95_tpr": fpr_at_tpr(inside, outside, 0.95),
    }
    if detector is not None:  # what the recorded threshold does on these images
        report.update(
            threshold=detector.threshold,
            accepted_in_distribution=float((inside >= detector.threshold).double().mean()),
            accepted_out_of_distribution=float((outside >= detector.threshold).double().mean()),
        )
    return report


def evaluate_classifier(
    clf: Classifier,
    backbone: Backbone,
    dataset: Dataset,
    split: str,
    cache_dir: Any,
    where: str,
    batch_size: int = 64,
    skip_bad: bool = False,
    ood_images: Sequence[Path] = (),
) -> dict[str, Any]:
    """Accuracy, per-class accuracy and confusion matrix of ``clf`` on ``dataset``'s ``split`` (``all``: every image).

    Classes are matched by name (:func:`~clip_adapter.data.classnames.match_classes`),
    so a held-out folder may hold any subset of the artifact's classes: accuracy
    is over the images present while predictions still range over every class
    of the artifact; per-class accuracy covers the classes with images, and
    ``absent_classes`` names the others. A class the artifact was not trained on
    is refused. ``where`` names the dataset in messages (``dataset held3``).
    """
    cache_dir = cache_dir or default_cache_dir()
    feats, labels, kept, read = encode_labelled(clf, backbone, dataset, split, cache_dir, where, batch_size, skip_bad)
    scores = score_features(clf, backbone, feats, cache_dir)
    report = classification_report(scores.logits, labels, clf.classnames)  # calibration measured as predict answers
    report.update(trust_report(clf, scores, labels))
    if ood_images:
        store = image_store(backbone, cache_dir)
        ood_feats, _, ood_stats = extract_images(
            backbone, list(ood_images), store, None, 0, batch_size, skip_bad, "ood"
        )
        report["ood"] = ood_report(clf, backbone, scores.raw, clf.logits(ood_feats))
        report["ood"]["skipped"] = ood_stats.to_dict()["skipped"]
    present = set(labels.tolist())
    report["per_class_accuracy"] = {
        n: a for i, (n, a) in enumerate(report["per_class_accuracy"].items()) if i in present
    }
    report["absent_classes"] = [n for i, n in enumerate(clf.classnames) if i not in present]
    report["skipped"] = read.stats.to_dict()["skipped"]
    return report
