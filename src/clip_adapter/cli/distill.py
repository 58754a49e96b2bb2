"""``clip-adapter distill``: CLIP-KD — distil a teacher CLIP into a smaller student, or an adapted teacher into an
adapted student.

Backbone distillation (``--teacher``, ``--student``, ``--out``): the student (a toy preset ``toy-small``,
``toy-tiny``, ``toy``, or any open_clip architecture, random init unless ``--student-pretrained``) trains
on image–caption batches (the toy scene stream, or ``--captions FILE``: a JSON list of
``{"image", "caption"}`` relative to the file) with the CLIP loss plus ``--loss`` (any of fd, icl, crd;
``none`` for the CLIP loss alone). ``--out`` receives the student as a backbone checkpoint (toy:
``toy_clip.safetensors`` + ``.json``, load with ``--backbone toy --pretrained OUT``; open_clip:
``student.safetensors``, load with ``--backbone ARCH --pretrained OUT/student.safetensors``), the
per-step ``distill_log.csv`` and ``distill.json``. ``--eval`` adds the zero-shot accuracy of teacher and
student on the toy tasks, in-domain and on the shifted renderings.

Adapter distillation (``--teacher-artifact``, ``--data``, ``--student`` + ``--student-pretrained``,
``--out``): a CLIP-Adapter on the student backbone learns the teacher artifact's adapted predictions on
the dataset's training images; ``--out`` is an ordinary artifact (``eval``, ``predict``, ``serve``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..backbones import create_backbone
from ..core.errors import ConfigError
from ..core.files import atomic_dir, quoted
from ..core.outputs import claim_output_dir, is_own_output, mark_output_dir
from .common import add_config_options, config_from_args
from .parsing import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..distill import DistillConfig

    p = sub.add_parser(
        "distill", help="CLIP-KD: distil a teacher CLIP (or an adapted one) into a smaller student", description=__doc__
    )
    p.add_argument(
        "--teacher", default="toy", help="teacher backbone: toy or an open_clip architecture (default: %(default)s)"
    )
    p.add_argument(
        "--teacher-pretrained",
        default=None,
        help="teacher weights (as --pretrained elsewhere; toy default: the shipped checkpoint)",
    )
    p.add_argument(
        "--teacher-artifact",
        default=None,
        help="a CLIP-Adapter artifact: distil it (with its backbone) into an adapter on the student",
    )
    p.add_argument(
        "--student",
        required=True,
        help="toy-small, toy-tiny, toy (the shipped architecture) or an open_clip architecture",
    )
    p.add_argument(
        "--student-pretrained",
        default="none",
        help="student start weights: none (seeded random) or a checkpoint (default: %(default)s)",
    )
    p.add_argument(
        "--captions", default=None, help="image-caption JSON list to train on (default: the toy scene stream)"
    )
    p.add_argument(
        "--data",
        default=None,
        help="with --teacher-artifact: the dataset whose training images the adapter learns from",
    )
    p.add_argument("--out", required=True, help="output folder (new or empty; --overwrite replaces our own)")
    p.add_argument("--overwrite", action="store_true", help="replace an output this tool wrote earlier at --out")
    p.add_argument(
        "--eval", action="store_true", help="zero-shot accuracy of teacher and student on the toy tasks afterwards"
    )
    p.add_argument(
        "--eval-per-class",
        type=positive_int,
        default=10,
        help="test images per class per toy task and rendering (default: %(default)s)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "bf16", "fp32"),
        help="teacher precision (the student trains in fp32)",
    )
    p.add_argument("--device", default="auto", help="teacher device (the student trains on the CPU)")
    add_config_options(p, DistillConfig, exclude=("losses",))
    p.add_argument(
        "--loss",
        dest="losses",
        default=None,
        help="KD losses added to the CLIP loss, comma-separated: fd, icl, crd, or none (default: none)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.teacher_artifact:
        return adapter_main(args)
    if args.data:
        raise ConfigError(
            "--data is for --teacher-artifact; to train a backbone on your own pairs pass --captions FILE"
        )
    return backbone_main(args)


def _config(args: argparse.Namespace):
    from ..distill import DistillConfig

    if args.losses is not None and args.losses.strip().lower() in ("none", "clip", ""):
        args.losses = ""
    return config_from_args(DistillConfig, args)


def backbone_main(args: argparse.Namespace) -> int:
    from ..distill import KIND, Student, Teacher, distill, save_student
    from ..distill.data import CaptionFile, toy_batches

    cfg = _config(args)  # option errors before any work
    inputs = [args.captions, args.teacher_pretrained, args.student_pretrained]
    out = claim_output_dir(args.out, KIND, overwrite=args.overwrite, inputs=inputs)
    teacher_bb = create_backbone(args.teacher, args.teacher_pretrained, args.precision, args.device)
    student = Student(args.student, args.student_pretrained, seed=cfg.seed)
    if args.captions:
        side = max(teacher_bb.preprocess.image_size, student.preprocess.image_size)
        batches = CaptionFile(args.captions, side).batches(cfg.seed, cfg.steps, cfg.batch_size)
    else:
        batches = toy_batches(cfg.seed, cfg.steps, cfg.batch_size, cfg.workers)
    command = "clip-adapter " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["distill"] else "clip-adapter distill"
    with atomic_dir(out, may_replace=lambda p: args.overwrite and is_own_output(p, KIND)) as tmp:
        mark_output_dir(tmp, KIND)
        run = distill(Teacher(teacher_bb), student, cfg, batches, tmp)
        name, pretrained = save_student(
            tmp, run, cfg, teacher_bb, {"command": command, "data": args.captions or "toy scene stream"}
        )
    pretrained = str(out.resolve() / Path(pretrained).name) if not student.is_toy else str(out.resolve())
    print(
        f"student ({student.parameter_count():,} parameters, "
        f"teacher {sum(p.numel() for p in teacher_bb.model.parameters()):,}) "
        f"written to {quoted(out)}: use --backbone {name} --pretrained {pretrained}",
        file=sys.stderr,
    )
    if args.eval:
        _print_eval(teacher_bb, create_backbone(name, pretrained, "fp32"), args.eval_per_class)
    return 0


def _print_eval(teacher_bb, student_bb, per_class: int) -> None:
    from ..distill.evaluate import EVAL_TASKS, render_eval_images, zero_shot
    from ..toyworld import DOMAINS

    rendered = render_eval_images(EVAL_TASKS, DOMAINS, per_class)
    print(f"{'zero-shot %':<12} {'in-domain':>10} {'shifted':>8}   " + "  ".join(f"{t}" for t in EVAL_TASKS))
    for label, bb in (("teacher", teacher_bb), ("student", student_bb)):
        scores = zero_shot(bb, rendered)
        per_task = "  ".join(f"{scores[t]['photo']:.1f}" for t in EVAL_TASKS)
        print(f"{label:<12} {scores['summary']['in_domain']:>10.2f} {scores['summary']['shifted']:>8.2f}   {per_task}")


def adapter_main(args: argparse.Namespace) -> int:
    from .. import api
    from ..artifacts import load_with_backbone
    from ..data import load_dataset
    from ..distill.adapted import distill_adapter

    if not args.data:
        raise ConfigError(
            "--teacher-artifact needs --data: the dataset whose training images the student adapter learns from"
        )
    if args.student_pretrained.lower() == "none":
        raise ConfigError(
            "--teacher-artifact needs a trained student backbone: "
            "pass --student-pretrained (e.g. a `clip-adapter distill` output)"
        )
    claim_output_dir(
        args.out,
        "artifact",
        overwrite=args.overwrite,
        inputs=[args.data, args.teacher_artifact, args.student_pretrained],
    )
    precision = None if args.precision == "auto" else args.precision
    teacher, teacher_bb = load_with_backbone(args.teacher_artifact, None, None, precision, args.device)
    student_name = "toy" if args.student.startswith("toy") else args.student
    student_bb = create_backbone(student_name, args.student_pretrained, "fp32")
    clf, info = distill_adapter(teacher, teacher_bb, student_bb, args.data)
    out = clf.save_pretrained(args.out, {"result.json": {"distill": info}}, overwrite=args.overwrite)
    print(
        f"student adapter written to {quoted(out)} (learned from {info['train_images']} training images)",
        file=sys.stderr,
    )
    if load_dataset(args.data).split("test"):
        accuracy = api.load(out).evaluate(args.data, split="test")["accuracy"]
        teacher_acc = api.AdaptedCLIP(teacher, teacher_bb, api.FeatureConfig()).evaluate(args.data, split="test")[
            "accuracy"
        ]
        print(f"test accuracy: student {100 * accuracy:.2f} %, teacher {100 * teacher_acc:.2f} %")
    return 0
