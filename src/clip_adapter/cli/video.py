"""``clip-adapter video``: zero-shot action recognition on real video files, and the toy world in motion.

Data: a folder per class (``--data videos/``: ``videos/<class>/<file>.mp4``) or
PySlowFast/Open-VCLIP split CSVs (``--split-dir DIR``: ``train.csv``/``val.csv``/
``test.csv`` with ``relative/path,label`` rows, ``classmap.json`` = ``{"0": "name", …}``).
Videos are decoded with PyAV, ``--frames`` frames sampled TSN-style per
``--views`` temporal view, each frame encoded by the frozen image encoder
(cached), and the clip scored against the class prompts: ``frame-mean`` (frame
averaging), ``embed-mean`` (mean frame embedding) or ``prompt-match`` (STDD's
prompt-level matching over the ``--descriptions`` clauses). ``video train``
fine-tunes the image encoder of a ViT CLIP on the seen actions with STDD's
space-time cross attention and FROSTER's residual distillation; its output
folder is a checkpoint every video command takes (``--pretrained OUT``, or
``OUT/finetuned.safetensors`` for open_clip), and ``--stdd auto`` (the default)
turns the space-time attention on when the checkpoint's ``stdd.json`` says so.

Examples::

    clip-adapter video toy-dataset --out toy-videos
    clip-adapter video zero-shot --split-dir toy-videos --out zs-toy
    clip-adapter video zero-shot --split-dir toy-videos --descriptions toy-videos/descriptions.json --scorer prompt-match --out zs-pm
    clip-adapter video predict --classmap toy-videos/classmap.json --video a.mp4 b.mp4
    clip-adapter video train --split-dir toy-videos --backbone toy --pretrained runs/toy-video-clip --out stdd-toy
    clip-adapter video zero-shot --split-dir toy-videos --backbone toy --pretrained stdd-toy --out zs-stdd
    clip-adapter video toy-dataset --actions base --out src && clip-adapter video toy-dataset --actions novel --seed 1 --out tgt1
    clip-adapter video cross-dataset --train-split-dir src --eval-split-dir tgt1 tgt2 tgt3 --backbone toy --pretrained stdd-toy --out cross
    clip-adapter video base-to-novel --split-dir toy-videos --backbone toy --pretrained runs/toy-video-clip --seeds 1 2 3 --out b2n
"""

from __future__ import annotations

import argparse
import csv
import io
import sys

