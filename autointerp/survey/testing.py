"""Helpers to test the survey for real: a small fake run folder and a real server in a subprocess.

Used by ``tests/test_survey*.py``; also handy to try the app by hand::

    python -c "from autointerp.survey.testing import make_fake_run; make_fake_run('/tmp/fake_run')"
    python -m autointerp.survey serve /tmp/fake_run
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from autointerp.runfiles import write_activation_meta, write_importance, write_index
from autointerp.runfolder import EXAMPLES_DIR, VISUALIZATIONS_DIR, RunPaths, feature_relpath

REPO = Path(__file__).resolve().parents[2]


def _png(path: Path, rgb: tuple[int, int, int], size: int, stripe: int) -> None:
    from PIL import Image

    img = np.empty((size, size, 3), np.uint8)
    img[:] = rgb
    img[:, stripe % size] = 255 - np.asarray(rgb, np.uint8)  # a visible, index-specific mark
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def make_fake_run(
    root: str | Path,
    features: Sequence[int] = (3, 7, 11),
    importance: dict[int, float] | None = None,
    n_vis: int = 4,
    n_examples: int = 8,
    size: int = 24,
    model: str = "FakeNet",
    layer: str = "mixed5a",
) -> Path:
    """Write a run folder with the survey's inputs: config.yaml, activations/meta.json, importance.csv,
    ``n_vis`` visualisations and ``n_examples`` dataset examples (small PNGs) per feature."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = RunPaths(root)
    paths.config.write_text(f"model:\n  name: {model.lower()}\nlayer: {layer}\n", encoding="utf-8")
    write_activation_meta(paths.activations, {"model": model, "layer": layer})
    imp = importance if importance is not None else {f: float(i) for i, f in enumerate(features)}
    write_importance(
        paths.importance_csv,
        [{"model": model, "layer": layer, "feature_ind": f, "importance": v} for f, v in imp.items()],
    )
    vis_index: dict[str, dict] = {}
    ex_index: dict[str, dict] = {}
    for f in features:
        base = ((f * 53) % 200, (f * 97) % 200, (f * 31) % 200)
        vis = []
        for i in range(n_vis):
            rel = feature_relpath(VISUALIZATIONS_DIR, f, f"vis_{i}.png")
            _png(root / rel, base, size, i)
            vis.append(rel)
        top = []
        for i in range(n_examples):
            rel = feature_relpath(EXAMPLES_DIR, f, f"top_{i}.png")
            _png(root / rel, tuple(255 - c for c in base), size, i)  # type: ignore[arg-type]
            top.append({"path": rel, "dataset_index": 100 * f + i, "activation": float(n_examples - i)})
        vis_index[str(f)] = {"vis": vis, "vis_activation": [1.0] * n_vis}
        ex_index[str(f)] = {"top": top, "bottom": []}
    write_index(paths.visualizations_index, vis_index, seed=0, settings={})
    write_index(paths.examples_index, ex_index)
    return root


def token_for(run: str | Path, participant: str, db: str | Path | None = None) -> str:
    """The signed access token of ``participant`` (what an invitation link carries), from the survey's secret."""
    from autointerp.survey.access import load_secret, sign
    from autointerp.survey.loader import default_db_path

    survey_dir = Path(db).parent if db is not None else default_db_path(run).parent
    return sign(load_secret(survey_dir), participant)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(run: str | Path, *args: str, timeout: float = 60.0, port: int | None = None) -> Iterator[str]:
    """Start ``python -m autointerp.survey serve RUN ARGS`` on a free port (or ``port``); yield its base URL;
    stop it after."""
    import httpx

    port = port or free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "autointerp.survey", "serve", str(run), "--port", str(port), *args]
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    scheme = "https" if "--ssl-certfile" in args else "http"  # a test certificate: not verified below
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                out = log.read()
                raise RuntimeError(f"survey server exited with {proc.returncode}:\n{out}")
            try:
                if httpx.get(f"{url}/api/questions", timeout=2, verify=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"survey server did not start within {timeout} s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
