"""The demo pipeline's importance, visualize and rate stages with the local executor and with Ray, same run.

One demo run folder gets its activations and examples once (not timed). Then, alternating per round,
the three stages run from scratch with ``executor: local`` (this process, as by default) and with
``executor: ray`` on a Ray cluster started here (``ray.init(num_cpus=CPUS)``, started before the
timing: starting a cluster is a one-off cost per session, not per stage); the best round of each is
kept. ``identical`` compares the bytes of importance.csv, every ratings CSV and every visualisation
PNG between the two.

    python benchmarks/bench_executor.py [--images 2000] [--steps 64] [--rounds 2] [--cpus 2]

Last line: ``local_s: X ray_s: Y overhead: Z identical: true|false`` (overhead = ray_s / local_s - 1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from autointerp.cli.core import DEMO_CONFIG
from autointerp.config import load_config
from autointerp.runfolder import RunContext

TIMED = ("importance", "visualize", "rate")


def outputs(run: Path) -> dict[str, bytes]:
    """importance.csv, the ratings CSVs and the visualisation PNGs, by path in the run folder."""
    files = [run / "importance" / "importance.csv", *sorted((run / "ratings").glob("*.csv"))]
    files += sorted((run / "visualizations").glob("*/vis_*.png"))
    return {str(p.relative_to(run)): p.read_bytes() for p in files}


def timed_stages(base: Path, out: Path, overrides: list[str], executor: str) -> float:
    """Seconds for the timed stages in a copy of ``base`` (activations and examples already there)."""
    from autointerp.pipeline import run_pipeline

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(base, out)
    ctx = RunContext.open(out, overrides)
    ctx.config.executor = executor
    t0 = time.perf_counter()
    run_pipeline(ctx, only=list(TIMED))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000, help="demo images (the demo's default)")
    ap.add_argument("--steps", type=int, default=64, help="visualisation steps (the demo's default)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the local Ray cluster")
    args = ap.parse_args()
    os.environ.setdefault("AUTOINTERP_NO_PROGRESS", "1")
    import ray

    from autointerp.pipeline import run_pipeline

    overrides = [f"dataset.options.n_images={args.images}", f"visualize.steps={args.steps}"]
    best = {"local": float("inf"), "ray": float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        ctx = RunContext.create(load_config(DEMO_CONFIG, overrides), base)
        run_pipeline(ctx, only=["activations", "examples"])
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            for r in range(args.rounds):
                for executor in ("local", "ray") if r % 2 == 0 else ("ray", "local"):
                    seconds = timed_stages(base, Path(tmp) / executor, overrides, executor)
                    best[executor] = min(best[executor], seconds)
                    print(f"round {r}: {executor} {seconds:.2f} s")
            local, remote = outputs(Path(tmp) / "local"), outputs(Path(tmp) / "ray")
        finally:
            ray.shutdown()
    identical = sorted(local) == sorted(remote) and all(local[k] == remote[k] for k in local)
    print(f"images: {args.images} steps: {args.steps} ray cpus: {args.cpus} files compared: {len(local)}")
    overhead = best["ray"] / best["local"] - 1.0
    print(
        f"local_s: {best['local']:.2f} ray_s: {best['ray']:.2f} overhead: {overhead:.3f} "
        f"identical: {str(identical).lower()}"
    )


if __name__ == "__main__":
    main()
