r"""``clip-adapter video``: zero-shot action recognition on real video files, and the toy world in motion.

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
    clip-adapter video zero-shot --split-dir toy-videos --descriptions toy-videos/descriptions.json \
        --scorer prompt-match --out zs-pm
    clip-adapter video predict --classmap toy-videos/classmap.json --video a.mp4 b.mp4
    clip-adapter video train --split-dir toy-videos --backbone toy --pretrained runs/toy-video-clip --out stdd-toy
    clip-adapter video zero-shot --split-dir toy-videos --backbone toy --pretrained stdd-toy --out zs-stdd
    clip-adapter video toy-dataset --actions base --out src
    clip-adapter video toy-dataset --actions novel --seed 1 --out tgt1
    clip-adapter video cross-dataset --train-split-dir src --eval-split-dir tgt1 tgt2 tgt3 --backbone toy \
        --pretrained stdd-toy --out cross
    clip-adapter video base-to-novel --split-dir toy-videos --backbone toy --pretrained runs/toy-video-clip \
        --seeds 1 2 3 --out b2n
"""

from __future__ import annotations

import argparse
import sys

from .common import (
    add_backbone_options,
    add_config_options,
    add_overwrite_option,
    backbone_from_args,
    config_from_args,
    print_json,
)
from .parsing import positive_int, seed_int

SAMPLING = ("frames", "views", "scorer", "batch_size")  # `video train`'s fields shown with the scoring options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "video",
        help="zero-shot action recognition on video files; the toy world in motion",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    video_sub = p.add_subparsers(dest="video_command", metavar="VIDEO_COMMAND")
    for add in (
        _add_toy_dataset,
        _add_zero_shot,
        _add_predict,
        _add_train,
        _add_cross_dataset,
        _add_toy_pretrain,
        _add_base_to_novel,
    ):
        add(video_sub)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


# ------------------------------------------------------------------------------------- shared options


def _add_data_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    data = parser.add_argument_group("data")
    data.add_argument("--data", default=None, help="folder per class: DIR/<class>/<video>")
    data.add_argument(
        "--split-dir", default=None, help="folder of train.csv/val.csv/test.csv (relative/path,label rows)"
    )
    data.add_argument(
        "--classmap",
        default=None,
        metavar="FILE",
        help='class map JSON {"0": "name", …} (default: SPLIT_DIR/classmap.json)',
    )
    data.add_argument(
        "--video-root", default=None, metavar="DIR", help="what CSV paths are relative to (default: the split folder)"
    )
    return data


def _add_text_options(group: argparse._ArgumentGroup) -> None:
    """Prompts, the feature cache and the space-time attention: what every scoring or training command takes."""
    group.add_argument(
        "--descriptions",
        default=None,
        metavar="FILE",
        help="class → list of clauses (JSON, or YAML with PyYAML); without it, plain templates",
    )
    group.add_argument(
        "--template",
        action="append",
        default=None,
        help='prompt template with {} (repeatable; default: the dataset\'s, else "a video of a person {}.")',
    )
    group.add_argument(
        "--cache-dir", default="", help="feature cache (default: $CLIP_ADAPTER_CACHE or ~/.cache/clip-adapter)"
    )
    group.add_argument(
        "--stdd",
        default="auto",
        choices=("auto", "on", "off"),
        help="space-time attention in the ViT blocks: auto = as the checkpoint's stdd.json says (default: %(default)s)",
    )


def _add_scoring_options(parser: argparse.ArgumentParser) -> None:
    """Sampling and scoring (:class:`VideoZeroShotConfig`), prompts, cache, attention and the backbone."""
    from ..video.zeroshot import VideoZeroShotConfig

    group = parser.add_argument_group("clips and scoring")
    add_config_options(group, VideoZeroShotConfig)
    _add_text_options(group)
    add_backbone_options(parser)


def _add_evaluation_options(parser: argparse.ArgumentParser, what: str) -> None:
    """What every evaluating command takes: its output folder, --skip-bad, sampling and backbone options."""
    parser.add_argument("--out", required=True, help="output folder for metrics.json and predictions.csv")
    add_overwrite_option(parser, what)
    parser.add_argument(
        "--skip-bad", action="store_true", help="leave unreadable videos out and list them, instead of stopping"
    )
    _add_scoring_options(parser)


