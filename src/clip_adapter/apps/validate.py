"""``validate``: every problem of a dataset in one pass, grouped and counted.

Reads the dataset leniently (every bad entry recorded, not just the first),
decodes every image, hashes every file to find duplicates across splits, and
checks class sizes against the shots a run will ask for. Nothing is written.
Video datasets (a folder per class, or split CSVs with a class map) get the
same treatment through :func:`validate_videos`: every frame of every video is
decoded.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..backbones import Backbone
from ..core.errors import DataError
from ..core.files import sha256_file
from ..data import Dataset, load_dataset
from ..data.classnames import ClassnameMap, load_classname_map, renamed
from ..data.images import EXIF_NOTE, LARGE_PIXELS, BadImage, load_rgb
from ..data.issues import Issue, Issues, check_files, show
from ..pipeline import UNREADABLE_HINT, RunConfig, prompt_problems, prompts_refused, templates_for


@dataclass
class ValidationReport:
    """The outcome: issues plus what was looked at."""

    dataset: str
    issues: list[Issue]
    images_checked: int
    classes: int

    @property
    def errors(self) -> list[Issue]:
        """Problems that stop ``train`` (strict reading raises on each of these)."""
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        """Problems ``train`` copes with (few images, duplicates, ignored files): worth a look, not fatal."""
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def problems(self) -> list[Issue]:
        return self.errors + self.warnings

    @property
    def clean(self) -> bool:
        return not self.problems

    def grouped(self) -> dict[str, list[Issue]]:
        groups: dict[str, list[Issue]] = defaultdict(list)
        for issue in self.issues:
            groups[issue.kind].append(issue)
        return dict(sorted(groups.items(), key=lambda kv: (min(SEVERITY_ORDER[i.severity] for i in kv[1]), kv[0])))

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "clean": self.clean,
            "images_checked": self.images_checked,
            "classes": self.classes,
            "counts": dict(Counter(i.kind for i in self.issues)),
            "severity_counts": {s: sum(i.severity == s for i in self.issues) for s in SEVERITY_ORDER},
            "issues": [
                {"kind": i.kind, "severity": i.severity, "message": i.message, "path": i.path} for i in self.issues
            ],
        }


SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def validate_dataset(
    data: str | os.PathLike,
    split_file: str | os.PathLike | None = None,
    shots: int = 16,
    workers: int = 2,
    classnames: ClassnameMap = None,
    backbone: Backbone | Callable[[], Backbone] | None = None,
    run: RunConfig | None = None,
) -> ValidationReport:
    """Check a dataset (ImageFolder or CoOp split JSON) and report every problem.

    ``classnames`` is the class-name map ``train`` will be given (see
    :func:`clip_adapter.data.load_dataset`); report ``errors`` stop a run,
    ``warnings`` do not. With ``backbone`` the class prompts are checked as
    ``train`` checks them for ``run`` (its method, templates and
    ``allow_unknown_words``; default: ``train``'s defaults): a name the
    tokenizer cannot read, or two classes with identical prompts, is an error
    where ``train`` would refuse it (the CLI always passes ``train``'s backbone).
    ``backbone`` may be a function making one: it is called only once the
    dataset has been read, so a mistyped path costs no model load.

    Example:
        >>> validate_dataset("/no/such/dir")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.DataError: dataset folder not found: /no/such/dir
    """
    issues = Issues(strict=False)
    mapping = load_classname_map(classnames)
    dataset = load_dataset(data, split_file, issues=issues, classnames=mapping)
    files = files_by_split(dataset)
    hashes = _check_images(sorted({p for paths in files.values() for p in paths}), issues, workers)
    _check_duplicates(files, hashes, issues)
    _check_class_sizes(dataset, shots, issues, mapping)
    if backbone is not None:
        model = backbone if isinstance(backbone, Backbone) else backbone()
        _check_prompts(dataset, model, run or RunConfig(shots=shots), issues)
    return ValidationReport(dataset.name, issues.items, len(hashes), dataset.num_classes)


def validate_videos(
    data: str | os.PathLike,
    root: str | os.PathLike | None = None,
    classmap: str | os.PathLike | None = None,
    frames: int = 8,
    workers: int = 2,
) -> ValidationReport:
    """Check a video dataset (folder per class, or a folder of split CSVs) and report every problem.

    Every frame of every video is decoded; videos shorter than ``frames`` are
    noted (a run repeats their frames). ``images_checked`` counts readable videos.

    Example:
        >>> validate_videos("/no/such/dir")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.DataError: video folder not found: /no/such/dir
    """
    from ..video.check import check_videos, empty_classes, read_leniently

    dataset, issues = read_leniently(data, root, classmap)
    hashes = check_videos(dataset, issues, frames, workers)
    _check_duplicates(files_by_split(dataset), hashes, issues)
    empty_classes(dataset, issues)
    return ValidationReport(dataset.name, issues.items, len(hashes), dataset.num_classes)


def files_by_split(dataset: Any) -> dict[str, list[Path]]:
    """Paths of each split of an image or video dataset (anything with ``splits``)."""
    return {split: [s.path for s in samples] for split, samples in dataset.splits.items()}


def _check_one(path: Path) -> tuple[Path, str | None, list[tuple[str, str, str]]]:
    """Decode and hash one file; returns (path, content hash or None, [(kind, severity, message)])."""
    found: list[tuple[str, str, str]] = []
    try:
        img, notes = load_rgb(path)
        digest = sha256_file(path)
    except BadImage as exc:
        return path, None, [(exc.kind, "error", str(exc))]
    except (DataError, OSError) as exc:
        return path, None, [("unreadable", "error", f"{show(path)} cannot be read ({show(exc)})")]
    for note in notes:
        kind = "exif-orientation" if note.startswith(EXIF_NOTE) else "converted-mode"
        found.append((kind, "info", f"{show(path)}: {note}"))
    if img.width * img.height > LARGE_PIXELS:
        found.append(
            ("huge-image", "warning", f"{show(path)} is {img.width}x{img.height}: slow to decode, consider downscaling")
        )
    return path, digest, found


def _check_images(paths: list[Path], issues: Issues, workers: int) -> dict[Path, str]:
    return check_files(paths, _check_one, issues, workers, "checking images", "img")


def _check_duplicates(files: dict[str, list[Path]], hashes: dict[Path, str], issues: Issues) -> None:
    where: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for split, paths in files.items():
        for path in paths:
            if path in hashes:
                where[hashes[path]].append((split, path))
    for entries in where.values():
        splits = {s for s, _ in entries}
        if len(entries) < 2:
            continue
        listing = ", ".join(f"{show(p)} ({s})" for s, p in entries[:4])
        if len(splits) > 1:
            issues.add(
                "duplicate-across-splits",
                f"same image content in {'/'.join(sorted(splits))}: {listing}",
                entries[0][1],
                "warning",
            )
        else:
            issues.add(
                "duplicate-within-split",
                f"same image content twice in {entries[0][0]}: {listing}",
                entries[0][1],
                "warning",
            )


def _check_class_sizes(dataset: Dataset, shots: int, issues: Issues, mapping: dict[str, str]) -> None:
    counts = Counter(s.label for s in dataset.split("train"))
    empty_folders = {renamed(Path(i.path).name, mapping) for i in issues.items if i.kind == "empty-class" and i.path}
    for label, name in enumerate(dataset.classnames):
        if counts[label] == 0 and name in empty_folders:
            continue  # already reported as an empty class folder
        if counts[label] == 0:
            issues.add("empty-class", f"class {name!r} has no training images", None, "error")
        elif counts[label] < shots:
            issues.add(
                "few-images",
                f"class {name!r} has {counts[label]} training images, fewer than {shots} shots",
                None,
                "warning",
            )


def _check_prompts(dataset: Dataset, backbone: Backbone, run: RunConfig, issues: Issues) -> None:
    """What ``train`` refuses before encoding (:func:`~clip_adapter.pipeline.check_prompts_readable`),
    one issue per problem."""
    names = [n for n in dataset.classnames if n and n.isprintable()]  # empty or unprintable names are reported already
    problems = prompt_problems(backbone, names, templates_for(dataset, run.templates))
    severity = "error" if prompts_refused(run) else "warning"
    consequence = (
        f"train refuses it: {UNREADABLE_HINT}"
        if severity == "error"
        else "train warns and goes on (--allow-unknown-words)"
        if run.allow_unknown_words
        else f"train warns and goes on ({run.method} does not read the prompts)"
    )
    for name, words in problems.unknown.items():
        issues.add(
            "unreadable-classname",
            f"class {name!r}: the {backbone.name} tokenizer cannot read {', '.join(map(repr, words))}; {consequence}",
            None,
            severity,
        )
    for group in problems.clashes:
        issues.add(
            "identical-prompts",
            f"classes {' and '.join(map(repr, group))} get identical prompts on {backbone.name}; {consequence}",
            None,
            severity,
        )


def format_report(report: ValidationReport, examples: int = 5, unit: str = "images") -> str:
    """Human-readable report: one group per kind, with a count and the first examples (``unit``: images or videos)."""
    lines = [f"dataset {report.dataset}: {report.classes} classes, {report.images_checked} readable {unit} checked"]
    for kind, items in report.grouped().items():
        lines.append(f"{items[0].severity.upper():7s} {kind}: {len(items)}")
        lines += [f"    {item.message}" for item in items[:examples]]
        if len(items) > examples:
            lines.append(f"    … and {len(items) - examples} more (--json lists all)")
    if report.clean:
        lines.append("clean: no problems found")
    else:
        lines.append(
            f"{len(report.problems)} problem(s) found: {len(report.errors)} error(s), {len(report.warnings)} warning(s)"
        )
    return "\n".join(lines)
