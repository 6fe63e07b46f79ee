"""Worker processes for the exact method's units (autointerp.importance.workers): same tallies as one
process, errors and dead workers reported, the stage's plan and resume with workers."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch

from autointerp.importance.ablation import Ablation
from autointerp.importance.fastpaths.inceptionv1.path import InceptionMixed5aPath, inception_parts, reference_tail
from autointerp.importance.fastpaths.inceptionv1.synthetic import rescaled_inceptionv1, trained_like_labels
from autointerp.importance.workers import (
    Unit,
    UnitJob,
    WorkerError,
    WorkerPool,
    evaluate_unit,
    resolve_workers,
)  # fmt: skip

K = 10
VALID = torch.zeros(1008, dtype=torch.bool)
VALID[1:1001] = True


def test_resolve_workers():
    assert resolve_workers("auto", 25, cpus=2) == (2, 1)
    assert resolve_workers("auto", 25, cpus=16) == (16, 1)
    assert resolve_workers("auto", 3, cpus=16) == (3, 5)  # at most one worker per unit, the CPUs shared
    assert resolve_workers(4, 25, cpus=2) == (4, 1)
    # one worker: this process, with its own PyTorch threads (whatever the setting's CPUs)
    assert resolve_workers("auto", 1, cpus=8) == (1, torch.get_num_threads())
    assert resolve_workers(1, 25, cpus=8) == (1, torch.get_num_threads())
    for bad in (0, -1, "two", True, 1.5):
        with pytest.raises(ValueError, match="importance.workers"):
            resolve_workers(bad, 25, cpus=2)


def test_a_daemonic_process_runs_units_itself(monkeypatch):
    """A daemonic process (a multiprocessing pool's worker) may not start processes: one worker, here."""
    import multiprocessing

    class Daemon:
        daemon = True

    monkeypatch.setattr(multiprocessing, "current_process", lambda: Daemon())
    assert resolve_workers("auto", 25, cpus=2) == (1, torch.get_num_threads())
    assert resolve_workers(4, 25, cpus=2) == (1, torch.get_num_threads())


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A trained-like random InceptionV1, its mixed5a activations of 6 images as a float16 .npy file
    (as the activations stage writes it), trained-like labels and the channel-mean ablation."""
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(6, 3, 224, 224, generator=gen) * 255 - 117
    model = rescaled_inceptionv1(seed=0, example=images[:2])
    cap: list[torch.Tensor] = []
    handle = model.mixed5a.register_forward_hook(lambda _m, _i, out: cap.append(out))
    with torch.no_grad():
        model(images)
    handle.remove()
    acts = cap[0].half()
    path = tmp_path_factory.mktemp("workers") / "acts.npy"
    np.save(path, acts.numpy())
    with torch.no_grad():
        z = reference_tail(model, acts.float())
    labels = trained_like_labels(z, VALID, seed=0).numpy()
    ablation = Ablation.from_means(acts.float().mean((0, 2, 3)).numpy(), None, "channel", (832, 7, 7))
    return model, str(path), labels, ablation


def _job(case, threads=1, make_path=None):
    model, acts_file, labels, ablation = case
    return UnitJob(acts_file, labels, ablation, VALID, K, batch_size=4, threads=threads, make_path=make_path)


@pytest.mark.parametrize("int8_fast", [False, True])
def test_workers_give_the_tallies_of_one_process(case, int8_fast):
    """Two workers, one thread each, over 4 units (2 chunks of features x 2 segments of images): every
    tally array equals the one this process computes with one thread, bit for bit; the pairs per tier
    add up to the units' pairs."""
    model = case[0]
    features = (0, 5, 100, 411, 600, 831)
    units = [Unit(ch, s, e) for ch in (features[:3], features[3:]) for s, e in ((0, 3), (3, 6))]
    # the int8 tier's "auto" times int8 against float32 in each process: under load two processes can decide
    # differently (same tallies, other tiers), so the comparison fixes the speed check's answer, both ways
    make_path = functools.partial(InceptionMixed5aPath, inception_parts(model), compile=False, int8_fast=int8_fast)
    job = _job(case, threads=1, make_path=make_path)
    got = {}
    progress = []
    with WorkerPool(job, 2) as pool:
        assert pool.description["path"] == "inception_mixed5a_rank1"
        pool.run(units, lambda unit, result: got.__setitem__(unit, result), progress.append)
    assert set(got) == set(units)
    assert sum(int(r.sums["n_bounded"].sum()) for r in got.values()) > 0  # the path's tiers ran, not only skips
    assert sum(progress) == sum(u.pairs for u in units)  # progress counts every pair once
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = make_path()
        acts = np.load(job.acts_file, mmap_mode="r")
        for unit in units:
            want = evaluate_unit(path, acts, job, unit)
            for name, value in want.sums.items():
                np.testing.assert_array_equal(got[unit].sums[name], value, err_msg=f"{unit}: {name}")
            assert got[unit].fallback == want.fallback
            assert got[unit].tiers == want.tiers
            n_pairs = got[unit].sums["n_skipped"] + got[unit].sums["n_bounded"] + got[unit].sums["n_exact"]
            assert (n_pairs == unit.end - unit.start).all()
            assert got[unit].peak_rss_mb > 0 and got[unit].cpu_seconds > 0
    finally:
        torch.set_num_threads(threads)


def test_a_worker_error_is_raised_with_its_traceback(case):
    """A path that cannot be built (a module without InceptionV1's parts) fails in the worker; the
    parent raises WorkerError with the worker's own error."""
    job = _job(case, make_path=functools.partial(InceptionMixed5aPath, torch.nn.Module(), compile=False))
    with pytest.raises(WorkerError, match=r"(?s)worker \d failed:.*AttributeError.*mixed5b"):
        with WorkerPool(job, 2):
            pass


def test_a_dead_worker_is_reported(case):
    """A worker that exits without a word (as when the system kills it for memory) is noticed."""
    job = _job(case, make_path=functools.partial(os._exit, 3))
    with pytest.raises(WorkerError, match=r"stopped \(exit code 3.*importance.workers: 1"):
        with WorkerPool(job, 1):
            pass


def _inception_run(root, **importance):
    """A run folder of random-init InceptionV1 (trained-like scales) at mixed5a on 8 synthetic images."""
    from autointerp.config import config_from_dict
    from autointerp.runfolder import RunContext
    from autointerp.stages.activations import run_activations

    cfg = config_from_dict(
        {
            "name": "workers",
            "seed": 0,
            "device": "cpu",
            "model": {"name": "inceptionv1", "pretrained": False},
            "layer": "mixed5a",
            "dataset": {"type": "synthetic", "options": {"n_images": 8, "seed": 3}},
            "label_mapping": {"type": "identity", "offset": 1},  # output 0 is a dummy
            "activations": {"batch_size": 4, "top_k": 2, "dtype": "float16"},
            "importance": {"k": 10, "features": [0, 5, 411, 831], "chunk_size": 2, "segment_images": 4,
                           "batch_size": 4, "fast_path": {"options": {"compile": False}}, **importance},
        }
    )  # fmt: skip
    ctx = RunContext.create(cfg, root)
    ctx.model.module.load_state_dict(rescaled_inceptionv1(seed=0).state_dict())
    run_activations(ctx)
    return ctx


def test_stage_with_workers_resumes_and_equals_one_process(tmp_path):
    """The stage with 2 workers over 4 units (2 chunks x 2 segments): a resumed run recomputes only
    the missing unit and ends byte-identical; one process gives the same counts."""
    import json

    from autointerp.stages.importance import run_importance

    ctx = _inception_run(tmp_path / "run", workers=2)
    run_importance(ctx)
    summary = json.loads((ctx.paths.importance / "summary.json").read_text())["exact"]
    assert summary["workers"] == 2 and summary["threads_per_worker"] >= 1 and summary["worker_peak_rss_mb"] > 0
    assert summary["path"] == "inception_mixed5a_rank1" and summary["segments"] == 2
    whole = ctx.paths.importance_csv.read_bytes()
    units = sorted((ctx.paths.importance / "chunks" / "exact").glob("chunk_*_images_*.npz"))
    assert len(units) == 4
    kept = {u: u.stat().st_mtime_ns for u in units[1:]}
    units[0].unlink()  # as if interrupted before the last unit was saved
    for csv in ctx.paths.importance.glob("importance*.csv"):
        csv.unlink()
    run_importance(ctx)
    assert ctx.paths.importance_csv.read_bytes() == whole
    assert all(u.stat().st_mtime_ns == t for u, t in kept.items())  # saved units were reused, not redone

    one = _inception_run(tmp_path / "one", workers=1)
    run_importance(one)
    assert json.loads((one.paths.importance / "summary.json").read_text())["exact"]["workers"] == 1
    cols = ("feature_ind", "importance", "correct_to_wrong", "wrong_to_correct", "n_skipped", "n_bounded", "n_exact")

    def counts(path):
        import csv

        with open(path, newline="") as fh:
            return [tuple(r[c] for c in cols) for r in csv.DictReader(fh)]

    assert counts(one.paths.importance_csv) == counts(ctx.paths.importance_csv)
