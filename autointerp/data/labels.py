"""Explicit mapping from dataset labels to model output indices — never assumed.

* ``identity``: output = label + offset.
* ``devkit``: dataset labels are ILSVRC devkit ids 1..1000 (or class keys that are WordNet ids,
  looked up in ``map_clsloc.txt``); output = id − 1 + offset. InceptionV1: offset 1 (output i = id i).
* ``sorted_wnid``: classes ordered by sorted WordNet id (Keras / TF-slim / Coral models);
  output = position + offset (offset 1 when output 0 is 'background').
* ``file``: a CSV with columns ``dataset_label,model_output`` (dataset_label an int or a class key).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from autointerp.config import LabelMappingConfig
from autointerp.data.base import ImageDataset
from autointerp.errors import DataError


def read_map_clsloc(path: str | Path) -> dict[int, str]:
    """``map_clsloc.txt`` (lines ``wnid id name``) → {devkit id: wnid}."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: map_clsloc file not found (label_mapping.map_clsloc)")
    out: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise DataError(f"{path}:{lineno}: expected 'wnid id name', got {line!r}")
        out[int(parts[1])] = parts[0]
    return out


def _devkit_ids(ds: ImageDataset, id_to_wnid: dict[int, str]) -> np.ndarray:
    """Devkit ids of each image: labels themselves, or class keys (wnids) looked up."""
    if ds.class_keys is not None and all(str(k).startswith("n") for k in ds.class_keys.values()):
        wnid_to_id = {w: i for i, w in id_to_wnid.items()}
        missing = sorted({ds.class_keys[int(lab)] for lab in ds.labels} - set(wnid_to_id))
        if missing:
            raise DataError(
                f"class {missing[0]!r} of dataset {ds.name!r} is not in map_clsloc ({len(missing)} unknown classes)"
            )
        return np.asarray([wnid_to_id[ds.class_keys[int(lab)]] for lab in ds.labels], dtype=np.int64)
    return ds.labels


def model_targets(
    ds: ImageDataset, mapping: LabelMappingConfig, num_outputs: int, valid_outputs: np.ndarray | None = None
) -> np.ndarray:
    """Model output index of each image's true class; out-of-range labels are one-line errors."""
    labels = ds.labels
    kind = mapping.type
    if kind == "identity":
        out = labels + mapping.offset
    elif kind in ("devkit", "sorted_wnid"):
        if not mapping.map_clsloc:
            raise DataError(f"label_mapping.type={kind!r} needs label_mapping.map_clsloc (path to map_clsloc.txt)")
        id_to_wnid = read_map_clsloc(mapping.map_clsloc)
        ids = _devkit_ids(ds, id_to_wnid)
        bad = np.flatnonzero(~np.isin(ids, list(id_to_wnid)))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"dataset {ds.name!r} image {i}: label {int(ids[i])} is not a devkit id in "
                f"{mapping.map_clsloc} (expected 1..{max(id_to_wnid)}; {bad.size} such images)"
            )
        if kind == "devkit":
            out = ids - 1 + mapping.offset
        else:
            order = {w: pos for pos, w in enumerate(sorted(id_to_wnid.values()))}
            out = np.asarray([order[id_to_wnid[int(i)]] for i in ids], dtype=np.int64) + mapping.offset
    else:  # file
        if not mapping.path:
            raise DataError("label_mapping.type='file' needs label_mapping.path (CSV dataset_label,model_output)")
        table = _read_mapping_file(Path(mapping.path))
        keys = [ds.class_keys.get(int(lab), str(lab)) if ds.class_keys else str(lab) for lab in labels]
        missing = [(i, k) for i, k in enumerate(keys) if k not in table and str(labels[i]) not in table]
        if missing:
            i, k = missing[0]
            raise DataError(
                f"{mapping.path}: no row for dataset label {k!r} (image {i}; {len(missing)} images unmapped)"
            )
        out = np.asarray([table.get(k, table.get(str(labels[i]))) for i, k in enumerate(keys)], dtype=np.int64)
    out = np.asarray(out, dtype=np.int64)
    bad = np.flatnonzero((out < 0) | (out >= num_outputs))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"label mapping {kind!r} sends image {i} (label {int(labels[i])}) to output {int(out[i])}, "
            f"outside the model's 0..{num_outputs - 1}: mismatched label mapping"
        )
    if valid_outputs is not None:
        dummy = np.flatnonzero(~valid_outputs[out])
        if dummy.size:
            i = int(dummy[0])
            raise DataError(
                f"label mapping {kind!r} sends image {i} (label {int(labels[i])}) to output {int(out[i])}, "
                "which is a dummy/background output of the model: mismatched label mapping (check offset)"
            )
    return out


def _read_mapping_file(path: Path) -> dict[str, int]:
    if not path.exists():
        raise DataError(f"{path}: label mapping file not found")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or {"dataset_label", "model_output"} - set(reader.fieldnames):
            raise DataError(f"{path}: expected columns dataset_label,model_output; got {reader.fieldnames}")
        table: dict[str, int] = {}
        for row_no, row in enumerate(reader, 2):
            try:
                table[row["dataset_label"].strip()] = int(row["model_output"])
            except (TypeError, ValueError):
                raise DataError(f"{path}:{row_no}: model_output {row['model_output']!r} is not an integer") from None
    return table
