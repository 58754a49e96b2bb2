"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable

from ..backbones import Backbone, create_backbone
from ..core.config import Config
from ..core.errors import ConfigError
from ..core.files import quoted, read_json
from ..data import Dataset, load_dataset
from ..pipeline import FeatureConfig
from .parsing import float_pair, positive_int, seed_int

GIVEN = "given_options"  # the Namespace attribute track_given_options fills


def add_backbone_options(
    parser: argparse.ArgumentParser, default: str | None = "toy", default_help: str = "the artifact's backbone"
) -> None:
    """The backbone options; ``default=None`` means "what the artifact records", said in ``default_help``."""
    group = parser.add_argument_group("backbone")
    shown = "%(default)s" if default is not None else default_help  # never "(default: None)"
    group.add_argument(
        "--backbone",
        default=default,
        help=f"toy (built-in tiny CLIP) or an open_clip architecture, e.g. ViT-B-32 (default: {shown})",
    )
    group.add_argument(
        "--pretrained",
        default=None,
        help="open_clip tag (downloads), checkpoint path, or none (random init); toy default: the shipped checkpoint",
    )
    group.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "bf16", "fp32"),
        help="encoder precision (auto: bf16 where the CPU/GPU is fast at it)",
    )
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    group.add_argument(
        "--init-seed", type=seed_int, default=0, help="seed for --pretrained none (default: %(default)s)"
    )


def add_data_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        required=required,
        help="ImageFolder root (root/<class>/<image>), a CoOp split JSON, or a folder with split.json + images/",
    )
    group.add_argument("--split-file", default=None, help="CoOp split JSON whose paths are relative to --data")
    group.add_argument(
        "--classnames",
        default=None,
        metavar="FILE",
        help='JSON map renaming classes: {"<folder or class name>": "<new name>"}',
    )


def add_feature_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("features")
    defaults = FeatureConfig()
    group.add_argument(
        "--views",
        type=positive_int,
        default=defaults.views,
        help="augmented views per training image (default: %(default)s)",
    )
    group.add_argument(
        "--aug-seed",
        type=seed_int,
        default=defaults.aug_seed,
        help="seed of the augmented views (default: %(default)s)",
    )
    group.add_argument(
        "--no-flip", action="store_true", help="no horizontal flip in training views (when left/right matters)"
    )
    group.add_argument(
        "--crop-scale",
        default=None,
        metavar="LO,HI",
        help="random-resized-crop area range of training views (default: 0.5,1, Tip-Adapter's; "
        "0.08,1 is Dassl's, used by CoOp, CoCoOp and CLIP-Adapter; --preset official picks its method's)",
    )
    group.add_argument(
        "--batch-size", type=positive_int, default=defaults.batch_size, help="encoder batch size (default: %(default)s)"
    )
    group.add_argument(
        "--skip-bad", action="store_true", help="leave unreadable images out and list them, instead of stopping"
    )
    group.add_argument(
        "--cache-dir", default="", help="feature cache (default: $CLIP_ADAPTER_CACHE or ~/.cache/clip-adapter)"
    )


def backbone_from_args(args: argparse.Namespace) -> Backbone:
    return create_backbone(args.backbone, args.pretrained, args.precision, args.device, args.init_seed)


def dataset_from_args(args: argparse.Namespace) -> Dataset:
    return load_dataset(args.data, args.split_file, classnames=getattr(args, "classnames", None))


def data_inputs(args: argparse.Namespace, dataset: Dataset | None = None) -> list:
    """The paths a command reads its data from: outputs must stay out of them."""
    return [args.data, args.split_file, dataset.root if dataset is not None else None]


def add_overwrite_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {what} this tool wrote earlier at --out (anything else there is never replaced)",
    )


def cache_dir_from_args(args: argparse.Namespace, inputs: list | None = None) -> str:
    """``--cache-dir`` as given ("" = the default), checked before any work: a folder we can use, outside the data."""
    from ..core.outputs import check_cache_dir
    from ..features import default_cache_dir

    check_cache_dir(args.cache_dir or default_cache_dir(), inputs or [])
    return args.cache_dir


def features_from_args(
    args: argparse.Namespace, inputs: list | None = None, crop_scale: tuple[float, ...] | None = None
) -> FeatureConfig:
    """The feature options; ``crop_scale`` is the default when ``--crop-scale`` is not given."""
    extra = {"crop_scale": crop_scale} if crop_scale else {}
    if args.crop_scale is not None:
        extra["crop_scale"] = float_pair(args.crop_scale, "--crop-scale")
    return FeatureConfig(
        views=args.views,
        aug_seed=args.aug_seed,
        flip=not args.no_flip,
        batch_size=args.batch_size,
        skip_bad=args.skip_bad,
        cache_dir=cache_dir_from_args(args, inputs),
        **extra,
    )


