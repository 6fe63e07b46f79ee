#!/usr/bin/env bash
# Wheels of the packages that benchmarks/gpu_checks.sh needs and a lent card's image lacks (its python3 is 3.12 with
# PyTorch, torchvision, numpy, scipy, scikit-learn, typer, rich, pyyaml, pillow, matplotlib, timm, huggingface-hub,
# safetensors, regex, tqdm): pydantic, lucent (+ kornia 0.4.1, decorator), open_clip (+ ftfy, wcwidth). Versions are
# pinned to what this machine runs, so pydantic and its compiled core match. Into .whl/ in the repository root,
# which git ignores through .git/info/exclude; the device tool's `carry` takes it there.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "pydantic==$(version pydantic)" "pydantic-core==$(version pydantic-core)" annotated-types typing-inspection \
    "torch-lucent==$(version torch-lucent)" kornia==0.4.1 decorator \
    "open-clip-torch==$(version open-clip-torch)" ftfy wcwidth
ls -1 .whl
du -sh .whl
