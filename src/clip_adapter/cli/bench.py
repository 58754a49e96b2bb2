"""``clip-adapter bench``: datasets × methods × shots × seeds on cached features, with tables and plots.

Re-running skips finished runs; an interrupted grid resumes. Outputs under
--out: runs/<protocol>/<dataset>/<method>/shots<K>_seed<S>.json,
results_<protocol>.csv, summary_<protocol>.csv, table_<protocol>.md and
plots/<protocol>_<dataset>.png (+ _average.png).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..bench import BENCHMARKS, BenchPlan, MethodSpec, plot_summary, resolve_datasets, run_bench, write_reports
from .common import add_backbone_options, add_feature_options, backbone_from_args, features_from_args
from ..outputs import claim_output_dir, mark_output_dir
from .parsing import SEED_MAX, bounded_int_list, name_list


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run the few-shot benchmark grid", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets-root", help="folder holding the benchmark folders in CoOp's layout")
    p.add_argument("--datasets", default="", help=f"comma-separated benchmarks: {', '.join(BENCHMARKS)}")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME=PATH", help="a custom dataset (ImageFolder or split JSON); repeatable")
    p.add_argument("--methods", default="zero-shot,clip-adapter", help="comma-separated methods (default: %(default)s)")
    p.add_argument("--method", action="append", default=[], metavar="LABEL=METHOD:KEY=VALUE:...", help="a method with options under a label; repeatable")
    p.add_argument("--shots", default="1,2,4,8,16", help="comma-separated shot counts (default: %(default)s)")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default: %(default)s)")
    p.add_argument("--protocol", default="val", choices=("val", "none", "oracle"), help="hyper-parameters chosen on val (default), none, or oracle (TEST; labelled)")
    p.add_argument("--template", action="append", default=[], help="prompt template(s); default: each dataset's own")
    p.add_argument("--out", default="bench-results", help="output folder: new, empty, or an earlier bench output to resume (default: %(default)s)")
    add_backbone_options(p)
    add_feature_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    methods = [MethodSpec.parse(m) for m in (name_list(args.methods, "--methods") if args.methods else [])]
    methods += [MethodSpec.parse(m) for m in args.method]
    shots = tuple(bounded_int_list(args.shots, "--shots", 0, 100_000))
    seeds = tuple(bounded_int_list(args.seeds, "--seeds", 0, SEED_MAX))
    datasets = resolve_datasets([d for d in args.datasets.split(",") if d.strip()], args.datasets_root, args.dataset)
    inputs = [args.datasets_root, *(d.root for d in datasets.values())]
    out = claim_output_dir(args.out, "bench", resume=True, inputs=inputs)
    plan = BenchPlan(datasets, methods, shots, seeds, args.protocol, tuple(args.template), features_from_args(args, inputs))
    backbone = backbone_from_args(args)
    mark_output_dir(out, "bench")
    report = run_bench(backbone, plan, out, log=lambda line: print(line, file=sys.stderr))
    files = write_reports(out, args.protocol, report.results)
    plots = plot_summary(files["summary"], args.protocol, out / "plots")
    sys.stdout.write(files["table"].read_text())
    print(f"{report.ran} runs done, {report.skipped} already finished (skipped), in {report.seconds:.1f} s; "
          f"table: {files['table']}, plots: {', '.join(str(p) for p in plots)}", file=sys.stderr)
    return 0