def parse_assignments(pairs: list[str], config_cls: type[Config]) -> dict[str, Any]:
    """``["alpha=0.5", "alpha_grid=0.1,0.2"]`` → typed overrides (unknown keys are left for the config to refuse)."""
    types = {f.name: str(f.type) for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE")
        key = key.strip().replace("-", "_")
        out[key] = _parse_value(text.strip(), types.get(key, ""))
    return out


def _parse_value(text: str, type_name: str) -> Any:
    if type_name.startswith("tuple"):
        return [_parse_value(part, "") for part in text.split(",") if part.strip()] if text else []
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def add_config_options(
    parser: argparse.ArgumentParser,
    config_cls: type[Config],
    exclude: tuple[str, ...] = (),
    aliases: dict[str, str] | None = None,
) -> None:
    """One ``--field-name`` option per config field, typed and with the field's help text
    (plus ``aliases``: field → flag)."""
    defaults = config_cls()
    for f in dataclasses.fields(config_cls):  # type: ignore[arg-type]
        if f.name in exclude:
            continue
        default = getattr(defaults, f.name)
        flags = ["--" + f.name.replace("_", "-"), *([aliases[f.name]] if aliases and f.name in aliases else [])]
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})".replace("%", "%%")
        if isinstance(default, bool):
            parser.add_argument(
                *flags, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=help_text
            )
        elif isinstance(default, tuple):
            parser.add_argument(*flags, dest=f.name, default=None, help=help_text + "; comma-separated")
        else:
            parser.add_argument(
                *flags, dest=f.name, default=None, type=type(default) if default is not None else str, help=help_text
            )


def config_from_args(config_cls: type[Config], args: argparse.Namespace, **extra: Any) -> Config:
    """Build ``config_cls`` from the options given on the command line (others keep their defaults)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config_cls):  # type: ignore[arg-type]
        value = getattr(args, f.name, None)
        if value is None:
            continue
        values[f.name] = _parse_value(value, "tuple") if isinstance(getattr(config_cls(), f.name), tuple) else value
    return config_cls.from_dict({**values, **extra}, where="options")


# --- replaying a recorded run (--config) ---------------------------------------------------------------


def track_given_options(parser: argparse.ArgumentParser) -> None:
    """Record in ``args.given_options`` the destination of every option typed on the command line.

    ``--config`` replays a recorded run, and an option typed overrides the record while one left out does
    not; after parsing, ``--shots 16`` and the default 16 look the same, so each of the parser's actions
    notes that it ran. Call it once every option is added.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> _ = p.add_argument("--shots", type=int, default=16)
        >>> _ = p.add_argument("--seed", type=int, default=1)
        >>> track_given_options(p)
        >>> sorted(given_options(p.parse_args(["--shots", "16"])))
        ['shots']
    """
    # argparse has no public list of a parser's actions, and calls an action's class's __call__ (an instance
    # attribute would be ignored): each action becomes an instance of a recording subclass of its own class.
    for action in parser._actions:
        if not isinstance(action, _Recording):
            action.__class__ = _recording_class(type(action))


class _Recording:
    """Marks an action class made by :func:`_recording_class`."""


_RECORDING_CLASSES: dict[type, type] = {}


def _recording_class(cls: type[argparse.Action]) -> type:
    if cls not in _RECORDING_CLASSES:

        def __call__(self, parser, namespace, values, option_string=None):
            given = vars(namespace).setdefault(GIVEN, set())
            given.add(self.dest)
            cls.__call__(self, parser, namespace, values, option_string)

        _RECORDING_CLASSES[cls] = type(f"Recording{cls.__name__}", (_Recording, cls), {"__call__": __call__})
    return _RECORDING_CLASSES[cls]


def given_options(args: argparse.Namespace) -> set[str]:
    """The destinations of the options typed on the command line (see :func:`track_given_options`)."""
    return set(getattr(args, GIVEN, ()))


def add_config_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--config PATH``: replay the settings recorded by an earlier run (options given on the command line win)."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help=f"replay the settings recorded in {what} (the file, or the folder holding it); "
        "options given on the command line override them",
    )


def read_recorded_config(path: str, names: tuple[str, ...], what: str) -> tuple[Path, dict[str, Any]]:
    """``(file, object)`` of the JSON a ``--config`` names: the file itself, or the first of ``names`` in a folder.

    Every failure is a one-line ConfigError naming the file: missing, unreadable, not JSON, not an object.
    The record is JSON and nothing else (no pickle, nothing executed).

    Example:
        >>> read_recorded_config("/no/such/run", ("config.json",), "an artifact's config.json")
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: --config file not found: /no/such/run
    """
    file = Path(path)
    if file.is_dir():
        found = [file / name for name in names if (file / name).is_file()]
        if not found:
            raise ConfigError(f"--config {quoted(file)} is a folder with no {' or '.join(names)}: give {what}")
        file = found[0]
    data = read_json(file, "--config file", ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"--config {quoted(file)} is not {what} (a JSON {type(data).__name__}, not an object)")
    return file, data


def recorded(file: Path, build: Callable[[], Any]) -> Any:
    """``build()``, with a ConfigError it raises (a bad value in the record) prefixed by the record's file.

    Example:
        >>> from clip_adapter.core.config import check_range
        >>> recorded(Path("run/config.json"), lambda: check_range("shots", -1, 0))
        Traceback (most recent call last):
        ...
        clip_adapter.core.errors.ConfigError: --config run/config.json: shots must be in [0, inf], got -1
    """
    try:
        return build()
    except ConfigError as exc:
        raise ConfigError(f"--config {quoted(file)}: {exc}") from None
