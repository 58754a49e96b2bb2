"""``clip-adapter bench``: datasets × methods × shots × seeds on cached features, with tables and plots.

Three settings (``--setting``):

* ``few-shot`` (default): the standard grid. Outputs under --out:
  runs/<protocol>/<dataset>/<method>/shots<K>_seed<S>.json, results_<protocol>.csv,
  summary_<protocol>.csv, table_<protocol>.md and plots/<protocol>_<dataset>.png (+ _average.png).
* ``domain-generalization``: train on the one --datasets/--dataset source, test the same classifier
  on every --targets benchmark (imagenetv2, imagenet_sketch, imagenet_a, imagenet_r) and --target
  NAME=PATH (classes matched to the source's by name); table_dg_<protocol>.md.
* ``base-to-new``: CoCoOp's protocol — train on the first half of each dataset's classes, test on
  base and new classes; base, new and harmonic mean in table_b2n_<protocol>.md.

Re-running skips finished runs; an interrupted grid resumes.

With ``--ray`` (few-shot setting) each pending run is a Ray task on a new local instance or the
cluster at ``--address``; a run that fails is retried ``--ray-retries`` times, then listed at the end
(exit status 1) while the rest of the grid finishes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..bench import BENCHMARKS, BenchPlan, MethodSpec, plot_summary, resolve_datasets, run_bench, write_reports
from ..bench.base_to_new import run_base_to_new
from ..bench.datasets import IMAGENET_TARGETS, load_benchmark
from ..bench.protocol_tables import write_transfer_reports
from ..bench.transfer import align_target, run_domain_generalization
from ..core.errors import ConfigError, DataError
from ..core.outputs import claim_output_dir, mark_output_dir
from ..methods.base import PROTOCOLS
from .common import add_backbone_options, add_feature_options, backbone_from_args, features_from_args
from .parsing import SEED_MAX, bounded_int_list, name_list
from .ray_options import add_ray_options, backbone_spec_from_args, ray_options_from_args

SETTINGS = ("few-shot", "domain-generalization", "base-to-new")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="run the few-shot benchmark grid",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--setting", default="few-shot", choices=SETTINGS, help="which protocol (default: %(default)s)")
    p.add_argument("--datasets-root", help="folder holding the benchmark folders in CoOp's layout")
    p.add_argument("--datasets", default="", help=f"comma-separated benchmarks: {', '.join(BENCHMARKS)}")
    p.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a custom dataset (ImageFolder or split JSON); repeatable",
    )
    p.add_argument(
        "--targets",
        default="",
        help=f"domain generalisation: comma-separated targets under --datasets-root ({', '.join(IMAGENET_TARGETS)})",
    )
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="domain generalisation: a custom target dataset; repeatable",
    )
    p.add_argument("--methods", default="zero-shot,clip-adapter", help="comma-separated methods (default: %(default)s)")
    p.add_argument(
        "--method",
        action="append",
        default=[],
        metavar="LABEL=METHOD:KEY=VALUE:...",
        help="a method with options under a label; repeatable",
    )
    p.add_argument("--shots", default="1,2,4,8,16", help="comma-separated shot counts (default: %(default)s)")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default: %(default)s)")
    p.add_argument(
        "--protocol",
        default="val",
        choices=PROTOCOLS,
        help="hyper-parameters chosen on val (few-shot; default), full-val (whole validation split), none, "
        "or oracle (TEST; labelled)",
    )
    p.add_argument("--template", action="append", default=[], help="prompt template(s); default: each dataset's own")
    p.add_argument(
        "--out",
        default="bench-results",
        help="output folder: new, empty, or an earlier bench output to resume (default: %(default)s)",
    )
    add_backbone_options(p)
    add_feature_options(p)
    add_ray_options(p, "each run of the grid as a task")
    p.set_defaults(func=main)


def _targets(args: argparse.Namespace) -> dict:
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    if names and not args.datasets_root:
        raise DataError("--targets needs --datasets-root (the folder holding the benchmark folders)")
    targets = {name: load_benchmark(name, args.datasets_root) for name in names}
    targets.update(resolve_datasets([], None, args.target) if args.target else {})
    if args.setting == "domain-generalization" and not targets:
        raise ConfigError("--setting domain-generalization needs --targets and/or --target NAME=PATH")
    if targets and args.setting != "domain-generalization":
        raise ConfigError("--targets/--target are for --setting domain-generalization")
    return targets


def main(args: argparse.Namespace) -> int:
    ray_options = ray_options_from_args(args)
    if ray_options and args.setting != "few-shot":
        raise ConfigError(f"--ray runs the few-shot grid; --setting {args.setting} runs locally (drop --ray)")
    methods = [MethodSpec.parse(m) for m in (name_list(args.methods, "--methods") if args.methods else [])]
    methods += [MethodSpec.parse(m) for m in args.method]
    shots = tuple(bounded_int_list(args.shots, "--shots", 0, 100_000))
    seeds = tuple(bounded_int_list(args.seeds, "--seeds", 0, SEED_MAX))
    datasets = resolve_datasets([d for d in args.datasets.split(",") if d.strip()], args.datasets_root, args.dataset)
    targets = _targets(args)
    inputs = [args.datasets_root, *(d.root for d in datasets.values()), *(d.root for d in targets.values())]
    out = claim_output_dir(args.out, "bench", resume=True, inputs=inputs)
    plan = BenchPlan(
        datasets, methods, shots, seeds, args.protocol, tuple(args.template), features_from_args(args, inputs)
    )
    backbone = backbone_from_args(args)
    mark_output_dir(out, "bench")
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    if args.setting == "few-shot":
        if ray_options:
            return _few_shot(
                backbone,
                plan,
                out,
                args.protocol,
                log,
                (ray_options, backbone_spec_from_args(args, backbone.precision)),
            )
        return _few_shot(backbone, plan, out, args.protocol, log)
    if args.setting == "domain-generalization":
        ((source_name, source),) = _one_source(datasets)
        aligned = [align_target(source, name, target) for name, target in targets.items()]
        report = run_domain_generalization(backbone, plan, aligned, out, log)
        files = write_transfer_reports(out, args.setting, args.protocol, report.results, source_name)
    else:
        report = run_base_to_new(backbone, plan, out, log)
        files = write_transfer_reports(out, args.setting, args.protocol, report.results)
    sys.stdout.write(files["table"].read_text())
    print(
        f"{report.ran} runs done, {report.skipped} already finished (skipped); table: {files['table']}", file=sys.stderr
    )
    return 0


def _one_source(datasets: dict) -> list:
    if len(datasets) != 1:
        raise ConfigError(
            f"domain generalisation trains on one source dataset; got {len(datasets)} ({', '.join(datasets)})"
        )
    return list(datasets.items())


def _few_shot(backbone, plan: BenchPlan, out: Path, protocol: str, log, ray=None) -> int:
    if ray:
        from ..distributed import ray_session, run_bench_ray

        with ray_session(ray[0]) as session:
            report = run_bench_ray(session, backbone, ray[1], plan, out, ray[0], log)
    else:
        report = run_bench(backbone, plan, out, log=log)
    files = write_reports(out, protocol, report.results)
    plots = plot_summary(files["summary"], protocol, out / "plots")
    sys.stdout.write(files["table"].read_text())
    print(
        f"{report.ran} runs done, {report.skipped} already finished (skipped), in {report.seconds:.1f} s; "
        f"table: {files['table']}, plots: {', '.join(str(p) for p in plots)}",
        file=sys.stderr,
    )
    if report.failed:  # the sweep finished what it could; say what it could not
        print(
            f"{len(report.failed)} run(s) failed after retries (re-run to retry them): " + "; ".join(report.failed),
            file=sys.stderr,
        )
        return 1
    return 0
