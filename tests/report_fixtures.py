"""A small synthetic run folder for report tests: importance, two automatic raters, a human survey,
feature cards, dataset examples and a cumulative-ablation curve (planted relationships)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from autointerp.config import RunConfig
from autointerp.runfolder import RunContext, feature_dirname

N_FEATURES = 48
HEADER = "model,layer,neuron,question1,text_question,question3,question4,question5,question6,participant"


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def build_run(root: Path, with_media: bool = True) -> RunContext:
    """Write the synthetic run folder; the 'good' rater follows importance, 'noise' does not."""
    cfg = RunConfig(name="synthetic", output_dir=str(root), layer="mixed5a", seed=0)
    cfg.report.top_n = 8
    cfg.report.middle_n = 8
    cfg.report.bootstrap = 300
    cfg.report.permutations = 300
    ctx = RunContext.create(cfg, root)
    rng = np.random.default_rng(0)
    importance = np.round(rng.gamma(2.0, 8.0, N_FEATURES) - 5).astype(int)
    lines = ["model,layer,feature_ind,importance"] + [f"demo,mixed5a,{f},{v}" for f, v in enumerate(importance)]
    (root / "importance").mkdir(parents=True, exist_ok=True)
    (root / "importance" / "importance.csv").write_text("\n".join(lines) + "\n")
    (root / "importance" / "cumulative_ablation.csv").write_text(
        "n_ablated,top1,top5\n" + "".join(f"{n},{0.8 - 0.05 * n:.3f},{0.95 - 0.04 * n:.3f}\n" for n in range(8))
    )
    rank = importance.argsort().argsort() / (N_FEATURES - 1)
    good = np.clip(rank + rng.normal(0, 0.1, N_FEATURES), 0, 1)
    ratings = root / "ratings"
    ratings.mkdir()
    for name, values in (("good", good), ("noise", rng.random(N_FEATURES))):
        rows = ["feature_ind,I,q1,q3,q4"] + [f"{f},{v:.4f},{v:.4f},{v:.4f},{v:.4f}" for f, v in enumerate(values)]
        (ratings / f"{name}.csv").write_text("\n".join(rows) + "\n")
        (ratings / f"{name}.json").write_text(
            json.dumps(
                {"rater": name, "higher_is_better": True, "components": ["q1", "q3", "q4"], "options": {}, "seed": 0}
            )
        )
    # Two survey participants who agree with 'good' on the answer scale (1..5).
    survey = [HEADER]
    for p in ("ann", "bob"):
        for f in range(0, N_FEATURES, 2):
            q = int(np.clip(np.round(1 + 4 * good[f] + rng.normal(0, 0.4)), 1, 5))
            survey.append(f"demo,mixed5a,{f},{q},text,{q},{q},3,3,{p}")
    (root / "survey.csv").write_text("\n".join(survey) + "\n")
    cfg.rate.human = [str(root / "survey.csv")]
    from autointerp.atomic import write_text
    from autointerp.config import dump_config

    write_text(ctx.paths.config, dump_config(cfg))
    if with_media:
        vis_index, ex_index = {}, {}
        for f in range(N_FEATURES):
            d = feature_dirname(f)
            colour = (f * 5 % 256, 80, 200)
            _png(root / "visualizations" / d / "card.png", colour, (40, 30))
            _png(root / "visualizations" / d / "vis_0.png", colour)
            _png(root / "examples" / d / "top_0.png", colour)
            vis_index[str(f)] = {
                "vis": [f"visualizations/{d}/vis_0.png"],
                "vis_activation": [1.0],
                "card": f"visualizations/{d}/card.png",
                "quality": {"vis_max": 2.0, "example_max": 1.0, "ratio": 2.0, "ok": f != 3},
                "flags": [],
            }
            ex_index[str(f)] = {
                "top": [{"path": f"examples/{d}/top_0.png", "dataset_index": f, "activation": 1.0}],
                "bottom": [],
            }
        (root / "visualizations" / "index.json").write_text(
            json.dumps({"seed": 0, "settings": {}, "features": vis_index})
        )
        (root / "examples" / "index.json").write_text(json.dumps({"features": ex_index}))
    return RunContext.open(root)
