"""The ``--ray`` options of ``extract`` and ``bench`` (Ray itself is imported only when ``--ray`` is given)."""

from __future__ import annotations

import argparse

from ..distributed import BackboneSpec, RayOptions


def add_ray_options(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_argument_group("Ray (pip install 'clip-adapter[ray]')")
    group.add_argument(
        "--ray", action="store_true", help=f"run {what} on Ray: a new local instance, or the cluster at --address"
    )
    group.add_argument(
        "--address",
        default=None,
        help="Ray cluster: HOST:PORT of the head (`ray start --head`), ray://HOST:PORT, or auto "
        "(default: $RAY_ADDRESS, else a new local instance)",
    )
    group.add_argument(
        "--ray-workers",
        type=int,
        default=None,
        metavar="N",
        help="extraction actors (default: as many as the cluster fits)",
    )
    # None = not given (then a flag without --ray can be refused); the defaults are RayOptions'.
    group.add_argument(
        "--ray-cpus-per-worker", type=float, default=None, metavar="C", help="CPUs per worker (default: 1)"
    )
    group.add_argument(
        "--ray-gpus-per-worker",
        type=float,
        default=None,
        metavar="G",
        help="GPUs per worker, fractions allowed, e.g. 0.5 (default: 0)",
    )
    group.add_argument(
        "--ray-retries",
        type=int,
        default=None,
        metavar="R",
        help="restarts of a dead worker / retries of a failed run (default: 3)",
    )


RAY_FLAGS = (
    ("--address", "address"),
    ("--ray-workers", "ray_workers"),
    ("--ray-cpus-per-worker", "ray_cpus_per_worker"),
    ("--ray-gpus-per-worker", "ray_gpus_per_worker"),
    ("--ray-retries", "ray_retries"),
)


def ray_options_from_args(args: argparse.Namespace) -> RayOptions | None:
    """The Ray options, checked, or None without ``--ray`` (then the other Ray flags are refused)."""
    from ..core.errors import ConfigError

    if not args.ray:
        given = [flag for flag, name in RAY_FLAGS if getattr(args, name) is not None]
        if given:
            raise ConfigError(f"{given[0]} is a Ray option: add --ray")
        return None
    from ..distributed.cluster import check_address, import_ray

    defaults = RayOptions()
    options = RayOptions(
        args.address,
        args.ray_workers,
        _given(args.ray_cpus_per_worker, defaults.cpus_per_worker),
        _given(args.ray_gpus_per_worker, defaults.gpus_per_worker),
        _given(args.ray_retries, defaults.retries),
    )
    import_ray()  # both checked before any work: a missing extra or a dead address is one line at once
    check_address(options.address)
    return options


def _given(value, default):
    return default if value is None else value


def backbone_spec_from_args(args: argparse.Namespace, precision: str) -> BackboneSpec:
    """How workers build the backbone: the command's options, with the precision this machine resolved."""
    return BackboneSpec(args.backbone, args.pretrained, precision, args.device, args.init_seed)
