"""Class mapping by WordNet id, flat folders with label files, decoding odd files."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import DATA, SHARED

from ensemble_eval.data import DataError, decode_image, imagenet_classes, list_samples, wnid_to_index


def test_class_list_is_the_canonical_1000():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert classes[0].wnid == "n01440764" and classes[0].name == "tench"
    assert classes[999].wnid == "n15075141"
    assert [c.wnid for c in classes] == sorted(c.wnid for c in classes)
    if SHARED.exists():  # the package copy equals the shared canonical list
        tsv = (SHARED.parent / "imagenet_classes.tsv").read_text().splitlines()[1:]
        assert [line.split("\t")[1] for line in tsv] == [c.wnid for c in classes]


def test_subset_folder_maps_each_wnid_to_its_true_index(samples):
    # tests/data holds 8 of the 1000 classes: indices must not be 0..7
    mapping = wnid_to_index()
    assert len({s.target for s in samples}) == 8
    for s in samples:
        wnid = s.rel_path.split("/")[0]
        assert s.target == mapping[wnid]
    stopwatch = next(s for s in samples if "stopwatch" in s.rel_path)
    assert stopwatch.target == 826  # n04328186 in the sorted-wnid order
    assert [s.rel_path for s in samples] == sorted(s.rel_path for s in samples)


def test_folder_with_one_class(tmp_path):
    shutil.copytree(DATA / "n04328186", tmp_path / "n04328186")
    (samples,) = list_samples(tmp_path)
    assert samples.target == 826 and samples.rel_path == "n04328186/n04328186_stopwatch.JPEG"


def _flat_copy(tmp_path, samples):
    flat = tmp_path / "flat"
    flat.mkdir()
    for s in samples:
        shutil.copy(s.path, flat / s.path.name)
    return flat


@pytest.mark.parametrize("kind", ["wnid", "index", "index-with-header"])
def test_flat_folder_with_labels_csv(tmp_path, samples, kind):
    flat = _flat_copy(tmp_path, samples)
    labels = tmp_path / "labels.csv"
    lines = ["filename,label"] if kind == "index-with-header" else []
    for s in reversed(samples):  # file order in the CSV does not matter
        lines.append(f"{s.path.name},{s.rel_path.split('/')[0] if kind == 'wnid' else s.target}")
    labels.write_text("\n".join(lines) + "\n")
    flat_samples = list_samples(flat, labels)
    assert [s.rel_path for s in flat_samples] == sorted(s.path.name for s in samples)
    by_name = {s.path.name: s.target for s in samples}
    assert all(s.target == by_name[s.rel_path] for s in flat_samples)


def test_flat_folder_label_errors(tmp_path, samples):
    flat = _flat_copy(tmp_path, samples)
    with pytest.raises(DataError, match="does not exist"):
        list_samples(flat, tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a.JPEG,n01440764\nb.JPEG,not_a_class\n")
    with pytest.raises(DataError, match="neither an ImageNet WordNet id"):
        list_samples(flat, bad)
    missing = tmp_path / "missing.csv"
    missing.write_text("ghost.JPEG,n01440764\n")
    with pytest.raises(DataError, match="not in"):
        list_samples(flat, missing)


def test_dataset_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list_samples(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no class folders"):
        list_samples(tmp_path)
    (tmp_path / "cats").mkdir()
    with pytest.raises(DataError, match="'cats'.*not an ImageNet-1k WordNet id"):
        list_samples(tmp_path)


def test_odd_files_decode_to_rgb(samples):
    kinds = {
        "nail": "grayscale JPEG",
        "hatchet_cmyk": "CMYK JPEG",
        "iron_png": "PNG named .JPEG",
    }
    for s in samples:
        image = decode_image(s.path)
        assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3, s.rel_path
    for stem in kinds:
        s = next(s for s in samples if stem in s.rel_path)
        image = decode_image(s.path)
        if stem == "nail":  # gray replicated into three equal channels
            assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
        assert image.float().std() > 10  # real picture content, not blank


def test_undecodable_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(DataError, match="broken.JPEG"):
        decode_image(bad)
