"""The 11 standard few-shot benchmarks in CoOp's layout, and custom datasets.

Under a datasets root, each benchmark lives where CoOp's DATASETS.md puts it,
e.g. ``$DATA/oxford_pets/images`` + ``$DATA/oxford_pets/split_zhou_OxfordPets.json``.
ImageNet uses ``imagenet/images/{train,val}`` + ``imagenet/classnames.txt``
(val is the test split; few-shot validation comes from unused train images);
FGVCAircraft uses the official ``images_variant_{train,val,test}.txt`` lists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import DataError
from ..data import Dataset, Sample, clean_classname, load_dataset, read_coop_split
from ..data.images import is_image_name


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark's files live, relative to the datasets root."""

    folder: str
    images: str
    split: str | None = None
    reader: str = "coop"  # coop | imagenet | fgvc


BENCHMARKS: dict[str, Benchmark] = {
    "imagenet": Benchmark("imagenet", "images", reader="imagenet"),
    "caltech101": Benchmark("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    "oxford_pets": Benchmark("oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "stanford_cars": Benchmark("stanford_cars", ".", "split_zhou_StanfordCars.json"),  # paths relative to the folder
    "oxford_flowers": Benchmark("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "food101": Benchmark("food-101", "images", "split_zhou_Food101.json"),
    "fgvc_aircraft": Benchmark("fgvc_aircraft", "images", reader="fgvc"),
    "sun397": Benchmark("sun397", "SUN397", "split_zhou_SUN397.json"),
    "dtd": Benchmark("dtd", "images", "split_zhou_DescribableTextures.json"),
    "eurosat": Benchmark("eurosat", "2750", "split_zhou_EuroSAT.json"),
    "ucf101": Benchmark("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
}


# Domain-generalisation targets of ImageNet in CoOp's layout: test sets only, each with a copy of
# ImageNet's classnames.txt. ImageNet-V2's class folders are label indices, the others' are
# WordNet ids (ImageNet-A and -R hold 200 of the 1,000 classes).
IMAGENET_TARGETS: dict[str, tuple[str, str, str]] = {  # name -> (folder, image folder, class folder naming)
    "imagenetv2": ("imagenetv2", "imagenetv2-matched-frequency-format-val", "index"),
    "imagenet_sketch": ("imagenet-sketch", "images", "wnid"),
    "imagenet_a": ("imagenet-adversarial", "imagenet-a", "wnid"),
    "imagenet_r": ("imagenet-rendition", "imagenet-r", "wnid"),
}


def load_benchmark(name: str, root: str | os.PathLike) -> Dataset:
    """Read benchmark ``name`` from the datasets root ``root``.

    Example:
        >>> load_benchmark("dtd", "/no/data")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.DataError: dtd: folder not found: /no/data/dtd
    """
    if name in IMAGENET_TARGETS:
        return _read_imagenet_target(name, Path(root))
    if name not in BENCHMARKS:
        raise DataError(
            f"unknown benchmark {name!r}; choose from {', '.join([*BENCHMARKS, *IMAGENET_TARGETS])} "
            "or give --dataset NAME=PATH"
        )
    spec, folder = BENCHMARKS[name], Path(root) / BENCHMARKS[name].folder
    if not folder.is_dir():
        raise DataError(f"{name}: folder not found: {folder}")
    if spec.reader == "imagenet":
        return _read_imagenet(folder)
    if spec.reader == "fgvc":
        return _read_fgvc(folder)
    return read_coop_split(folder / spec.split, folder / spec.images, name)  # type: ignore[operator]


def _read_classnames(folder: Path, dataset: str) -> tuple[list[str], list[str]]:
    """CoOp's ``classnames.txt``: ``<wnid> <class name>`` per line → (wnids, class names)."""
    names_file = folder / "classnames.txt"
    if not names_file.is_file():
        raise DataError(f"{dataset}: {names_file} not found (CoOp's classnames.txt: '<wnid> <class name>' per line)")
    wnids, classnames = [], []
    for line in names_file.read_text().splitlines():
        wnid, _, name = line.strip().partition(" ")
        if wnid:
            wnids.append(wnid)
            classnames.append(clean_classname(name))
    return wnids, classnames


def _read_imagenet_target(name: str, root: Path) -> Dataset:
    """An ImageNet test-only variant, labelled with ImageNet's 1,000 labels (only present classes have images)."""
    folder_name, images, naming = IMAGENET_TARGETS[name]
    folder = root / folder_name
    if not folder.is_dir():
        raise DataError(f"{name}: folder not found: {folder}")
    wnids, classnames = _read_classnames(folder, name)
    image_root = folder / images
    if not image_root.is_dir():
        raise DataError(f"{name}: folder not found: {image_root}")
    keys = [str(i) for i in range(len(wnids))] if naming == "index" else wnids
    present = {e.name for e in os.scandir(image_root) if e.is_dir()}
    unknown = sorted(present - set(keys))
    if unknown:
        raise DataError(f"{name}: class folder {image_root / unknown[0]} is not an ImageNet class ({naming})")
    labelled = [(label, key) for label, key in enumerate(keys) if key in present]
    samples = _folder_samples(image_root, [key for _, key in labelled])
    by_position = [label for label, _ in labelled]
    test = [Sample(s.path, by_position[s.label]) for s in samples]
    return Dataset(name, classnames, image_root, {"train": [], "val": [], "test": test})


def _read_imagenet(folder: Path) -> Dataset:
    wnids, classnames = _read_classnames(folder, "imagenet")
    splits = {
        "train": _folder_samples(folder / "images" / "train", wnids),
        "val": [],
        "test": _folder_samples(folder / "images" / "val", wnids),
    }
    return Dataset("imagenet", classnames, folder / "images", splits)


def _folder_samples(root: Path, class_dirs: list[str]) -> list[Sample]:
    if not root.is_dir():
        raise DataError(f"imagenet: folder not found: {root}")
    samples = []
    for label, name in enumerate(class_dirs):
        with os.scandir(root / name) as entries:
            samples += sorted(
                (Sample(Path(e.path), label) for e in entries if is_image_name(e.name)), key=lambda s: s.path
            )
    return samples


def _read_fgvc(folder: Path) -> Dataset:
    variants_file = folder / "variants.txt"
    if not variants_file.is_file():
        raise DataError(f"fgvc_aircraft: {variants_file} not found")
    variants = [line.strip() for line in variants_file.read_text().splitlines() if line.strip()]
    label_of = {v: i for i, v in enumerate(variants)}
    splits = {}
    for split in ("train", "val", "test"):
        listing = folder / f"images_variant_{split}.txt"
        if not listing.is_file():
            raise DataError(f"fgvc_aircraft: {listing} not found")
        samples = []
        for line in listing.read_text().splitlines():
            image_id, _, variant = line.strip().partition(" ")
            if variant not in label_of:
                raise DataError(f"fgvc_aircraft: {listing}: unknown variant {variant!r}")
            samples.append(Sample(folder / "images" / f"{image_id}.jpg", label_of[variant]))
        splits[split] = samples
    return Dataset("fgvc_aircraft", variants, folder / "images", splits)


def resolve_datasets(names: list[str], root: str | None, custom: list[str]) -> dict[str, Dataset]:
    """Benchmarks by name (needs ``root``) plus custom ``NAME=PATH`` datasets (ImageFolder or split JSON)."""
    out: dict[str, Dataset] = {}
    if names and not root:
        raise DataError("--datasets needs --datasets-root (the folder holding the benchmark folders)")
    for name in names:
        out[name] = load_benchmark(name, root)  # type: ignore[arg-type]
    for item in custom:
        name, sep, path = item.partition("=")
        if not sep or not name.strip():
            raise DataError(f"--dataset {item!r}: expected NAME=PATH")
        out[name.strip()] = load_dataset(path.strip(), name=name.strip())
    if not out:
        raise DataError("no datasets given: use --datasets (with --datasets-root) and/or --dataset NAME=PATH")
    return out
