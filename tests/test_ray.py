"""Scaling out on Ray: sharded extraction and the benchmark grid on a local Ray instance (2 CPUs, loopback).

Ray starts once for this file. Workers encode with one thread each, so the
local reference runs with one thread too: fp32 CPU kernels may sum in another
order with another thread count (the toy CLIP's last layer does), and then
the features would differ in the last bit for a reason that has nothing to do
with Ray.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from clip_adapter.cli import main  # noqa: E402
from clip_adapter.core.threads import torch_threads  # noqa: E402
from clip_adapter.data import load_dataset  # noqa: E402
from clip_adapter.data.sampler import sample_few_shot  # noqa: E402
from clip_adapter.distributed import BackboneSpec, RayOptions, ray_extraction, run_bench_ray  # noqa: E402
from clip_adapter.features import extract as extract_module  # noqa: E402
from clip_adapter.pipeline import FeatureConfig, encode_split, templates_for  # noqa: E402
from conftest import write_image_folder  # noqa: E402

TOY = ["--backbone", "toy", "--precision", "fp32", "--device", "cpu"]
EXTRACT = ["--shots", "2,4", "--seeds", "1", "--views", "2", *TOY]


@pytest.fixture(scope="module")
def ray_cluster():
    temp = tempfile.mkdtemp(prefix="ray-test-", dir="/tmp")  # Ray's socket paths must stay short
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("ray-data") / "photos", per_class=8, size=32)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("CLIP_ADAPTER_THREADS", "1")  # the local runs' threads = a 1-CPU worker's
    with torch_threads(torch.get_num_threads()):  # the CLI sets torch's threads: give them back afterwards
        yield


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(extract_module, "IMAGES_PER_CHUNK", 8)  # 4 images x 2 views: many shards for 2 workers


def cache_files(cache: Path) -> dict[str, str]:
    """Every file of a feature cache (shards, manifests, encoder.json) by relative path, with its SHA-256."""
    return {
        str(p.relative_to(cache)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(cache.rglob("*"))
        if p.is_file()
    }


def extract_cli(data: Path, cache: Path, *extra: str) -> dict:
    out = _run_json(["extract", "--data", str(data), *EXTRACT, "--cache-dir", str(cache), "--json", *extra])
    return out


def _run_json(argv: list[str]) -> dict:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(argv) == 0
    return json.loads(buffer.getvalue())


@pytest.mark.slow
def test_ray_shards_equal_local_ones_bit_for_bit_after_a_worker_dies(ray_cluster, photos, tmp_path, small_chunks):
    local = extract_cli(photos, tmp_path / "local")
    assert local["encoded_views"] > 0

    # The same extraction through the library on 2 actors; the first chunk's worker is killed mid-run.
    from clip_adapter.backbones import create_backbone

    backbone = create_backbone("toy", None, "fp32", "cpu")
    spec = BackboneSpec("toy", None, "fp32", "cpu", 0)
    crash = {"match": "chunk-", "times": 1, "dir": str(tmp_path)}
    options = RayOptions(workers=2, retries=2, faults=(crash,))
    dataset = load_dataset(photos)
    features = FeatureConfig(views=2, cache_dir=str(tmp_path / "ray"))
    with ray_extraction(ray_cluster, spec, options, backbone.encoder_fingerprint) as runner:
        for first, shots in ((True, 2), (False, 4)):
            encode_split(
                backbone, sample_few_shot(dataset, shots, 1), templates_for(dataset), features, with_test=first
            )
        assert len(runner.actors) == 2
    assert (tmp_path / "chunk-.crash0").exists()  # a worker really died, and its chunk was redone elsewhere
    assert cache_files(tmp_path / "ray") == cache_files(tmp_path / "local")  # same shard names, bytes, manifests


@pytest.mark.slow
def test_interrupted_ray_run_resumes_and_mixes_with_local_runs(
    ray_cluster, photos, tmp_path, small_chunks, monkeypatch
):
    reference = extract_cli(photos, tmp_path / "reference")

    # The driver is interrupted (Ctrl-C) right after committing its first shard; its actors are stopped with it.
    from clip_adapter.distributed.extract import RayChunkRunner

    original = RayChunkRunner.__call__

    def interrupted_after_one(self, backbone, plan, jobs):
        yield next(original(self, backbone, plan, jobs))
        raise KeyboardInterrupt

    cache = tmp_path / "cache"
    with monkeypatch.context() as patch:
        patch.setattr(RayChunkRunner, "__call__", interrupted_after_one)
        assert (
            main(["extract", "--data", str(photos), *EXTRACT, "--cache-dir", str(cache), "--ray", "--ray-workers", "1"])
            == 130
        )
    shards = [p for p in cache.rglob("image/shard-*.json")]
    assert len(shards) == 1
    done = len(json.loads(shards[0].read_text())["keys"])

    # A local run fills in part of what is missing (2 shots), then Ray does only the rest.
    local = _run_json(
        [
            "extract",
            "--data",
            str(photos),
            *EXTRACT[2:],
            "--shots",
            "2",
            "--seeds",
            "1",
            "--cache-dir",
            str(cache),
            "--json",
        ]
    )
    resumed = extract_cli(photos, cache, "--ray", "--ray-workers", "1")
    assert local["encoded_views"] > 0 and resumed["encoded_views"] > 0
    assert (
        done + local["encoded_views"] + resumed["encoded_views"] == reference["encoded_views"]
    )  # nothing encoded twice
    assert cache_files(cache) == cache_files(tmp_path / "reference")  # the same shards as one local run


BENCH = [
    "--methods",
    "zero-shot",
    "--method",
    "ca=clip-adapter:epochs=5",
    "--shots",
    "1",
    "--seeds",
    "1,2",
    "--views",
    "2",
    *TOY,
]


def run_files(out: Path) -> dict[str, dict]:
    """Each run's result minus what depends on the machine's clock and the cache's state."""
    results = {}
    for path in sorted((out / "runs").rglob("*.json")):
        record = json.loads(path.read_text())
        for volatile in ("timings", "extraction", "fit_seconds"):
            record.pop(volatile)
        results[str(path.relative_to(out))] = record
    return results