from .common import add_backbone_options, add_overwrite_option, backbone_from_args, cache_dir_from_args, print_json
from .parsing import count_int, positive_int, seed_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("video", help="zero-shot action recognition on video files; the toy world in motion",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    video_sub = p.add_subparsers(dest="video_command", metavar="VIDEO_COMMAND")
    _add_toy_dataset(video_sub)
    _add_zero_shot(video_sub)
    _add_predict(video_sub)
    _add_train(video_sub)
    _add_cross_dataset(video_sub)
    _add_toy_pretrain(video_sub)
    _add_base_to_novel(video_sub)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def _add_training_options(parser: argparse.ArgumentParser, per: str, steps: int) -> None:
    """The options `video train` and `video base-to-novel` train with (one run per seed in the latter)."""
    parser.add_argument("--shots", type=count_int, default=16, help=f"training clips per {per}, 0 = all (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=steps, help="optimisation steps per run (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--batch-clips", type=positive_int, default=8, help="clips per step (default: %(default)s)")
    parser.add_argument("--val-every", type=positive_int, default=25, help="steps between validations (default: %(default)s)")


def _add_toy_dataset(sub: argparse._SubParsersAction) -> None:
    from ..video.toyclips import CLASS_SETS

    ds = sub.add_parser("toy-dataset", help="write the toy action clips: mp4 class folders, split CSVs, class map, descriptions")
    ds.add_argument("--out", required=True, help="output folder: new, empty, or a toy video dataset with --overwrite")
    add_overwrite_option(ds, "a toy video dataset")
    ds.add_argument("--train", type=count_int, default=16, help="training clips per class (default: %(default)s)")
    ds.add_argument("--val", type=count_int, default=4, help="validation clips per class (default: %(default)s)")
    ds.add_argument("--test", type=count_int, default=8, help="test clips per class (default: %(default)s)")
    ds.add_argument("--frames", type=positive_int, default=16, help="frames per clip (default: %(default)s)")
    ds.add_argument("--size", type=positive_int, default=64, help="frame side in pixels, even (default: %(default)s)")
    ds.add_argument("--seed", type=seed_int, default=0, help="rendering seed (default: %(default)s)")
    ds.add_argument("--actions", default=None,
                    help="comma-separated actions to write, or base / novel (default: all 11): a source set and a "
                         "disjoint target set for `video cross-dataset`")
    ds.add_argument("--classes", default="actions", choices=CLASS_SETS,
                    help="actions: the 11 actions, novel = unseen actions; shape-actions: 44 shape-action classes, "
                         "novel = unseen combinations of trained shapes and actions (default: %(default)s)")
    ds.set_defaults(func=toy_dataset_main)


def _add_evaluation_options(parser: argparse.ArgumentParser, what: str) -> None:
    """What every scoring command takes: its output folder, --skip-bad, sampling and backbone options."""
    parser.add_argument("--out", required=True, help="output folder for metrics.json and predictions.csv")
    add_overwrite_option(parser, what)
    parser.add_argument("--skip-bad", action="store_true", help="leave unreadable videos out and list them, instead of stopping")
    _add_sampling_options(parser)
    add_backbone_options(parser)


def _add_sampling_options(parser: argparse.ArgumentParser, for_training: bool = False) -> None:
    from ..video.scoring import SCORERS

    when = " when validating" if for_training else ""
    group = parser.add_argument_group("clips and scoring")
    group.add_argument("--frames", type=positive_int, default=8, help="frames per clip, one per TSN segment (default: %(default)s)")
    group.add_argument("--views", type=positive_int, default=1, help=f"temporal views per clip{when}, scores averaged (default: %(default)s)")
    group.add_argument("--scorer", default=None, choices=SCORERS,
                       help="the score trained and validated: frame-mean, embed-mean, or prompt-match (default: as the official "
                       "STDD training, prompt-match with --descriptions, else frame-mean)" if for_training else
                       "frame-mean, embed-mean, or prompt-match (STDD) (default: the scorer a `video train` checkpoint was "
                       "validated with, from its stdd.json, else frame-mean)")
    group.add_argument("--descriptions", default=None, metavar="FILE",
                       help="class → list of clauses (JSON, or YAML with PyYAML); without it, plain templates")
    group.add_argument("--template", action="append", default=None, help='prompt template with {} (repeatable; default: the dataset\'s, else "a video of a person {}.")')
    group.add_argument("--batch-size", type=positive_int, default=64,
                       help=f"frames per encoder batch{when} (whole clips; a training step holds --batch-clips clips) (default: %(default)s)"
                       if for_training else "frames per encoder batch; with space-time attention, whole clips of "
                       "--views x --frames frames, at least one clip (default: %(default)s)")
    group.add_argument("--cache-dir", default="", help="feature cache (default: $CLIP_ADAPTER_CACHE or ~/.cache/clip-adapter)")
    group.add_argument("--stdd", default="auto", choices=("auto", "on", "off"),
                       help="space-time attention in the ViT blocks: auto = as the checkpoint's stdd.json says (default: %(default)s)")


def _add_zero_shot(sub: argparse._SubParsersAction) -> None:
    zs = sub.add_parser("zero-shot", help="evaluate a frozen CLIP zero-shot on a video dataset; writes metrics.json")
    _add_data_options(zs)
    data = [g for g in zs._action_groups if g.title == "data"][0]
    data.add_argument("--split", default=None, choices=("train", "val", "test", "all"), help="split to evaluate (default: test, else all)")
    _add_evaluation_options(zs, "an evaluation")
    zs.set_defaults(func=zero_shot_main)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--data", default=None, help="folder per class: DIR/<class>/<video>")
    data.add_argument("--split-dir", default=None, help="folder of train.csv/val.csv/test.csv (relative/path,label rows)")
    data.add_argument("--classmap", default=None, metavar="FILE", help='class map JSON {"0": "name", …} (default: SPLIT_DIR/classmap.json)')
    data.add_argument("--video-root", default=None, metavar="DIR", help="what CSV paths are relative to (default: the split folder)")


def _add_base_to_novel(sub: argparse._SubParsersAction) -> None:
    from ..video.bench import VARIANTS

    bn = sub.add_parser("base-to-novel", help="the base-to-novel protocol: train on base actions per seed, test base and novel "
                        "actions each among themselves; base, novel, HM, reversed pairs; results.json, table.md, a plot",
                        description="Open-VCLIP/FROSTER/STDD base-to-novel: frozen rows (no training) and STDD-style trained "
                        "rows with ablations (`video train` per seed), mean ± population std over the seeds.")
    _add_data_options(bn)
    data = [g for g in bn._action_groups if g.title == "data"][0]
    data.add_argument("--base", default=None, help="comma-separated base (training) classes (default: meta.json's 'base')")
    data.add_argument("--novel", default=None, help="comma-separated novel classes (default: meta.json's 'novel', else the rest)")
    bn.add_argument("--out", required=True, help="output folder: results.json, table.md, base_to_novel.png, runs/")
    add_overwrite_option(bn, "a base-to-novel output")
    bn.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT",
                    help=f"rows, of: {', '.join(VARIANTS)} (default: all; the frozen rows need no training)")
    bn.add_argument("--seeds", type=seed_int, nargs="+", default=[1, 2, 3], help="seeds of the trained rows (default: 1 2 3)")
    _add_training_options(bn, "base class", steps=150)
    bn.add_argument("--frames", type=positive_int, default=8, help="frames per clip (default: %(default)s)")
    bn.add_argument("--unfreeze", default="image", help="what trains: image or image-last-N (default: %(default)s)")
    bn.add_argument("--descriptions", default=None, metavar="FILE",
                    help="class → clauses (default: the dataset's descriptions.json); the description rows need it")
    bn.add_argument("--cache-dir", default="", help="feature cache (default: $CLIP_ADAPTER_CACHE or ~/.cache/clip-adapter)")
    add_backbone_options(bn)
    bn.set_defaults(func=base_to_novel_main)


def _names(text: str | None) -> list[str]:
    """Comma-separated class names, blanks dropped."""
    return [n.strip() for n in text.split(",") if n.strip()] if text else []


def base_to_novel_main(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..outputs import claim_output_dir
    from ..video.bench import BaseToNovelConfig, base_novel_split, run_base_to_novel, trained_loader
    from ..video.dataset import load_video_dataset
    from ..video.kinds import VIDEO_BASE_TO_NOVEL

    if args.pretrained and _stdd_meta(args):  # a trained checkpoint as the "frozen" CLIP would make every row a lie
        raise ConfigError(f"--pretrained {args.pretrained} is a `video train` output; base-to-novel starts from a frozen CLIP")
    inputs = [args.data, args.split_dir, args.video_root, args.descriptions]
    claim_output_dir(args.out, VIDEO_BASE_TO_NOVEL, overwrite=args.overwrite, inputs=inputs)  # before any work
    cfg = BaseToNovelConfig.from_dict({"variants": tuple(dict.fromkeys(args.variants)), "seeds": tuple(args.seeds),
                                       "shots": args.shots, "steps": args.steps, "lr": args.lr, "frames": args.frames,
                                       "batch_clips": args.batch_clips, "val_every": args.val_every,
                                       "unfreeze": args.unfreeze}, where="options")  # options before the data
    cache_dir = cache_dir_from_args(args, inputs)
    dataset = load_video_dataset(args.data, args.split_dir, args.video_root, args.classmap)
    base, novel = base_novel_split(dataset, _names(args.base), _names(args.novel))  # before the backbone loads
    make = lambda: backbone_from_args(args)  # noqa: E731
    load = trained_loader(args.backbone, "fp32" if args.precision == "auto" else args.precision, args.device)
    info = {"backbone": args.backbone, "pretrained": args.pretrained, "data": args.data, "split_dir": args.split_dir}
    results = run_base_to_novel(dataset, cfg, args.out, make, load, base, novel, args.descriptions, cache_dir,
                                args.overwrite, inputs, log=lambda m: print(m, file=sys.stderr), info=info)
    print(results["markdown"])
    return 0


def _add_toy_pretrain(sub: argparse._SubParsersAction) -> None:
    pt = sub.add_parser("toy-pretrain", help="pretrain the toy video CLIP (ViT tower, motion words) in minutes; --quick: "
                        "a CNN one in about two minutes")
    pt.add_argument("--out", required=True, help="output folder for toy_clip.safetensors/.json (--pretrained OUT)")
    add_overwrite_option(pt, "a toy video CLIP")
    pt.add_argument("--quick", action="store_true",
                    help="the quick recipe, for trying the video commands: the shipped CLIP's CNN image tower taught the "
                         "motion words in 200 steps of 64 pairs on one thread (about 2 min on two shared cores); "
                         "`video train` then needs --stdd off. The README's video tables use the default recipe (a new ViT)")
    pt.add_argument("--steps", type=positive_int, default=None, help="optimisation steps (default: 1500; --quick: 200)")
    pt.add_argument("--batch-size", type=positive_int, default=None, help="image-caption pairs per step (default: 128; --quick: 64)")
    pt.add_argument("--threads", type=count_int, default=None, help="torch CPU threads, 0: torch's default (default: 2; --quick: 1)")
    pt.add_argument("--seed", type=seed_int, default=0, help="seed (default: %(default)s)")
    pt.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"), help="autocast (default: %(default)s)")
    pt.set_defaults(func=toy_pretrain_main)


def toy_pretrain_main(args: argparse.Namespace) -> int:
    from ..video.pretrain import QUICK, VideoPretrainConfig, pretrain_video_clip, warmup_for

    settings = dict(QUICK) if args.quick else {}
    given = {"steps": args.steps, "batch_size": args.batch_size, "threads": args.threads}
    settings.update({k: v for k, v in given.items() if v is not None})
    steps = settings.get("steps", VideoPretrainConfig.steps)
    settings.update({"warmup_steps": warmup_for(steps), "seed": args.seed, "precision": args.precision})
    cfg = VideoPretrainConfig.from_dict(settings, where="options")
    weights = pretrain_video_clip(cfg, args.out, log=lambda m: print(m, file=sys.stderr), overwrite=args.overwrite)
    note = " (CNN image tower: `video train` needs --stdd off)" if cfg.image_from.lower() != "none" else ""
    print(f"wrote the toy video CLIP to {weights.parent}: use --backbone toy --pretrained {weights.parent}{note}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("train", help="fine-tune a ViT CLIP's image encoder on seen actions (STDD space-time attention + FROSTER distillation)")
    _add_data_options(tr)
    tr.add_argument("--out", required=True, help="output folder: the checkpoint, stdd.json, log and result.json")
    add_overwrite_option(tr, "a video training output")
    tr.add_argument("--classes", default=None, help="comma-separated seen classes (default: meta.json's base, else all)")
    _add_training_options(tr, "seen class", steps=200)
    tr.add_argument("--distill-weight", type=float, default=2.0, help="FROSTER distillation weight, 0 = off (default: %(default)s)")
    tr.add_argument("--seed", type=seed_int, default=1, help="seed of the shots, batches and masks (default: %(default)s)")
    tr.add_argument("--train-precision", default="auto", choices=("auto", "bf16", "fp32"), help="autocast while training (default: %(default)s)")
    # Training and validation use --scorer (default: the official STDD score, prompt-match with --descriptions, else frame-mean).
    _add_sampling_options(tr, for_training=True)
    add_backbone_options(tr)
    tr.set_defaults(func=train_main)


def _add_cross_dataset(sub: argparse._SubParsersAction) -> None:
    cd = sub.add_parser("cross-dataset", help="zero-shot cross-dataset: test a (trained) CLIP on splits of unseen actions; "
                        "per-split top-1/top-5 and each dataset's mean ± std",
                        description="Score every evaluation split over its own classes (as `video zero-shot`), then report each "
                        "dataset's mean ± std over its splits; std is the population std (ddof 0), as Open-VCLIP/FROSTER. "
                        "A split's dataset is NAME when given as NAME=DIR, else the folder holding DIR (ucf101/split1 ucf101/split2 "
                        "hmdb51/split1: two datasets); splits of different datasets are never averaged together.")
    train = cd.add_argument_group("training actions (an evaluation class among them is refused; one source, else the "
                                  "checkpoint's stdd.json)")
    train.add_argument("--train-split-dir", default=None, help="the training split folder (its classmap.json is read)")
    train.add_argument("--train-data", default=None, help="the training video folder (its class folders are read)")
    train.add_argument("--train-classmap", default=None, metavar="FILE", help="the training class map (instead of the two above)")
    train.add_argument("--allow-overlap", action="store_true",
                       help="evaluate splits sharing class names with the training actions (as K400 -> UCF101 is published); "
                            "recorded. Names are compared, not meanings: case, spaces, punctuation and CamelCase are ignored "
                            "(ApplyEyeMakeup = apply eye makeup), but 'applying eye makeup' is another name")
    ev = cd.add_argument_group("evaluation splits (one or more, DIR or NAME=DIR; each scored over its own classes)")
    ev.add_argument("--eval-split-dir", nargs="+", default=[], metavar="DIR", help="folders of split CSVs (e.g. UCF101 splits 1-3)")
    ev.add_argument("--eval-data", nargs="+", default=[], metavar="DIR",
                    help="video folders: DIR/<class>/<video> (or train/val/test/ inside); they read their own classes")
    ev.add_argument("--eval-classmap", default=None, metavar="FILE",
                    help="class map for every --eval-split-dir (default: each SPLIT_DIR/classmap.json); not for --eval-data")
    ev.add_argument("--video-root", default=None, metavar="DIR",
                    help="what the --eval-split-dir CSV paths are relative to (default: each split folder); not for --eval-data")
    ev.add_argument("--split", default=None, choices=("test", "all"),
                    help="clips evaluated in each split (default: its test clips, else all, as `video zero-shot`)")
    _add_evaluation_options(cd, "a cross-dataset evaluation")
    cd.set_defaults(func=cross_dataset_main)


def cross_dataset_main(args: argparse.Namespace) -> int:
    from ..io import atomic_write_bytes, atomic_write_json
    from ..outputs import claim_output_dir, mark_output_dir
    from ..video.cross import (
        check_eval_sets,
        evaluate_cross_dataset,
        load_eval_sets,
        one_line_table,
        parse_eval_arg,
        training_classes,
    )
    from ..video.descriptions import read_descriptions
    from ..video.kinds import VIDEO_CROSS

    folders = [parse_eval_arg(p)[1] for p in [*args.eval_split_dir, *args.eval_data]]
    inputs = [*folders, args.video_root, args.train_split_dir, args.train_data]
    out = claim_output_dir(args.out, VIDEO_CROSS, overwrite=args.overwrite, inputs=inputs)
    cache_dir = cache_dir_from_args(args, inputs)
    trained = training_classes(args.train_split_dir, args.train_data, args.train_classmap)
    meta = _stdd_meta(args)
    seen = list(meta.get("seen_classes", [])) if meta else []  # a `video train` checkpoint names what it saw
    train_classes = list(dict.fromkeys([*trained, *seen]))
    eval_sets = load_eval_sets(args.eval_split_dir, args.eval_data, args.video_root, args.eval_classmap)
    descriptions = read_descriptions(args.descriptions) if args.descriptions else None
    check_eval_sets(eval_sets, train_classes, args.split, args.allow_overlap, args.template, descriptions)  # before the backbone loads
    if not train_classes:  # nothing to compare with: say so rather than pass silently
        print("warning: no training classes known (no --train-split-dir/--train-data/--train-classmap, and no stdd.json "
              "beside the checkpoint): evaluation classes were not checked for overlap", file=sys.stderr)
    backbone = video_backbone(args)
    result = evaluate_cross_dataset(backbone, eval_sets, _config(args, meta), train_classes, args.template, descriptions,
                                    cache_dir, args.skip_bad, args.allow_overlap, args.split)
    result["train_class_sources"] = {"training set": len(trained), "checkpoint stdd.json": len(seen)}
    predictions = result.pop("predictions")
    mark_output_dir(out, VIDEO_CROSS)
    atomic_write_json(out / "metrics.json", result)
    atomic_write_bytes(out / "predictions.csv", _cross_predictions_csv(predictions).encode("utf-8"))
    print(one_line_table(result))
    _warn_skipped([item for split in result["splits"] for item in split["extraction"]["skipped"]], out / "metrics.json")
    return 0


def _cross_predictions_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["split", "path", "label", "predicted"])
    for row in rows:
        writer.writerow([row["split"], row["path"], row["label"], row["predicted"]])
    return buffer.getvalue()


def _add_predict(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("predict", help="top-k actions of video files, zero-shot (CSV or JSON on stdout)")
    pr.add_argument("--video", nargs="+", required=True, help="video files")
    classes = pr.add_argument_group("classes (one of)")
    classes.add_argument("--classmap", default=None, metavar="FILE", help='class map JSON {"0": "name", …}')
    classes.add_argument("--classes", default=None, help="comma-separated class names")
    pr.add_argument("--top-k", type=positive_int, default=5, help="classes per video (default: %(default)s)")
    pr.add_argument("--format", default="csv", choices=("csv", "json"),
                    help="csv: one path,rank,class,probability row per video and rank, as `predict`; json: one object per "
                         "video with its top_k list (default: %(default)s)")
    pr.add_argument("--skip-bad", action="store_true", help="leave unreadable videos out (listed on stderr), instead of stopping")
    _add_sampling_options(pr)
    add_backbone_options(pr)
    pr.set_defaults(func=predict_main)


def toy_dataset_main(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..video.toyclips import write_toy_videos

    if args.size % 2:
        raise ConfigError(f"--size must be even (H.264 with 4:2:0 chroma), got {args.size}")
    out = write_toy_videos(args.out, args.train, args.val, args.test, args.frames, args.size, seed=args.seed,
                           overwrite=args.overwrite, actions=args.actions, classes=args.classes)
    print(f"wrote the toy action clips to {out}: videos/, train/val/test.csv, classmap.json, descriptions.json, meta.json",
          file=sys.stderr)
    return 0


def _stdd_meta(args: argparse.Namespace) -> dict | None:
    """The checkpoint's ``stdd.json`` (a `video train` output), or None."""
    from ..video.train import read_stdd

    return read_stdd(args.pretrained) if args.pretrained and args.pretrained not in ("shipped", "none") else None


def _config(args: argparse.Namespace, meta: dict | None = None):
    """Sampling and scoring options; ``--scorer`` defaults to the one the checkpoint was validated with, else frame-mean."""
    from ..video.train import recorded_scorer
    from ..video.zeroshot import VideoZeroShotConfig

    scorer = args.scorer or (recorded_scorer(meta) if meta else "frame-mean")
    text = meta.get("text") if meta else None
    if isinstance(text, dict) and text.get("source") == "descriptions" and not args.descriptions:
        import warnings

        warnings.warn(f"{args.pretrained} was trained on description prompts; without the same --descriptions, its "
                      f"{scorer} scores use the plain templates instead")
    return VideoZeroShotConfig.from_dict({"frames": args.frames, "views": args.views, "scorer": scorer,
                                          "batch_size": args.batch_size}, where="options")


def zero_shot_main(args: argparse.Namespace) -> int:
    from ..io import atomic_write_bytes, atomic_write_json
    from ..outputs import claim_output_dir, mark_output_dir
    from ..video.dataset import load_video_dataset
    from ..video.kinds import VIDEO_EVAL
    from ..video.zeroshot import evaluate_zero_shot

    inputs = [args.data, args.split_dir, args.video_root]
    out = claim_output_dir(args.out, VIDEO_EVAL, overwrite=args.overwrite, inputs=inputs)
    cache_dir = cache_dir_from_args(args, inputs)
    dataset = load_video_dataset(args.data, args.split_dir, args.video_root, args.classmap)
    config = _config(args, _stdd_meta(args))
    backbone = video_backbone(args)
    result = evaluate_zero_shot(backbone, dataset, args.split, config, args.template, args.descriptions, cache_dir, args.skip_bad)
    predictions = result.pop("predictions")
    mark_output_dir(out, VIDEO_EVAL)
    atomic_write_json(out / "metrics.json", result)
    atomic_write_bytes(out / "predictions.csv", _predictions_csv(predictions, dataset.classnames).encode("utf-8"))
    print(_summary(result))
    _warn_skipped(result["extraction"]["skipped"], out / "metrics.json")
    return 0


def _warn_skipped(skipped: list[dict], listed_in) -> None:
    """One warning line for the videos ``--skip-bad`` left out: how many, the first few, where all are listed.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _warn_skipped([{"path": f"v/{i}.mp4", "reason": "…"} for i in range(5)], "zs/metrics.json")
        >>> str(caught[0].message)
        'skipped 5 unreadable video(s): v/0.mp4, v/1.mp4, v/2.mp4 and 2 more (each with its reason in zs/metrics.json)'
    """
    import warnings

    from ..io import quoted

    if not skipped:
        return
    names = ", ".join(quoted(item["path"]) for item in skipped[:3])
    more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    warnings.warn(f"skipped {len(skipped)} unreadable video(s): {names}{more} (each with its reason in {quoted(listed_in)})")


def _predictions_csv(rows: list[dict], classnames: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "predicted"])
    for row in rows:
        writer.writerow([row["path"], classnames[row["label"]], classnames[row["predicted"]]])
    return buffer.getvalue()


def _summary(result: dict) -> str:
    m = result["metrics"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    lines = [f"{result['dataset']} ({result['split']}): {m['num_clips']} clips, {len(m['per_class_accuracy'])} classes, "
             f"scorer {result['config']['scorer']}, {result['config']['frames']} frames x {result['config']['views']} view(s)",
             f"top-1 {pct(m['top1'])}  top-5 {pct(m['top5'])}  mean per-class {pct(m['mean_per_class_accuracy'])}  "
             f"(chance {pct(m['chance_top1'])})"]
    pairs = m.get("time_reversed_pairs")
    if pairs and pairs["num_clips"]:
        lines.append(f"time-reversed pairs: {pct(pairs['accuracy'])} % beat their reversal ({pairs['num_clips']} clips; chance 50.00 %)")
    return "\n".join(lines)


def _classnames(args: argparse.Namespace) -> list[str]:
    from ..errors import ConfigError
    from ..video.dataset import read_classmap
    from ..video.descriptions import read_descriptions

    if args.classmap and args.classes:
        raise ConfigError("give --classmap or --classes, not both")
    if args.classmap:
        return read_classmap(args.classmap)
    if args.classes:
        names = [n.strip() for n in args.classes.split(",") if n.strip()]
        if len(names) < 2:
            raise ConfigError(f"--classes needs at least two comma-separated class names, got {args.classes!r}")
        return names
    if args.descriptions:
        return sorted(read_descriptions(args.descriptions))
    raise ConfigError("name the classes: --classmap FILE, --classes a,b,c, or --descriptions FILE")


def predict_main(args: argparse.Namespace) -> int:
    from ..video.zeroshot import predict_videos

    classnames = _classnames(args)
    config = _config(args, _stdd_meta(args))
    cache_dir = cache_dir_from_args(args, [])
    backbone = video_backbone(args)
    rows = predict_videos(backbone, args.video, classnames, config, args.template, args.descriptions, args.top_k, cache_dir,
                          args.skip_bad)
    if args.format == "json":
        print_json(rows)
        return 0
    sys.stdout.write(_predict_csv(rows))
    return 0


def _predict_csv(rows: list[dict]) -> str:
    """One row per video and rank, ``path,rank,class,probability``: the columns of the image ``predict``.

    Example:
        >>> print(_predict_csv([{"path": "a.mp4", "top_k": [{"label": "jump", "score": 0.75}, {"label": "run", "score": 0.25}]}]), end="")
        path,rank,class,probability
        a.mp4,1,jump,0.750000
        a.mp4,2,run,0.250000
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "rank", "class", "probability"])
    for row in rows:
        for rank, top in enumerate(row["top_k"], start=1):
            writer.writerow([row["path"], rank, top["label"], f"{top['score']:.6f}"])
    return buffer.getvalue()


def video_backbone(args: argparse.Namespace):
    """The backbone, with space-time attention installed as ``--stdd`` and the checkpoint's ``stdd.json`` say."""
    from ..errors import ConfigError
    from ..video.stdd import SpaceTimeConfig, install_space_time

    backbone = backbone_from_args(args)
    meta = _stdd_meta(args)
    if args.stdd == "off" or (args.stdd == "auto" and not (meta and meta["space_time"].get("enabled", True))):
        return backbone
    space = SpaceTimeConfig.from_dict(meta["space_time"], where="stdd.json") if meta else SpaceTimeConfig()
    visual = getattr(getattr(backbone, "model", None), "visual", None)
    if visual is None:
        raise ConfigError(f"--stdd on needs a toy or open_clip ViT backbone, not {backbone.id}")
    install_space_time(visual, space.replace(enabled=True))
    return backbone


def train_main(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..finetune.trainer import TrainerConfig
    from ..video.dataset import load_video_dataset
    from ..video.stdd import SpaceTimeConfig
    from ..video.train import VideoTrainConfig, seen_classes, train_video, training_scorer
    from ..video.zeroshot import DEFAULT_TEMPLATES, text_side

    inputs = [args.data, args.split_dir, args.video_root]
    cache_dir = cache_dir_from_args(args, inputs)
    dataset = load_video_dataset(args.data, args.split_dir, args.video_root, args.classmap)
    classes = tuple(n.strip() for n in args.classes.split(",") if n.strip()) if args.classes else ()
    cfg = VideoTrainConfig.from_dict({"frames": args.frames, "batch_clips": args.batch_clips, "shots": args.shots,
                                      "classes": classes, "distill_weight": args.distill_weight,
                                      "precision": args.train_precision, "views": args.views,
                                      "scorer": args.scorer or training_scorer(bool(args.descriptions)),
                                      "batch_size": args.batch_size}, where="options")
    if args.lr <= 0:
        raise ConfigError(f"--lr must be positive, got {args.lr}")
    trainer = TrainerConfig(steps=args.steps, lr=args.lr, warmup_steps=min(20, args.steps // 10), val_every=args.val_every, seed=args.seed)
    space = SpaceTimeConfig(enabled=args.stdd != "off")
    backbone = backbone_from_args(args)
    names = seen_classes(dataset, classes)
    templates = tuple(args.template or dataset.templates or DEFAULT_TEMPLATES)
    prompts, mask, _ = text_side(backbone, names, templates, args.descriptions, cache_dir)
    text_info = {"source": "descriptions" if args.descriptions else "templates", "templates": list(templates)}
    record = train_video(backbone, dataset, cfg, space, trainer, args.out, prompts, mask,
                         overwrite=args.overwrite, inputs=inputs, text_info=text_info)
    r = record["result"]
    print(f"trained on {len(names)} seen classes, {record['train_clips']} clips; validation top-1 "
          f"{r['validation_initial']['score']:.4f} -> {r['validation_selected']['score']:.4f} (step {r['selected_step']}); "
          f"{record['clips_per_s']} clips/s; checkpoint in {args.out} (space-time attention {'on' if space.enabled else 'off'})")
    return 0
