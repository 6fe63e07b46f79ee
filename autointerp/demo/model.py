"""The demo model: a small CNN trained on the synthetic world, and its adapter (``demo_cnn``).

Architecture (input 64×64 RGB in [0, 1]; each ``convN`` block is conv 3×3 → batch norm → ReLU,
and its activation is the block's ReLU output)::

    normalize  (x - 0.5) / 0.25
    conv1      3 → 16, stride 2          64×64 → 32×32
    conv2      16 → 32                   32×32, then max-pool 2 → 16×16
    conv3      32 → 32                   16×16, then max-pool 2 → 8×8
    conv4      32 → 32                   8×8
    gap        global average pool + flatten
    fc         32 → 16 classes (shape × colour)

``pretrained=True`` loads weights trained on a synthetic training set that is disjoint from the
demo dataset (a different generator seed), training them on first use (deterministic, about half
a minute on two CPU cores) and caching them under ``$AUTOINTERP_CACHE`` (default
``~/.cache/autointerp``) as ``demo_cnn_<hash of the training settings>.pt``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autointerp.atomic import atomic_path
from autointerp.demo import synthetic
from autointerp.errors import ConfigError, UserError, WeightsError
from autointerp.models.base import ModelAdapter, register_model

#: the layer the demo studies: 32 channels at 16×16, after two of the four blocks have built colour
#: and edge detectors, and early enough that channels still respond to one concept each
DEFAULT_LAYER = "conv3"
#: bump when the architecture or training loop changes (part of the cache key)
MODEL_VERSION = 1

_BLOCKS: tuple[tuple[str, int, int, int], ...] = (  # name, in, out, stride
    ("conv1", 3, 16, 2),
    ("conv2", 16, 32, 1),
    ("conv3", 32, 32, 1),
    ("conv4", 32, 32, 1),
)
_POOL_AFTER = ("conv2", "conv3")


@dataclass(frozen=True)
class TrainSettings:
    """Everything that determines the trained weights (hashed into the cache file name)."""

    n_train: int = 4000
    n_val: int = 500
    epochs: int = 8
    batch_size: int = 64
    max_lr: float = 6e-3
    weight_decay: float = 1e-4
    seed: int = 0
    image_size: int = 64

    def key(self) -> str:
        """Short hash of the settings, the generator and the model version."""
        blob = json.dumps(
            {**asdict(self), "generator": synthetic.GENERATOR_VERSION, "model": MODEL_VERSION}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def train_seed(self) -> int:
        """Generator seed of the training images (far from the demo dataset's seeds 0, 1, ...)."""
        return 1_000_003 + 2 * self.seed

    @property
    def val_seed(self) -> int:
        """Generator seed of the held-out validation images."""
        return 1_000_004 + 2 * self.seed


class Normalize(nn.Module):
    """Map [0, 1] images to roughly zero mean, unit variance: ``(x - 0.5) / 0.25``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) / 0.25


class DemoCNN(nn.Sequential):
    """Four conv blocks, global average pool, linear classifier; the children are the named stages
    (``normalize, conv1, conv2, pool2, conv3, pool3, conv4, gap, fc``), run in order."""

    def __init__(self, n_classes: int = synthetic.N_CLASSES) -> None:
        modules: dict[str, nn.Module] = {"normalize": Normalize()}
        for name, cin, cout, stride in _BLOCKS:
            modules[name] = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            )
            if name in _POOL_AFTER:
                modules[f"pool{name[-1]}"] = nn.MaxPool2d(2)
        modules["gap"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        modules["fc"] = nn.Linear(_BLOCKS[-1][2], n_classes)
        super().__init__(OrderedDict(modules))


def build_demo_cnn(seed: int | None = None) -> DemoCNN:
    """A randomly initialised :class:`DemoCNN`; with ``seed``, initialised from that seed without
    touching the global torch random state."""
    if seed is None:
        return DemoCNN()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DemoCNN()


def default_cache_dir() -> Path:
    """``$AUTOINTERP_CACHE`` or ``~/.cache/autointerp``."""
    return Path(os.environ.get("AUTOINTERP_CACHE") or Path.home() / ".cache" / "autointerp")


def cache_path(settings: TrainSettings, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the weights trained with ``settings`` are cached."""
    return Path(cache_dir or default_cache_dir()) / f"demo_cnn_{settings.key()}.pt"


def _images_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


def evaluate(module: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``module`` on uint8 (N, H, W, 3) images."""
    module.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = _images_tensor(images[start : start + batch_size])
            pred = module(x).argmax(1).numpy()
            correct += int((pred == labels[start : start + batch_size]).sum())
    return correct / max(len(images), 1)


def train_demo_cnn(settings: TrainSettings = TrainSettings(), verbose: bool = True) -> tuple[nn.Module, dict]:
    """Train a DemoCNN on freshly generated images; returns the module (eval mode) and a summary.

    Deterministic for given settings on a given machine: seeded initialisation and shuffling, and
    ``torch.use_deterministic_algorithms`` for the duration of training.
    """
    t0 = time.perf_counter()
    train_images, train_concepts = synthetic.generate(settings.n_train, settings.train_seed, settings.image_size)
    train_labels = synthetic.labels_from_concepts(train_concepts)
    val_images, val_concepts = synthetic.generate(settings.n_val, settings.val_seed, settings.image_size)
    val_labels = synthetic.labels_from_concepts(val_concepts)
    x_train = _images_tensor(train_images)
    y_train = torch.from_numpy(train_labels)

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        module = build_demo_cnn(settings.seed)
        optimizer = torch.optim.AdamW(module.parameters(), lr=settings.max_lr, weight_decay=settings.weight_decay)
        steps_per_epoch = (settings.n_train + settings.batch_size - 1) // settings.batch_size
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=settings.max_lr, total_steps=settings.epochs * steps_per_epoch
        )
        generator = torch.Generator().manual_seed(settings.seed)
        for epoch in range(settings.epochs):
            module.train()
            order = torch.randperm(settings.n_train, generator=generator)
            total_loss = 0.0
            for start in range(0, settings.n_train, settings.batch_size):
                idx = order[start : start + settings.batch_size]
                loss = F.cross_entropy(module(x_train[idx]), y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total_loss += float(loss.detach()) * len(idx)
            if verbose:
                print(
                    f"demo_cnn: epoch {epoch + 1}/{settings.epochs} loss {total_loss / settings.n_train:.3f} "
                    f"({time.perf_counter() - t0:.0f}s)",
                    file=sys.stderr,
                )
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    module.eval()
    summary = {
        "train_accuracy": evaluate(module, train_images, train_labels),
        "val_accuracy": evaluate(module, val_images, val_labels),
        "chance_accuracy": 1.0 / synthetic.N_CLASSES,
        "train_seconds": round(time.perf_counter() - t0, 2),
        "settings": asdict(settings),
    }
    if verbose:
        print(
            f"demo_cnn: trained in {summary['train_seconds']:.0f}s, held-out accuracy "
            f"{summary['val_accuracy']:.3f} (chance {summary['chance_accuracy']:.3f})",
            file=sys.stderr,
        )
    return module, summary


def load_or_train(
    settings: TrainSettings = TrainSettings(), cache_dir: str | os.PathLike[str] | None = None, verbose: bool = True
) -> tuple[nn.Module, dict]:
    """The trained DemoCNN for ``settings``: from the cache, or trained now and cached atomically."""
    path = cache_path(settings, cache_dir)
    if path.exists():
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            module = build_demo_cnn()
            module.load_state_dict(checkpoint["state_dict"])
            return module.eval(), checkpoint["summary"]
        except Exception as exc:  # a corrupt cache entry is retrained, never trusted
            print(f"demo_cnn: ignoring unreadable cache {path} ({exc}); retraining", file=sys.stderr)
    if verbose:
        print(f"demo_cnn: training the demo model (first use; cached at {path})", file=sys.stderr)
    module, summary = train_demo_cnn(settings, verbose=verbose)
    try:
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save({"state_dict": module.state_dict(), "summary": summary}, tmp)
    except (OSError, UserError) as exc:  # unwritable cache folder: keep going, just uncached
        print(f"demo_cnn: could not cache weights at {path} ({exc}); continuing without cache", file=sys.stderr)
    return module, summary


def load_weights(module: nn.Module, path: str | os.PathLike[str]) -> dict:
    """Load a checkpoint written by :func:`load_or_train` (or a bare state dict) into ``module``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: demo_cnn weights file not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable torch checkpoint ({type(exc).__name__})") from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict or {{'state_dict': ...}} checkpoint")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise WeightsError(f"{path}: weights do not fit demo_cnn ({detail})") from None
    return checkpoint.get("summary", {}) if isinstance(checkpoint, dict) else {}


class DemoCNNAdapter(ModelAdapter):
    """Adapter for the demo CNN: 64 px input in [0, 1], 16 outputs (shape × colour classes)."""

    name = "demo_cnn"
    input_size = 64
    num_outputs = synthetic.N_CLASSES

    def __init__(self, module: nn.Module, summary: dict | None = None) -> None:
        super().__init__(module)
        #: training summary (accuracies, seconds, settings) when the weights were trained
        self.summary: dict[str, Any] = summary or {}
        self._order = [name for name, _ in module.named_children()]
        self.class_keys = synthetic.class_keys()

    def layers(self) -> dict[str, int]:
        return {name: cout for name, _, cout, _ in _BLOCKS}

    def _split(self, layer: str) -> int:
        self.check_layer(layer)
        return self._order.index(layer) + 1

    def head(self, layer: str) -> nn.Module:
        cut = self._split(layer)
        return nn.Sequential(*[getattr(self.module, n) for n in self._order[:cut]]).eval()

    def tail(self, layer: str) -> nn.Module:
        cut = self._split(layer)
        return nn.Sequential(*[getattr(self.module, n) for n in self._order[cut:]]).eval()


_TRAIN_FIELDS = {f.name for f in fields(TrainSettings)}


@register_model("demo_cnn")
def create_demo_cnn(
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    verbose: bool = True,
    **training: Any,
) -> DemoCNNAdapter:
    """The embedded demo CNN (trained on the demo world on first use, then cached).

    ``weights``: a checkpoint file (wins over ``pretrained``). ``pretrained=True``: the cached
    trained weights, training them on first use; ``False``: random initialisation (seeded by
    ``seed``, default 0). Other options are :class:`TrainSettings` fields (``n_train``, ``epochs``,
    ``seed``, ...), which change the training and hence the cache key.
    """
    unknown = sorted(set(training) - _TRAIN_FIELDS)
    if unknown:
        valid = ", ".join(["weights", "pretrained", "cache_dir", "verbose", *sorted(_TRAIN_FIELDS)])
        raise ConfigError(f"model.{unknown[0]}: unknown option for demo_cnn; valid: {valid}")
    try:
        settings = TrainSettings(**training)
    except TypeError as exc:  # pragma: no cover - unknown keys are caught above
        raise ConfigError(f"model: bad demo_cnn option ({exc})") from None
    if weights is not None:
        module = build_demo_cnn()
        summary = load_weights(module, weights)
        return DemoCNNAdapter(module.eval(), summary)
    if pretrained:
        module, summary = load_or_train(settings, cache_dir, verbose=verbose)
        return DemoCNNAdapter(module, summary)
    return DemoCNNAdapter(build_demo_cnn(settings.seed).eval())