def _add_renamed(group: argparse._ArgumentGroup, flag: str, config_cls: type, field: str) -> None:
    """A config field whose own flag the backbone options hold (``--precision``): same help, the config's default."""
    default = getattr(config_cls(), field)
    group.add_argument(flag, default=default, help=f"{config_cls.help_texts()[field]} (default: {default!r})")


def _source(args: argparse.Namespace):
    from ..video.run import VideoSource

    return VideoSource(args.data, args.split_dir, args.video_root, args.classmap)


def _scoring_config(args: argparse.Namespace, meta: dict | None):
    """The sampling options; unset ones as a `video train` checkpoint was validated, else the config's defaults."""
    from ..video.run import check_text_side, checkpoint_defaults
    from ..video.zeroshot import VideoZeroShotConfig

    config = config_from_args(VideoZeroShotConfig, args, **({} if args.scorer else checkpoint_defaults(meta)))
    check_text_side(meta, args.descriptions, args.pretrained, config.scorer)
    return config


def _video_backbone(args: argparse.Namespace, meta: dict | None):
    """A factory of the backbone, with space-time attention as ``--stdd`` and the checkpoint's ``stdd.json`` say."""
    from ..video.run import with_space_time

    return lambda: with_space_time(backbone_from_args(args), args.stdd, meta)


def _log(message: str) -> None:
    print(message, file=sys.stderr)


# ------------------------------------------------------------------------------------- toy-dataset


def _add_toy_dataset(sub: argparse._SubParsersAction) -> None:
    from ..video.toyclips import ToyVideoConfig

    ds = sub.add_parser(
        "toy-dataset", help="write the toy action clips: mp4 class folders, split CSVs, class map, descriptions"
    )
    ds.add_argument("--out", required=True, help="output folder: new, empty, or a toy video dataset with --overwrite")
    add_overwrite_option(ds, "a toy video dataset")
    add_config_options(ds, ToyVideoConfig)
    ds.set_defaults(func=toy_dataset_main)


def toy_dataset_main(args: argparse.Namespace) -> int:
    from ..video.toyclips import ToyVideoConfig, write_toy_videos

    config = config_from_args(ToyVideoConfig, args)
    out = write_toy_videos(args.out, **config.to_dict(), overwrite=args.overwrite)
    print(
        f"wrote the toy action clips to {out}: videos/, train/val/test.csv, classmap.json, descriptions.json, "
        "meta.json",
        file=sys.stderr,
    )
    return 0


# ------------------------------------------------------------------------------------- zero-shot, predict


def _add_zero_shot(sub: argparse._SubParsersAction) -> None:
    zs = sub.add_parser("zero-shot", help="evaluate a frozen CLIP zero-shot on a video dataset; writes metrics.json")
    data = _add_data_options(zs)
    data.add_argument(
        "--split",
        default=None,
        choices=("train", "val", "test", "all"),
        help="split to evaluate (default: test, else all)",
    )
    _add_evaluation_options(zs, "an evaluation")
    zs.set_defaults(func=zero_shot_main)


def zero_shot_main(args: argparse.Namespace) -> int:
    from ..video.run import stdd_meta, summary, zero_shot

    meta = stdd_meta(args.pretrained)
    config = _scoring_config(args, meta)
    result = zero_shot(
        _source(args),
        config,
        _video_backbone(args, meta),
        args.out,
        split=args.split,
        templates=args.template,
        descriptions=args.descriptions,
        cache_dir=args.cache_dir,
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
    )
    print(summary(result))
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    from ..video.zeroshot import TOP_K

    pr = sub.add_parser("predict", help="top-k actions of video files, zero-shot (CSV or JSON on stdout)")
    pr.add_argument("--video", nargs="+", required=True, help="video files")
    classes = pr.add_argument_group("classes (one of)")
    classes.add_argument("--classmap", default=None, metavar="FILE", help='class map JSON {"0": "name", …}')
    classes.add_argument("--classes", default=None, help="comma-separated class names")
    pr.add_argument("--top-k", type=positive_int, default=TOP_K, help="classes per video (default: %(default)s)")
    pr.add_argument(
        "--format",
        default="csv",
        choices=("csv", "json"),
        help="csv: one path,rank,class,probability row per video and rank, as `predict`; json: one "
        "object per video with its top_k list (default: %(default)s)",
    )
    pr.add_argument(
        "--skip-bad", action="store_true", help="leave unreadable videos out (listed on stderr), instead of stopping"
    )
    _add_scoring_options(pr)
    pr.set_defaults(func=predict_main)


