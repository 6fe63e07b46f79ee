"""DreamSim (Fu et al., 2023) image embedder: the similarity of the published MIS.

DreamSim's perceptual *distance* between two images is ``1 − cos(e_a, e_b)`` of its embeddings
(the default ``ensemble``: DINO, CLIP and OpenCLIP ViT-B/16 features, LoRA-tuned on human
similarity judgements). With ``normalize_embeds=True`` (as here) the package centres and
L2-normalises each embedding; this embedder returns those unit vectors, so the cosine similarity
every rater computes is exactly ``1 − DreamSim distance``, and a difference of DreamSim distances
is the negated difference of cosines (the ``mis`` rater's ``d``).

Config (``rate.embedder``): ``type: dreamsim``, ``dreamsim_type`` (``ensemble``, ``dino_vitb16``,
``clip_vitb32``, ``open_clip_vitb32``, ``dinov2_vitb14``, ``synclr_vitb16``), ``weights`` (a folder
holding the unpacked DreamSim checkpoint, or the release ``.zip``; default
``$AUTOINTERP_CACHE/dreamsim/<dreamsim_type>``, ``AUTOINTERP_CACHE`` defaulting to
``~/.cache/autointerp``), ``device``, ``batch_size``.

Weights: the ``dreamsim`` package (the ``[dreamsim]`` extra: ``pip install 'autointerp[dreamsim]'``)
downloads its checkpoint from GitHub releases into the folder on first use, and the DINO backbones
through ``torch.hub`` (the ``facebookresearch/dino`` repository and its weights) into the same
folder. When files are missing and ``AUTOINTERP_OFFLINE``, ``HF_HUB_OFFLINE`` or
``TORCH_HUB_OFFLINE`` is set, or github.com is unreachable, loading fails at once with a one-line
:class:`~autointerp.errors.WeightsError` saying what to download and where to put it.

Preprocessing follows the package: resize to 224 × 224 (bicubic, no crop), pixels in [0, 1]; the
model normalises per backbone itself.
"""

from __future__ import annotations

import os
import socket
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.embedders import register_embedder
from autointerp.embedders._offline import network_reachable, weights_error
from autointerp.embedders.base import Embedder, file_fingerprint, resize_square, resolve_device
from autointerp.errors import ConfigError, WeightsError
from autointerp.extras import MissingExtraError, require

#: checkpoint files the ``dreamsim`` package expects in its cache folder, per model type
CHECKPOINT_FILES: dict[str, tuple[str, ...]] = {
    "ensemble": (
        "dino_vitb16_pretrain.pth",
        "open_clip_vitb16_pretrain.pth.tar",
        "clip_vitb16_pretrain.pth.tar",
        "ensemble_lora",
    ),
    "dino_vitb16": ("dino_vitb16_pretrain.pth", "dino_vitb16_single_lora"),
    "dinov2_vitb14": ("dinov2_vitb14_pretrain.pth", "dinov2_vitb14_single_lora"),
    "open_clip_vitb32": ("open_clip_vitb32_pretrain.pth.tar", "open_clip_vitb32_single_lora"),
    "clip_vitb32": ("clip_vitb32_pretrain.pth.tar", "clip_vitb32_single_lora"),
    "synclr_vitb16": ("synclr_vit_b_16.pth", "synclr_vitb16_single_lora"),
}
#: torch hub files of the DINO backbones (fetched into the same folder, which the package makes the hub dir)
HUB_FILES: dict[str, tuple[str, ...]] = {
    "dino": ("facebookresearch_dino_main", "checkpoints/dino_vitbase16_pretrain.pth"),
    "dinov2": ("facebookresearch_dinov2_main", "checkpoints/dinov2_vitb14_pretrain.pth"),
}
RELEASES = "https://github.com/ssundaram21/dreamsim/releases"
INPUT_SIZE = 224
OFFLINE_VARIABLES = ("AUTOINTERP_OFFLINE", "HF_HUB_OFFLINE", "TORCH_HUB_OFFLINE")


def offline_requested() -> str | None:
    """The first offline variable that is set (to anything but 0/false/no/off), else None."""
    for var in OFFLINE_VARIABLES:
        if os.environ.get(var, "").strip().lower() not in ("", "0", "false", "no", "off"):
            return var
    return None


def default_folder(dreamsim_type: str) -> Path:
    """``$AUTOINTERP_CACHE/dreamsim/<dreamsim_type>`` (``AUTOINTERP_CACHE`` defaults to ~/.cache/autointerp)."""
    root = Path(os.environ.get("AUTOINTERP_CACHE") or Path.home() / ".cache" / "autointerp")
    return root / "dreamsim" / dreamsim_type


def required_files(dreamsim_type: str) -> list[str]:
    """Paths (relative to the weights folder) that loading ``dreamsim_type`` reads."""
    files = list(CHECKPOINT_FILES[dreamsim_type])
    if dreamsim_type == "dinov2_vitb14":
        files += HUB_FILES["dinov2"]
    elif dreamsim_type in ("ensemble", "dino_vitb16"):
        files += HUB_FILES["dino"]
    return files


