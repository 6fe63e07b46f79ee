"""Dataset loaders and label mappings, on planted files and on the real shared files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autointerp.config import DatasetConfig, LabelMappingConfig
from autointerp.data import load_dataset, subset_indices
from autointerp.data.imagefolder import ImageFolderDataset
from autointerp.data.labels import model_targets, read_map_clsloc
from autointerp.data.npz import NpzDataset
from autointerp.errors import DataError


def _planar(images: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) -> downsampled-ImageNet rows (R plane, G plane, B plane)."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


@pytest.fixture()
def npz_file(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    labels = np.array([3, 1, 2, 3, 1, 2])
    path = tmp_path / "tiny.npz"
    np.savez(path, data=_planar(images), labels=labels)
    return path, images, labels


def test_npz_roundtrip_planar_layout(npz_file) -> None:
    path, images, labels = npz_file
    ds = NpzDataset(path)
    assert len(ds) == 6
    np.testing.assert_array_equal(ds.image(4), images[4])
    np.testing.assert_array_equal(ds.labels, labels)
    batch = ds.batch([0, 1], size=8)
    assert batch.shape == (2, 3, 8, 8)
    np.testing.assert_allclose(batch[1].permute(1, 2, 0).numpy() * 255, images[1], atol=1e-3)


def test_bilinear_upscale_matches_reference(npz_file) -> None:
    import torch
    import torch.nn.functional as F

    path, images, _ = npz_file
    up = NpzDataset(path).batch([2], size=28)
    ref = F.interpolate(
        torch.from_numpy(images[2:3]).permute(0, 3, 1, 2).float() / 255,
        size=(28, 28),
        mode="bilinear",
        align_corners=False,
    )
    torch.testing.assert_close(up, ref)


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"images": np.zeros((2, 12), np.uint8), "labels": np.ones(2)}, "missing key 'data'"),
        ({"data": np.zeros((2, 12), np.float32), "labels": np.ones(2)}, "2-D uint8"),
        ({"data": np.zeros((2, 13), np.uint8), "labels": np.ones(2)}, "expected 3*S*S"),
        ({"data": np.zeros((2, 12), np.uint8), "labels": np.ones(3, int)}, "3 entries for 2 images"),
        ({"data": np.zeros((2, 12), np.uint8), "labels": np.ones(2) * 0.5}, "must hold integers"),
    ],
)
def test_npz_bad_keys_and_shapes(tmp_path: Path, arrays: dict, needle: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as info:
        NpzDataset(path)
    assert needle in str(info.value) and str(path) in str(info.value)


def test_npz_missing_and_corrupt_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        NpzDataset(tmp_path / "nope.npz")
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        NpzDataset(bad)


def _make_folder(root: Path) -> None:
    for cls, colour in (("n002", (0, 255, 0)), ("n001", (255, 0, 0))):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (10, 12), colour).save(root / cls / f"{cls}_{i}.png")
    (root / "n001" / "notes.txt").write_text("ignored")


def test_imagefolder_sorted_classes_and_keys(tmp_path: Path) -> None:
    _make_folder(tmp_path)
    ds = ImageFolderDataset(tmp_path)
    assert ds.class_keys == {0: "n001", 1: "n002"}
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1])
    assert ds.image(0)[0, 0].tolist() == [255, 0, 0]
    assert ds.image(0).shape == (12, 10, 3)


def test_imagefolder_corrupt_and_missing_images(tmp_path: Path) -> None:
    _make_folder(tmp_path)
    ds = ImageFolderDataset(tmp_path)
    (tmp_path / "n001" / "n001_0.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="n001_0.png: cannot read image"):
        ds.image(0)
    (tmp_path / "n001" / "n001_1.png").unlink()
    with pytest.raises(DataError, match="n001_1.png: image file missing"):
        ds.image(1)
    with pytest.raises(DataError, match="image folder not found"):
        ImageFolderDataset(tmp_path / "nowhere")


def test_subset_is_deterministic_per_class_then_max() -> None:
    labels = np.array([0, 0, 1, 0, 1, 2, 2, 1])
    np.testing.assert_array_equal(subset_indices(labels, None, 2), [0, 1, 2, 4, 5, 6])
    np.testing.assert_array_equal(subset_indices(labels, 3, 2), [0, 1, 2])
    np.testing.assert_array_equal(subset_indices(labels, 5, None), [0, 1, 2, 3, 4])


def test_label_mappings_identity_file_and_errors(tmp_path: Path, npz_file) -> None:
    path, _, labels = npz_file
    ds = NpzDataset(path)
    np.testing.assert_array_equal(model_targets(ds, LabelMappingConfig(type="identity", offset=2), 10), labels + 2)
    with pytest.raises(DataError, match="outside the model's 0..2: mismatched label mapping"):
        model_targets(ds, LabelMappingConfig(type="identity"), 3)
    valid = np.ones(10, bool)
    valid[3] = False
    with pytest.raises(DataError, match="dummy/background output"):
        model_targets(ds, LabelMappingConfig(type="identity"), 10, valid)
    table = tmp_path / "map.csv"
    table.write_text("dataset_label,model_output\r\n1,7\r\n2,8\r\n3,9\r\n")
    np.testing.assert_array_equal(model_targets(ds, LabelMappingConfig(type="file", path=str(table)), 10), labels + 6)
    table.write_text("dataset_label,model_output\n1,7\n")
    with pytest.raises(DataError, match="no row for dataset label '3'"):
        model_targets(ds, LabelMappingConfig(type="file", path=str(table)), 10)


def test_devkit_mapping_rejects_unknown_ids(tmp_path: Path, npz_file) -> None:
    path, _, _ = npz_file
    cls = tmp_path / "map_clsloc.txt"
    cls.write_text("n003 1 c\nn001 2 a\n")
    ds = NpzDataset(path)  # labels include 3, not a devkit id in this 2-class map
    with pytest.raises(DataError, match="label 3 is not a devkit id"):
        model_targets(ds, LabelMappingConfig(type="devkit", map_clsloc=str(cls), offset=1), 10)
    bad = tmp_path / "bad_map.txt"
    bad.write_text("n001 one a\n")
    with pytest.raises(DataError, match="bad_map.txt:1: expected 'wnid id name'"):
        read_map_clsloc(bad)


# ---------------------------------------------------------------- the real shared files
def test_real_npz_and_folder_agree_on_classes(shared_dir: Path) -> None:
    npz = load_dataset(DatasetConfig(type="npz", path=str(shared_dir / "data/imagenet_sample_64.npz")))
    folder = load_dataset(DatasetConfig(type="imagefolder", path=str(shared_dir / "data/imagenet_sample_224")))
    assert len(npz) == len(folder) == 1000
    assert npz.image(0).shape == (64, 64, 3) and folder.image(0).shape == (224, 224, 3)
    clsloc = str(shared_dir / "reference/imagenet/map_clsloc.txt")
    for kind, offset, n_out in (("devkit", 1, 1008), ("sorted_wnid", 1, 1001)):
        mapping = LabelMappingConfig(type=kind, map_clsloc=clsloc, offset=offset)
        t_npz = model_targets(npz, mapping, n_out)
        t_folder = model_targets(folder, mapping, n_out)
        # one image per class in both: the same set of 1000 distinct outputs
        assert sorted(t_npz.tolist()) == sorted(t_folder.tolist()) == list(range(offset, offset + 1000))
    # devkit: InceptionV1 output i is devkit id i, and the npz labels are devkit ids
    devkit = model_targets(npz, LabelMappingConfig(type="devkit", map_clsloc=clsloc, offset=1), 1008)
    np.testing.assert_array_equal(devkit, npz.labels)
    # sorted wnid: output 1 is the alphabetically first wnid (Coral's imagenet_labels.txt line 1 = tench)
    coral = model_targets(npz, LabelMappingConfig(type="sorted_wnid", map_clsloc=clsloc, offset=1), 1001)
    names = (shared_dir / "models/coral/imagenet_labels.txt").read_text().splitlines()
    wnids = np.load(shared_dir / "data/imagenet_sample_64.npz")["wnids"]
    assert names[int(coral[list(wnids).index("n01440764")])].startswith("tench")
    assert names[int(coral[list(wnids).index("n01530575")])].startswith("brambling")


def test_real_subset_with_max_images(shared_dir: Path) -> None:
    ds = load_dataset(DatasetConfig(type="npz", path=str(shared_dir / "data/imagenet_sample_64.npz"), max_images=5))
    assert len(ds) == 5
    np.testing.assert_array_equal(ds.image(4), NpzDataset(shared_dir / "data/imagenet_sample_64.npz").image(4))