def predict_main(args: argparse.Namespace) -> int:
    from ..video.run import checked_cache_dir, predict_csv, stdd_meta, video_classnames
    from ..video.zeroshot import predict_videos

    classnames = video_classnames(args.classmap, args.classes, args.descriptions)
    meta = stdd_meta(args.pretrained)
    config = _scoring_config(args, meta)
    cache_dir = checked_cache_dir(args.cache_dir, [])
    rows = predict_videos(
        _video_backbone(args, meta)(),
        args.video,
        classnames,
        config,
        args.template,
        args.descriptions,
        args.top_k,
        cache_dir,
        args.skip_bad,
    )
    if args.format == "json":
        print_json(rows)
    else:
        sys.stdout.write(predict_csv(rows))
    return 0


# ------------------------------------------------------------------------------------- train


def _add_train(sub: argparse._SubParsersAction) -> None:
    from ..video.train import VideoTrainConfig, VideoTrainerConfig

    tr = sub.add_parser(
        "train",
        help="fine-tune a ViT CLIP's image encoder on seen actions (STDD space-time attention + FROSTER distillation)",
    )
    _add_data_options(tr)
    tr.add_argument("--out", required=True, help="output folder: the checkpoint, stdd.json, log and result.json")
    add_overwrite_option(tr, "a video training output")
    training = tr.add_argument_group("training")
    add_config_options(training, VideoTrainConfig, exclude=("precision", *SAMPLING))
    _add_renamed(training, "--train-precision", VideoTrainConfig, "precision")
    # The warm-up is not an option: a tenth of the steps, at most 20 (VideoTrainerConfig.with_warmup).
    add_config_options(training, VideoTrainerConfig, exclude=("warmup_steps",))
    # Training and validation use --scorer (default: the official STDD score, prompt-match with --descriptions).
    group = tr.add_argument_group("clips and scoring")
    add_config_options(
        group, VideoTrainConfig, exclude=tuple(n for n in VideoTrainConfig.help_texts() if n not in SAMPLING)
    )
    _add_text_options(group)
    add_backbone_options(tr)
    tr.set_defaults(func=train_main)


def train_main(args: argparse.Namespace) -> int:
    from ..video.run import train, train_summary
    from ..video.train import VideoTrainConfig, VideoTrainerConfig, training_scorer

    scorer = {} if args.scorer else {"scorer": training_scorer(bool(args.descriptions))}
    cfg = config_from_args(VideoTrainConfig, args, precision=args.train_precision, **scorer)
    trainer = config_from_args(VideoTrainerConfig, args).with_warmup()
    record = train(
        _source(args),
        cfg,
        trainer,
        lambda: backbone_from_args(args),
        args.out,
        stdd=args.stdd,
        templates=args.template,
        descriptions=args.descriptions,
        cache_dir=args.cache_dir,
        overwrite=args.overwrite,
    )
    print(train_summary(record, args.out))
    return 0


# ------------------------------------------------------------------------------------- cross-dataset