@pytest.mark.slow
def test_ray_sweep_equals_local_retries_crashes_and_reports_failures(ray_cluster, photos, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert (
        main(["bench", "--dataset", f"g={photos}", *BENCH, "--cache-dir", str(cache), "--out", str(tmp_path / "local")])
        == 0
    )

    from clip_adapter.backbones import create_backbone
    from clip_adapter.bench import BenchPlan, MethodSpec
    from clip_adapter.core.outputs import mark_output_dir

    backbone = create_backbone("toy", None, "fp32", "cpu")
    methods = [MethodSpec.parse(m) for m in ("zero-shot", "ca=clip-adapter:epochs=5")]
    plan = BenchPlan(
        {"g": load_dataset(photos, name="g")},
        methods,
        (1,),
        (1, 2),
        features=FeatureConfig(views=2, cache_dir=str(cache)),
    )
    transient = {"match": "g/ca/1/1", "times": 1, "dir": str(tmp_path)}  # dies once, then succeeds
    permanent = {"match": "g/zero-shot/1/2", "times": 2, "dir": str(tmp_path), "raise": True}  # fails every attempt
    options = RayOptions(retries=1, faults=(transient, permanent))
    out = tmp_path / "ray"
    mark_output_dir(out, "bench")  # as the CLI does, so the CLI resumes it below
    report = run_bench_ray(
        ray_cluster, backbone, BackboneSpec("toy", None, "fp32", "cpu", 0), plan, out, options, log=lambda line: None
    )
    assert (report.ran, report.skipped, len(report.failed)) == (3, 0, 1)
    assert "g zero-shot 1-shot seed 2" in report.failed[0]
    assert (tmp_path / "g_ca_1_1.crash0").exists() and (tmp_path / "g_zero-shot_1_2.crash1").exists()
    assert not (out / "runs/val/g/zero-shot/shots1_seed2.json").exists()

    # The CLI finishes the sweep: the three finished runs are skipped, the failed one runs now.
    capsys.readouterr()
    assert (
        main(["bench", "--dataset", f"g={photos}", *BENCH, "--cache-dir", str(cache), "--out", str(out), "--ray"]) == 0
    )
    assert "1 runs done, 3 already finished (skipped)" in capsys.readouterr().err
    assert run_files(out) == run_files(tmp_path / "local")
    assert (out / "splits").is_dir() and sorted((out / "splits").rglob("*")) != []


def test_ray_flags_without_ray_installed_are_one_line(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    for command in (
        ["extract", "--data", str(photos)],
        ["bench", "--dataset", f"g={photos}", "--out", str(tmp_path / "b")],
    ):
        assert main([*command, "--ray"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "clip-adapter[ray]" in err
    assert not (tmp_path / "b").exists()  # refused before any work


def test_bad_ray_options_are_one_line(photos, tmp_path, capsys):
    cases = {
        ("--ray", "--address", "127.0.0.1:1"): "no Ray cluster answers there",
        ("--ray", "--address", "nonsense"): "expected HOST:PORT",
        ("--address", "auto"): "add --ray",
        ("--ray", "--ray-gpus-per-worker", "-0.5"): "--ray-gpus-per-worker",
        ("--ray", "--ray-workers", "0"): "--ray-workers",
    }
    for flags, expected in cases.items():
        assert main(["extract", "--data", str(photos), "--cache-dir", str(tmp_path / "c"), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, (flags, err)
    assert (
        main(["bench", "--dataset", f"g={photos}", "--setting", "base-to-new", "--ray", "--out", str(tmp_path / "b")])
        == 2
    )
    assert "--setting base-to-new" in capsys.readouterr().err


def test_a_worker_size_the_cluster_cannot_hold_is_refused(ray_cluster, photos, tmp_path, capsys):
    assert (
        main(
            [
                "extract",
                "--data",
                str(photos),
                *EXTRACT,
                "--cache-dir",
                str(tmp_path / "c"),
                "--ray",
                "--ray-gpus-per-worker",
                "1",
            ]
        )
        == 2
    )
    assert "has 0 GPUs" in capsys.readouterr().err
