"""The built-in demo: a shifted-domain toy task, zero-shot vs CLIP-Adapter, a table and a plot.

Everything is generated and offline: the task's images are written as real
files, the backbone is the shipped toy CLIP, and the runs go through the same
benchmark code as ``clip-adapter bench`` (so a second run reuses the features
and the finished results).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..backbones import Backbone, create_backbone
from ..bench import BenchPlan, MethodSpec, plot_summary, run_bench, write_reports
from ..core.config import Config, option
from ..core.outputs import claim_output_dir, mark_output_dir, register_kind
from ..data import load_dataset
from ..pipeline import FeatureConfig, RunConfig, run_few_shot

VARIANTS = ("visual", "text", "both")

KIND = register_kind(
    "demo", r"^(runs|splits|plots|artifact|cache|data-[\w-]+|(results|summary)_\w+\.csv|table_\w+\.md)$"
)


@dataclass
class DemoConfig(Config):
    """What the demo runs (defaults: the issue's 1/4/16 shots over 3 seeds)."""

    task: str = option("color", "toy task (see `clip-adapter toy dataset --help`)")
    domain: str = option("night", "held-out rendering style the task is drawn in (dark, colour cast, noise)")
    shots: tuple[int, ...] = option((1, 4, 16), "shot counts")
    seeds: tuple[int, ...] = option((1, 2, 3), "few-shot seeds")
    train_per_class: int = option(24, "training-pool images per class written to disk")
    test_per_class: int = option(40, "test images per class")
    out: str = option("clip-adapter-demo", "output folder")


def run_demo(
    config: DemoConfig, backbone: Backbone | None = None, log: Callable[[str], None] = print
) -> dict[str, Path]:
    """Write the task, run zero-shot and CLIP-Adapter (visual, text, both), write table, plot, artifact.

    Example:
        >>> # run_demo(DemoConfig(out="demo-out"))
    """
    from ..toyworld import write_task_dataset

    out = claim_output_dir(config.out, KIND, resume=True)
    mark_output_dir(out, KIND)
    data_dir = out / f"data-{config.task}-{config.domain}"
    if not (data_dir / "split.json").is_file():
        log(f"writing the {config.task} task in the {config.domain} domain to {data_dir}")
        write_task_dataset(
            config.task, config.domain, data_dir, config.train_per_class, 8, config.test_per_class, seed=0
        )
    dataset = load_dataset(data_dir, name=f"toy-{config.task}-{config.domain}")
    backbone = backbone or create_backbone("toy")
    features = FeatureConfig(cache_dir=str(out / "cache"), flip=True)
    methods = [MethodSpec(f"clip-adapter ({v})", "clip-adapter", (("variant", v),)) for v in VARIANTS]
    plan = BenchPlan({dataset.name: dataset}, methods, tuple(config.shots), tuple(config.seeds), "val", (), features)
    report = run_bench(backbone, plan, out, log=log)
    files = write_reports(out, "val", report.results)
    plots = plot_summary(files["summary"], "val", out / "plots")
    artifact = out / "artifact"
    run = RunConfig(method="clip-adapter", shots=max(config.shots), seed=config.seeds[0])
    clf, result, split = run_few_shot(backbone, dataset, run, None, features)
    clf.save_pretrained(artifact, {"result.json": result, "split.json": split.to_json()}, overwrite=True)
    return {
        "table": files["table"],
        "plot": plots[0],
        "artifact": artifact,
        "data": data_dir,
        "seconds": report.seconds,
    }  # type: ignore[dict-item]