def _unpack(archive: Path, folder: Path) -> None:
    """Extract a DreamSim release .zip into ``folder`` (via a temporary sibling, so a failed
    extraction leaves nothing half-written)."""
    import shutil
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=folder))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        for item in tmp.iterdir():
            target = folder / item.name
            if not target.exists():
                os.replace(item, target)
    except zipfile.BadZipFile:
        raise WeightsError(
            f"{archive}: not a zip archive (rate.embedder.weights); expected a DreamSim checkpoint .zip from {RELEASES}"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _adapter_fingerprint(folder: Path, dreamsim_type: str) -> str:
    lora = next((f for f in CHECKPOINT_FILES[dreamsim_type] if f.endswith("_lora")), "")
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        path = folder / lora / name
        if path.is_file():
            return file_fingerprint(str(path))
    return "unknown"


@register_embedder
class DreamSimEmbedder(Embedder):
    """DreamSim embeddings, centred and L2-normalised (cosine = 1 − DreamSim distance)."""

    kind = "dreamsim"

    def __init__(
        self, dreamsim_type: str = "ensemble", weights: str | None = None, device: str = "auto", batch_size: int = 32
    ) -> None:
        super().__init__()
        if dreamsim_type not in CHECKPOINT_FILES:
            raise ConfigError(
                f"rate.embedder.dreamsim_type: {dreamsim_type!r} is unknown; expected one of "
                f"{', '.join(CHECKPOINT_FILES)}"
            )
        try:
            load_dreamsim = require("dreamsim", "dreamsim", "the dreamsim embedder").dreamsim
        except MissingExtraError:
            raise
        except Exception as exc:  # e.g. its RuntimeError for an old peft
            raise ConfigError(
                f"the dreamsim package failed to import ({str(exc).splitlines()[0][:150]}); "
                "pip install --upgrade dreamsim peft"
            ) from None
        import torch

        self.dreamsim_type = dreamsim_type
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        folder = self._weights_folder(weights, dreamsim_type)
        missing = [f for f in required_files(dreamsim_type) if not (folder / f).exists()]
        hint = (
            f"download the DreamSim {dreamsim_type} checkpoint .zip from {RELEASES} on a connected machine and "
            f"set rate.embedder.weights to it (or unpack it into {folder}); the DINO backbones come through "
            "torch.hub into the same folder"
        )
        if missing:
            why = offline_requested()
            reason = (
                f"{why} is set"
                if why
                else ("github.com is unreachable" if not network_reachable("github.com") else None)
            )
            if reason:
                raise WeightsError(
                    f"DreamSim {dreamsim_type}: {folder / missing[0]} is missing "
                    f"({len(missing)} file(s)) and {reason}; {hint}"
                )
        hub_dir = torch.hub.get_dir()
        timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)  # a stalled download fails instead of hanging
        try:
            model, _ = load_dreamsim(
                pretrained=True,
                device=self.device,
                cache_dir=str(folder),
                normalize_embeds=True,
                dreamsim_type=dreamsim_type,
            )
        except (WeightsError, ConfigError):
            raise
        except Exception as exc:
            raise weights_error(f"DreamSim {dreamsim_type} ({folder})", exc, hint) from None
        finally:
            torch.hub.set_dir(hub_dir)  # the package points torch.hub at its cache folder
            socket.setdefaulttimeout(timeout)
        self.model = model.eval() if hasattr(model, "eval") else model
        self.weights_folder = folder
        self.id = f"dreamsim:{dreamsim_type}:{_adapter_fingerprint(folder, dreamsim_type)}:{INPUT_SIZE}"

    @staticmethod
    def _weights_folder(weights: str | None, dreamsim_type: str) -> Path:
        if weights is None:
            return default_folder(dreamsim_type)
        path = Path(weights).expanduser()
        if path.suffix == ".zip":
            if not path.is_file():
                raise WeightsError(f"rate.embedder.weights: DreamSim checkpoint archive {path} not found")
            folder = default_folder(dreamsim_type)
            if any(not (folder / f).exists() for f in CHECKPOINT_FILES[dreamsim_type]):
                _unpack(path, folder)
            return folder
        if path.exists() and not path.is_dir():
            raise WeightsError(f"rate.embedder.weights: {path} is neither a folder nor a DreamSim checkpoint .zip")
        return path

    def _embed_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        arr = np.stack([resize_square(img, INPUT_SIZE, "bicubic") for img in images])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0).to(self.device)
        with torch.inference_mode():
            out: Any = self.model.embed(x)
        emb = out.float().reshape(len(images), -1).cpu().numpy()
        norm = np.linalg.norm(emb, axis=1, keepdims=True)
        return emb / np.maximum(norm, 1e-12)