def _add_cross_dataset(sub: argparse._SubParsersAction) -> None:
    cd = sub.add_parser(
        "cross-dataset",
        help="zero-shot cross-dataset: test a (trained) CLIP on splits of unseen "
        "actions; per-split top-1/top-5 and each dataset's mean ± std",
        description="Score every evaluation split over its own classes (as `video zero-shot`), then "
        "report each dataset's mean ± std over its splits; std is the population std (ddof 0), as "
        "Open-VCLIP/FROSTER. A split's dataset is NAME when given as NAME=DIR, else the folder holding "
        "DIR (ucf101/split1 ucf101/split2 hmdb51/split1: two datasets); splits of different datasets "
        "are never averaged together.",
    )
    train = cd.add_argument_group(
        "training actions (an evaluation class among them is refused; one source, else the checkpoint's stdd.json)"
    )
    train.add_argument("--train-split-dir", default=None, help="the training split folder (its classmap.json is read)")
    train.add_argument("--train-data", default=None, help="the training video folder (its class folders are read)")
    train.add_argument(
        "--train-classmap", default=None, metavar="FILE", help="the training class map (instead of the two above)"
    )
    train.add_argument(
        "--allow-overlap",
        action="store_true",
        help="evaluate splits sharing class names with the training actions (as K400 -> UCF101 is "
        "published); recorded. Names are compared, not meanings: case, spaces, punctuation and "
        "CamelCase are ignored (ApplyEyeMakeup = apply eye makeup), but 'applying eye makeup' is "
        "another name",
    )
    ev = cd.add_argument_group("evaluation splits (one or more, DIR or NAME=DIR; each scored over its own classes)")
    ev.add_argument(
        "--eval-split-dir", nargs="+", default=[], metavar="DIR", help="folders of split CSVs (e.g. UCF101 splits 1-3)"
    )
    ev.add_argument(
        "--eval-data",
        nargs="+",
        default=[],
        metavar="DIR",
        help="video folders: DIR/<class>/<video> (or train/val/test/ inside); they read their own classes",
    )
    ev.add_argument(
        "--eval-classmap",
        default=None,
        metavar="FILE",
        help="class map for every --eval-split-dir (default: each SPLIT_DIR/classmap.json); not for --eval-data",
    )
    ev.add_argument(
        "--video-root",
        default=None,
        metavar="DIR",
        help="what the --eval-split-dir CSV paths are relative to (default: each split folder); not for --eval-data",
    )
    ev.add_argument(
        "--split",
        default=None,
        choices=("test", "all"),
        help="clips evaluated in each split (default: its test clips, else all, as `video zero-shot`)",
    )
    _add_evaluation_options(cd, "a cross-dataset evaluation")
    cd.set_defaults(func=cross_dataset_main)


def cross_dataset_main(args: argparse.Namespace) -> int:
    from ..video.cross import one_line_table
    from ..video.run import CrossSources, cross_dataset, stdd_meta

    sources = CrossSources(
        tuple(args.eval_split_dir),
        tuple(args.eval_data),
        args.video_root,
        args.eval_classmap,
        args.train_split_dir,
        args.train_data,
        args.train_classmap,
    )
    meta = stdd_meta(args.pretrained)
    config = _scoring_config(args, meta)
    result = cross_dataset(
        sources,
        config,
        _video_backbone(args, meta),
        args.out,
        meta=meta,
        split=args.split,
        allow_overlap=args.allow_overlap,
        templates=args.template,
        descriptions=args.descriptions,
        cache_dir=args.cache_dir,
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
        log=_log,
    )
    print(one_line_table(result))
    return 0


# ------------------------------------------------------------------------------------- toy-pretrain


def _add_toy_pretrain(sub: argparse._SubParsersAction) -> None:
    from ..video.pretrain import QUICK, VideoPretrainConfig

    pt = sub.add_parser(
        "toy-pretrain",
        help="pretrain the toy video CLIP (ViT tower, motion words) in minutes; "
        "--quick: a CNN one in about two minutes",
    )
    pt.add_argument("--out", required=True, help="output folder for toy_clip.safetensors/.json (--pretrained OUT)")
    add_overwrite_option(pt, "a toy video CLIP")
    quick = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in QUICK.items())
    pt.add_argument(
        "--quick",
        action="store_true",
        help=f"the quick recipe, for trying the video commands ({quick}, unless given): the shipped "
        "CLIP's CNN image tower taught the motion words (about 2 min on two shared cores); `video "
        "train` then needs --stdd off. The README's video tables use the default recipe (a new ViT)",
    )
    add_config_options(pt, VideoPretrainConfig)
    pt.set_defaults(func=toy_pretrain_main)


