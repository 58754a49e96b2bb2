"""``clip-adapter compose-bench``: is a CLIP a bag of words? Attribution, relation, order, negation, biases, probes.

``--write-toy-suites DIR`` writes the toy world's four suites as files (``DIR/attribution``,
``relation``, ``order``, ``negation``: each ``images/`` plus ``items.json``, a JSON list of
``{"image", "true_caption", "false_captions"}``; fixed seeds ≥ 1000). ``--suites DIR``
(repeatable; a suite folder or a folder of suites, e.g. your own Visual Genome Attribution
in the same format) with ``--out`` scores one or several models: accuracy = how often the
true caption gets the highest cosine with the image (ties count as a coin toss). Each
``--model LABEL=PRETRAINED`` (repeatable, all on ``--backbone``) is one row of the table;
without it, ``--pretrained`` is the one model, ``base``. Beside the suites: the multi-object
biases (image side follows the larger object? text side the first-mentioned one?), binding
probes (colour of the object of a given shape, from frozen image or text embeddings vs the
cross-modal cosine), and for toy backbones zero-shot accuracy on the toy tasks shape and
colour (what a remedy costs). ``--out`` (a new or empty folder, or our own earlier output
with ``--overwrite``) receives ``compose.json``, ``compose.md`` and ``suites.png``,
``bias.png``, ``probes.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..backbones import create_backbone
from ..compose.bench import ComposeConfig, bench_models, markdown_tables, write_bench
from ..compose.bias import BiasConfig
from ..compose.kinds import BENCH_KIND
from ..compose.plots import figures
from ..compose.probes import ProbeConfig
from ..compose.suites import find_suites, read_suite
from ..compose.toy_suites import SUITES, write_toy_suites
from ..errors import ArtifactError, ConfigError, OutputError
from ..features import default_cache_dir
from ..io import quoted
from ..outputs import claim_output_dir
from ..toyworld.backbone import RANDOM, TOY_NAMES, resolve_checkpoint
from .common import add_backbone_options, cache_dir_from_args
from .parsing import positive_int

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compose-bench", help="compositionality benchmarks: attribution, relation, order, negation, biases, probes",
                       description=__doc__)
    p.add_argument("--write-toy-suites", metavar="DIR", default=None, help="write the toy suites as files into DIR (new or empty)")
    p.add_argument("--items-per-suite", type=positive_int, default=240, help="items per toy suite (default: %(default)s)")
    p.add_argument("--suites", action="append", default=[], metavar="DIR", help="a suite folder, or a folder of suites (repeatable)")
    p.add_argument("--out", default=None, help="folder for compose.json, compose.md and the plots (new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace our own earlier output at --out / --write-toy-suites")
    p.add_argument("--model", action="append", default=[], metavar="LABEL=PRETRAINED",
                   help="a model to score (repeatable; same --backbone): e.g. base=shipped negclip=runs/negclip")
    add_backbone_options(p)
    g = p.add_argument_group("studies")
    g.add_argument("--no-bias", action="store_true", help="skip the multi-object bias study")
    g.add_argument("--no-probes", action="store_true", help="skip the binding probes")
    g.add_argument("--zero-shot", default="auto", choices=("auto", "always", "never"),
                   help="zero-shot accuracy on the toy tasks shape and colour (auto: toy backbones only)")
    g.add_argument("--bias-pairs", type=positive_int, default=BiasConfig.pairs, help="object pairs of the bias study (default: %(default)s)")
    g.add_argument("--probe-train", type=positive_int, default=ProbeConfig.train, help="probe training scenes per shape (default: %(default)s)")
    g.add_argument("--probe-test", type=positive_int, default=ProbeConfig.test, help="probe test scenes per shape (default: %(default)s)")
    g.add_argument("--zero-shot-per-class", type=positive_int, default=100, help="zero-shot test images per class (default: %(default)s)")
    p.add_argument("--cache-dir", default="", help="feature cache (default: $CLIP_ADAPTER_CACHE or ~/.cache/clip-adapter)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="encoder batch size (default: %(default)s)")
    p.set_defaults(func=main)


def parse_models(pairs: list[str], pretrained: str | None) -> dict[str, str | None]:
    """``["base=shipped", "neg=runs/neg"]`` → ``{label: pretrained}``; without pairs, ``{"base": pretrained}``.

    Example:
        >>> parse_models(["base=shipped", "neg=runs/neg"], None)
        {'base': 'shipped', 'neg': 'runs/neg'}
    """
    if not pairs:
        return {"base": pretrained}
    if pretrained is not None:
        raise ConfigError("give the models either with --model LABEL=PRETRAINED or with --pretrained alone, not both")
    models: dict[str, str | None] = {}
    for pair in pairs:
        label, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not label or not value:
            raise ConfigError(f"--model {pair!r}: expected LABEL=PRETRAINED, e.g. negclip=runs/negclip")
        if label in models:
            raise ConfigError(f"--model: the label {label!r} is given twice")
        models[label] = value
    return models


def _check_paths(models: dict[str, str | None], backbone: str) -> None:
    """A checkpoint that looks like a path must exist: found now, not after the other models are scored."""
    for label, value in models.items():
        if value and (os.sep in value or value.endswith(CHECKPOINT_SUFFIXES)) and not os.path.exists(value):
            raise ArtifactError(f"--model {label}: checkpoint not found: {quoted(value)}")
        if backbone in TOY_NAMES and value and value.lower() != RANDOM:
            try:
                resolve_checkpoint(value)  # a toy checkpoint is a folder or .safetensors file with its .json
            except ArtifactError as exc:
                raise ArtifactError(f"--model {label}: {exc}") from None


def _config(args: argparse.Namespace) -> ComposeConfig:
    config = ComposeConfig(
        bias=None if args.no_bias else BiasConfig(pairs=args.bias_pairs),
        probes=None if args.no_probes else ProbeConfig(train=args.probe_train, test=args.probe_test),
        zero_shot=args.zero_shot, zero_shot_per_class=args.zero_shot_per_class, batch_size=args.batch_size)
    config.validate()
    return config


def check_separate(out: str | os.PathLike | None, toy_dir: str | os.PathLike | None) -> None:
    """Refuse ``--out`` equal to, inside or around ``--write-toy-suites``.

    The output claim's input check skips inputs that do not exist yet, and the toy
    suites do not exist before this command writes them, so they are compared here.

    Example:
        >>> check_separate("/tmp/x/bench", "/tmp/x")
        Traceback (most recent call last):
        ...
        clip_adapter.errors.OutputError: --out /tmp/x/bench is inside --write-toy-suites /tmp/x; choose separate folders
    """
    if not out or not toy_dir:
        return
    a, b = Path(out).resolve(), Path(toy_dir).resolve()
    if a == b:
        raise OutputError(f"--out and --write-toy-suites are the same folder ({quoted(out)}); choose separate folders")
    if b in a.parents:
        raise OutputError(f"--out {quoted(out)} is inside --write-toy-suites {quoted(toy_dir)}; choose separate folders")
    if a in b.parents:
        raise OutputError(f"--write-toy-suites {quoted(toy_dir)} is inside --out {quoted(out)}; choose separate folders")


def main(args: argparse.Namespace) -> int:
    if not args.write_toy_suites and not args.out:
        raise ConfigError("nothing to do: give --write-toy-suites DIR, or --suites DIR with --out DIR (or both)")
    if args.out and not (args.suites or args.write_toy_suites):
        raise ConfigError("--out needs suites to score: --suites DIR (or --write-toy-suites DIR)")
    check_separate(args.out, args.write_toy_suites)
    models, config = parse_models(args.model, args.pretrained), _config(args)
    _check_paths(models, args.backbone)
    suite_dirs = find_suites(args.suites) if args.suites else []  # a missing suite is reported before any work
    suites = [read_suite(d) for d in suite_dirs]
    if args.out:
        inputs = [*args.suites, args.write_toy_suites]
        claim_output_dir(args.out, BENCH_KIND, overwrite=args.overwrite, inputs=inputs)
    if args.write_toy_suites:
        written = write_toy_suites(args.write_toy_suites, args.items_per_suite, SUITES, args.overwrite)
        print(f"wrote {len(SUITES)} toy suites ({args.items_per_suite} items each) to {quoted(written)}")
        suites += [read_suite(written / name, decode=False) for name in SUITES]
    if not args.out:
        return 0
    return _bench(args, models, suites, config)


def _bench(args: argparse.Namespace, models: dict[str, str | None], suites: list, config: ComposeConfig) -> int:
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        raise ConfigError(f"two suites are named {next(n for n in names if names.count(n) > 1)!r}; suite names (folder names) must differ")
    cache_dir = cache_dir_from_args(args, [*args.suites]) or default_cache_dir()
    start = time.perf_counter()
    factories = {label: (lambda p=pretrained: create_backbone(args.backbone, p, args.precision, args.device, args.init_seed))
                 for label, pretrained in models.items()}
    result = bench_models(factories, suites, cache_dir, config)
    result["models_pretrained"] = dict(models)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    out = write_bench(Path(args.out), result, figures(result), overwrite=args.overwrite)
    sys.stdout.write(markdown_tables(result))
    print(f"\n{len(models)} model(s), {len(suites)} suite(s) in {result['wall_seconds']:.0f} s; wrote {quoted(out / 'compose.json')}, "
          f"compose.md and {', '.join(sorted(n for n in os.listdir(out) if n.endswith('.png')))}")
    return 0
