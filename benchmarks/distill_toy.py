"""CLIP-KD on the toy world: distil the shipped toy CLIP into a smaller student, then an adapted teacher into an
adapted student.

Usage:
    python benchmarks/distill_toy.py                       # 200 steps x batch 64, seed 0
                                                           # (22 min measured on a loaded 2-core CPU)
    python benchmarks/distill_toy.py --seeds 0,1           # more seeds
    python benchmarks/distill_toy.py --steps 20 --quick    # a smoke run

Prints (A) the student's zero-shot accuracy (toy tasks shape, color, shape-color, size-shape, position;
in-domain = photo, shifted = sketch, night, pixel, negative) trained with the CLIP loss alone, with FD,
ICL, CRD and all three, at the same steps and batches, beside the teacher and the parameter counts;
(B) an adapted teacher (shipped CLIP + CLIP-Adapter, 16 shots) against the best KD student with a
CLIP-Adapter trained on the same 16 shots and one distilled from the adapted teacher: test accuracy and
end-to-end inference images/s. Writes ``distill_toy.json`` and ``distill_toy.png`` to ``--out``.
Every student is saved as a backbone checkpoint and re-loaded through ``create_backbone`` to be scored.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")

import torch  # noqa: E402

import clip_adapter  # noqa: E402
from clip_adapter.backbones import create_backbone  # noqa: E402
from clip_adapter.distill import DistillConfig, Student, Teacher, distill, save_student  # noqa: E402
from clip_adapter.distill.adapted import distill_adapter  # noqa: E402
from clip_adapter.distill.data import toy_batches  # noqa: E402
from clip_adapter.distill.evaluate import EVAL_TASKS, encode, render_eval_images, zero_shot  # noqa: E402
from clip_adapter.toyworld import DOMAINS, task_images, write_task_dataset  # noqa: E402
from clip_adapter.toyworld.model import count_parameters  # noqa: E402

ROWS = [
    ("CLIP loss only", ()),
    ("FD", ("fd",)),
    ("ICL", ("icl",)),
    ("CRD", ("crd",)),
    ("FD+ICL+CRD", ("fd", "icl", "crd")),
]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seeds", default="0")
    p.add_argument("--student", default="toy-small")
    p.add_argument("--per-class", type=int, default=10, help="test images per class per task and domain")
    p.add_argument("--adapted-task", default="color")
    p.add_argument("--adapted-domain", default="night")
    p.add_argument("--out", default="runs/distill-toy")
    p.add_argument("--quick", action="store_true", help="tiny evaluation and adapter epochs (smoke run)")
    return p.parse_args()


def train_students(args, teacher_bb, rendered, rendered_val, out: Path) -> dict:
    """``{label: [result per seed]}``; each result holds the zero-shot table and the student's path."""
    results: dict[str, list] = {label: [] for label, _ in ROWS}
    for seed in [int(s) for s in args.seeds.split(",")]:
        teacher = Teacher(teacher_bb, memo=True)  # one teacher pass per seed, shared by the KD runs
        for label, losses in ROWS:
            cfg = DistillConfig(losses=losses, steps=args.steps, batch_size=args.batch_size, seed=seed)
            run_dir = out / f"seed{seed}" / cfg.label
            run_dir.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            run = distill(
                teacher, Student(args.student, seed=seed), cfg, toy_batches(seed, cfg.steps, cfg.batch_size), run_dir
            )
            name, pretrained = save_student(
                run_dir.resolve(), run, cfg, teacher_bb, {"command": "benchmarks/distill_toy.py"}
            )
            student_bb = create_backbone(name, pretrained, precision="fp32")  # as every other command loads it
            scores = zero_shot(student_bb, rendered)
            results[label].append(
                {
                    "seed": seed,
                    "zero_shot": scores,
                    "val_zero_shot": zero_shot(student_bb, rendered_val),
                    "pretrained": pretrained,
                    "seconds": time.perf_counter() - start,
                    "final_clip_loss": run.log[-1]["clip"],
                }
            )
            print(
                f"seed {seed} {label:<15} in-domain {scores['summary']['in_domain']:6.2f}"
                f"  shifted {scores['summary']['shifted']:6.2f}"
                f"  ({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    return results


def mean_of(runs: list, *keys: str, source: str = "zero_shot") -> float:
    values = []
    for run in runs:
        value = run[source]
        for key in keys:
            value = value[key]
        values.append(value)
    return statistics.mean(values)


def table_a(results: dict, teacher_scores: dict, counts: dict) -> str:
    head = (
        "| model | params | in-domain (photo) | "
        + " | ".join(d for d in DOMAINS if d != "photo")
        + " | shifted mean | Δ vs CLIP only (in / shifted) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    shifted = [d for d in DOMAINS if d != "photo"]

    def domain_mean(getter, domain):
        return statistics.mean(getter(task, domain) for task in EVAL_TASKS)

    t = [domain_mean(lambda k, d: teacher_scores[k][d], d) for d in shifted]
    lines.append(
        f"| teacher (shipped toy CLIP) | {counts['teacher'] / 1e6:.2f} M | "
        f"{teacher_scores['summary']['in_domain']:.2f} | "
        + " | ".join(f"{v:.2f}" for v in t)
        + f" | {teacher_scores['summary']['shifted']:.2f} | |"
    )
    base = results["CLIP loss only"]
    for label, _ in ROWS:
        runs = results[label]
        per = [statistics.mean(mean_of(runs, k, d) for k in EVAL_TASKS) for d in shifted]
        ind, sh = mean_of(runs, "summary", "in_domain"), mean_of(runs, "summary", "shifted")
        delta = (
            ""
            if label == "CLIP loss only"
            else f"{ind - mean_of(base, 'summary', 'in_domain'):+.2f} / {sh - mean_of(base, 'summary', 'shifted'):+.2f}"
        )
        lines.append(
            f"| student: {label} | {counts['student'] / 1e6:.2f} M | {ind:.2f} | "
            + " | ".join(f"{v:.2f}" for v in per)
            + f" | {sh:.2f} | {delta} |"
        )
    return "\n".join(lines)


def table_tasks(results: dict, teacher_scores: dict) -> str:
    head = "| model | " + " | ".join(f"{t} in / shifted" for t in EVAL_TASKS) + " |"
    lines = [head, "|" + "---|" * (len(EVAL_TASKS) + 1)]

    def cell(get):
        return f"{get('photo'):.1f} / {statistics.mean(get(d) for d in DOMAINS if d != 'photo'):.1f}"

    lines.append("| teacher | " + " | ".join(cell(lambda d, t=t: teacher_scores[t][d]) for t in EVAL_TASKS) + " |")
    for label, _ in ROWS:
        lines.append(
            f"| {label} | " + " | ".join(cell(lambda d, t=t: mean_of(results[label], t, d)) for t in EVAL_TASKS) + " |"
        )
    return "\n".join(lines)


def adapted_part(args, teacher_bb, student_pretrained: str, out: Path) -> tuple[str, dict]:
    """Adapted teacher vs the student with an adapter from 16 shots and one distilled from the teacher."""
    data = out / "data" / f"{args.adapted_task}-{args.adapted_domain}"
    if not (data / "split.json").is_file():
        write_task_dataset(args.adapted_task, args.adapted_domain, data, 32, 8, 50, seed=0)
    cache, opts = out / "cache", ({"epochs": 5} if args.quick else {})
    student_bb = create_backbone("toy", student_pretrained, precision="fp32")
    teacher_clf = clip_adapter.fit(data, backbone=teacher_bb, shots=16, cache_dir=cache, **opts)
    student_fs = clip_adapter.fit(data, backbone=student_bb, shots=16, cache_dir=cache, **opts)
    clf, info = distill_adapter(teacher_clf.classifier, teacher_bb, student_bb, data, cache_dir=cache)
    saved = clf.save_pretrained(out / "adapted-student", overwrite=True)
    student_kd = clip_adapter.load(saved, cache_dir=cache)  # the artifact as `clip-adapter eval` reads it
    images, _ = task_images(args.adapted_task, args.adapted_domain, 64, seed=1)
    rows = [
        ("teacher + CLIP-Adapter (16 shots)", teacher_clf, teacher_bb),
        ("student + CLIP-Adapter (16 shots)", student_fs, student_bb),
        ("student + CLIP-Adapter distilled from the adapted teacher", student_kd, student_bb),
    ]
    lines = [
        "| classifier | params (encoders) | test accuracy | zero-shot of its backbone | "
        "images/s (encode + head, batch 256, 1 thread) |",
        "|---|---|---|---|---|",
    ]
    record = {"kd_info": info}
    zs = {
        bb.id: zero_shot(
            bb,
            {(args.adapted_task, args.adapted_domain): task_images(args.adapted_task, args.adapted_domain, 50, seed=0)},
        )
        for bb in (teacher_bb, student_bb)
    }
    for label, clf_, bb in rows:
        acc = 100 * clf_.evaluate(data, split="test")["accuracy"]
        speed = throughput(clf_, bb, images)
        z = zs[bb.id][args.adapted_task][args.adapted_domain]
        lines.append(f"| {label} | {count_parameters(bb.model) / 1e6:.2f} M | {acc:.2f} | {z:.2f} | {speed:.0f} |")
        record[label] = {"accuracy": acc, "images_per_s": speed, "zero_shot": z}
    return "\n".join(lines), record


def throughput(clf, backbone, images, repeats: int = 3) -> float:
    with clip_adapter.core.threads.torch_threads(1):
        clf.classifier.logits(encode(backbone, images[:64]))  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            clf.classifier.logits(encode(backbone, images))
            best = min(best, time.perf_counter() - start)
    return len(images) / best


def plot(results: dict, teacher_scores: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label, _ in ROWS]
    ind = [mean_of(results[k], "summary", "in_domain") for k in labels]
    sh = [mean_of(results[k], "summary", "shifted") for k in labels]
    x = range(len(labels))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar([i - 0.2 for i in x], ind, 0.4, label="in-domain (photo)")
    ax.bar([i + 0.2 for i in x], sh, 0.4, label="shifted domains")
    ax.axhline(teacher_scores["summary"]["in_domain"], ls="--", c="C0", lw=1, label="teacher in-domain")
    ax.axhline(teacher_scores["summary"]["shifted"], ls="--", c="C1", lw=1, label="teacher shifted")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("zero-shot accuracy (%)")
    ax.set_title("toy-small student (4.7x fewer parameters), same steps")
    ax.set_ylim(0, 125)  # room above the teacher line for the legend
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    args = parse()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher_bb = create_backbone("toy", precision="fp32")
    per_class = 2 if args.quick else args.per_class
    rendered = render_eval_images(EVAL_TASKS, DOMAINS, per_class)  # reported
    rendered_val = render_eval_images(EVAL_TASKS, DOMAINS, per_class, split="val")  # (B)'s student is chosen on these
    teacher_scores = zero_shot(teacher_bb, rendered)
    counts = {"teacher": count_parameters(teacher_bb.model), "student": Student(args.student).parameter_count()}
    results = train_students(args, teacher_bb, rendered, rendered_val, out)
    text_a, text_t = table_a(results, teacher_scores, counts), table_tasks(results, teacher_scores)
    print(
        f"\n(A) zero-shot accuracy %, {args.steps} steps x batch {args.batch_size}, seeds {args.seeds}, "
        f"{args.per_class} test images per class per task/domain; teacher {counts['teacher']:,} parameters, "
        f"student {counts['student']:,} ({counts['teacher'] / counts['student']:.1f}x fewer)\n"
        f"{text_a}\n\nper task:\n{text_t}"
    )
    kd_labels = [label for label, losses in ROWS if losses]
    best = max(
        kd_labels,
        key=lambda k: (
            mean_of(results[k], "summary", "in_domain", source="val_zero_shot")
            + mean_of(results[k], "summary", "shifted", source="val_zero_shot")
        ),
    )
    text_b, record_b = adapted_part(args, teacher_bb, results[best][0]["pretrained"], out)
    print(
        f"\n(B) {args.adapted_task} / {args.adapted_domain}, "
        f"student = the {best} student of seed {results[best][0]['seed']}\n{text_b}"
    )
    plot(results, teacher_scores, out / "distill_toy.png")
    (out / "distill_toy.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "teacher": teacher_scores,
                "students": results,
                "counts": counts,
                "adapted": record_b,
                "best_kd": best,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out / 'distill_toy.json'} and {out / 'distill_toy.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