def toy_pretrain_main(args: argparse.Namespace) -> int:
    from ..video.pretrain import VideoPretrainConfig, pretrain_video_clip
    from ..video.run import pretrain_defaults

    cfg = config_from_args(VideoPretrainConfig, args, **pretrain_defaults(args.quick, vars(args)))
    weights = pretrain_video_clip(cfg, args.out, log=_log, overwrite=args.overwrite)
    note = " (CNN image tower: `video train` needs --stdd off)" if cfg.image_from.lower() != "none" else ""
    print(f"wrote the toy video CLIP to {weights.parent}: use --backbone toy --pretrained {weights.parent}{note}")
    return 0


# ------------------------------------------------------------------------------------- base-to-novel


def _add_base_to_novel(sub: argparse._SubParsersAction) -> None:
    from ..video.bench import VARIANTS, BaseToNovelConfig

    bn = sub.add_parser(
        "base-to-novel",
        help="the base-to-novel protocol: train on base actions per seed, test base "
        "and novel actions each among themselves; base, novel, HM, reversed pairs; results.json, "
        "table.md, a plot",
        description="Open-VCLIP/FROSTER/STDD base-to-novel: frozen rows (no training) and STDD-style "
        "trained rows with ablations (`video train` per seed), mean ± population std over the seeds.",
    )
    data = _add_data_options(bn)
    data.add_argument(
        "--base", default=None, help="comma-separated base (training) classes (default: meta.json's 'base')"
    )
    data.add_argument(
        "--novel", default=None, help="comma-separated novel classes (default: meta.json's 'novel', else the rest)"
    )
    bn.add_argument("--out", required=True, help="output folder: results.json, table.md, base_to_novel.png, runs/")
    add_overwrite_option(bn, "a base-to-novel output")
    defaults, helps = BaseToNovelConfig(), BaseToNovelConfig.help_texts()
    # Lists of values, as "--seeds 1 2 3" (every user and page writes them so), not comma-separated; other dests than
    # the fields', which config_from_args would read as comma-separated text.
    bn.add_argument(
        "--variants",
        dest="variant_list",
        nargs="+",
        default=None,
        choices=list(VARIANTS),
        metavar="VARIANT",
        help=f"{helps['variants']} (default: all; the frozen rows need no training)",
    )
    bn.add_argument(
        "--seeds",
        dest="seed_list",
        type=seed_int,
        nargs="+",
        default=None,
        help=f"{helps['seeds']} (default: {' '.join(map(str, defaults.seeds))})",
    )
    add_config_options(bn, BaseToNovelConfig, exclude=("variants", "seeds", "precision"))
    bn.add_argument(
        "--descriptions",
        default=None,
        metavar="FILE",
        help="class → clauses (default: the dataset's descriptions.json); the description rows need it",
    )
    bn.add_argument(
        "--cache-dir", default="", help="feature cache (default: $CLIP_ADAPTER_CACHE or ~/.cache/clip-adapter)"
    )
    add_backbone_options(bn)
    bn.set_defaults(func=base_to_novel_main)


def base_to_novel_main(args: argparse.Namespace) -> int:
    from ..video.bench import BaseToNovelConfig, trained_loader
    from ..video.run import base_to_novel

    lists = {
        k: tuple(dict.fromkeys(v)) if k == "variants" else tuple(v)
        for k, v in (("variants", args.variant_list), ("seeds", args.seed_list))
        if v is not None
    }
    # --precision is the backbone's (evaluation); the training runs keep the config's autocast. Options before the data.
    cfg = config_from_args(BaseToNovelConfig, args, precision=BaseToNovelConfig().precision, **lists)
    load = trained_loader(args.backbone, "fp32" if args.precision == "auto" else args.precision, args.device)
    info = {"backbone": args.backbone, "pretrained": args.pretrained, "data": args.data, "split_dir": args.split_dir}
    results = base_to_novel(
        _source(args),
        cfg,
        lambda: backbone_from_args(args),
        load,
        args.out,
        pretrained=args.pretrained,
        base=_names(args.base),
        novel=_names(args.novel),
        descriptions=args.descriptions,
        cache_dir=args.cache_dir,
        overwrite=args.overwrite,
        log=_log,
        info=info,
    )
    print(results["markdown"])
    return 0


def _names(text: str | None) -> list[str]:
    """Comma-separated class names, blanks dropped."""
    return [n.strip() for n in text.split(",") if n.strip()] if text else []
