"""The evaluation sets beside ImageNet val, recognised from their layout: ImageNet-V2's index
folders, ImageNet-A/-R's 200-class subsets (the prediction restricted to them), and ImageNet-C's
<corruption>/<severity>/<wnid>/ tree evaluated in one run with its mCE."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, QUICK
from reference_protocol import decode, reference_crop
from torchvision.transforms import v2

import ensemble_eval as ee
from ensemble_eval.benchmarks import (
    ALEXNET_CLEAN_ERROR,
    SubsetError,
    corruption_errors,
    known_subsets,
    resolve_class_subset,
)
from ensemble_eval.cli import main
from ensemble_eval.listing import CORRUPTION_TREE, INDEX_FOLDERS, DataError, list_dataset, wnid_to_index
from ensemble_eval.members.convention import IMAGENET_MEAN, IMAGENET_STD

IMAGES = sorted(p for p in DATA.glob("*/*") if p.is_file())


def _copy_into(folder: Path, images: list[Path]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        shutil.copy(image, folder / image.name)


@pytest.fixture(scope="module")
def index_tree(tmp_path_factory) -> Path:
    """ImageNet-V2's layout: class folders named by the class index."""
    root = tmp_path_factory.mktemp("v2")
    index = wnid_to_index()
    for image in IMAGES:
        _copy_into(root / str(index[image.parent.name]), [image])
    return root


@pytest.fixture(scope="module")
def subset_tree(tmp_path_factory) -> Path:
    """ImageNet-R's layout: its 200 wnid folders, each with one of the test images."""
    root = tmp_path_factory.mktemp("imagenet-r")
    for i, wnid in enumerate(known_subsets()["ImageNet-R"]):
        image = IMAGES[i % len(IMAGES)]
        (root / wnid).mkdir()
        shutil.copy(image, root / wnid / f"{i:03d}_{image.name}")
    return root


@pytest.fixture(scope="module")
def corruption_tree(tmp_path_factory) -> Path:
    """ImageNet-C's layout, two corruptions at two severities; the images corrupted for real
    (noise, blur) so that the errors differ between cells."""
    from PIL import Image, ImageFilter

    root = tmp_path_factory.mktemp("imagenet-c")
    rng = np.random.default_rng(0)
    for severity in (1, 3):
        for image in IMAGES:
            pixels = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32)
            noisy = np.clip(pixels + rng.normal(0, 40 * severity, pixels.shape), 0, 255).astype(np.uint8)
            for name, picture in (
                ("gaussian_noise", Image.fromarray(noisy)),
                (
                    "defocus_blur",
                    Image.fromarray(pixels.astype(np.uint8)).filter(ImageFilter.GaussianBlur(3 * severity)),
                ),
            ):
                folder = root / name / str(severity) / image.parent.name
                folder.mkdir(parents=True, exist_ok=True)
                picture.save(folder / (image.stem + ".png"))
    return root


# --------------------------------------------------------------------------- recognition


def test_index_folders_are_imagenet_class_indices(index_tree):
    listing = list_dataset(index_tree)
    assert listing.layout == INDEX_FOLDERS
    by_wnid = {s.wnid: s for s in list_dataset(DATA).samples}
    assert len(listing.samples) == len(IMAGES)
    for s in listing.samples:
        assert s.target == int(s.rel_path.split("/")[0]) == by_wnid[s.wnid].target


def test_index_folders_give_the_same_results_as_wnid_folders(index_tree, demo_ckpts, tmp_path):
    common = dict(protocol="quick-72px", crops="1", workers=0, progress=False)
    a = ee.evaluate([str(p) for p in demo_ckpts], DATA, out=tmp_path / "wnid", **common)
    b = ee.evaluate([str(p) for p in demo_ckpts], index_tree, out=tmp_path / "index", **common)
    assert (a.summary["top1_correct"], a.summary["top5_correct"]) == (
        b.summary["top1_correct"],
        b.summary["top5_correct"],
    )
    assert b.summary["data_layout"] == INDEX_FOLDERS
    pa, pb = np.load(tmp_path / "wnid" / "predictions.npz"), np.load(tmp_path / "index" / "predictions.npz")
    order = np.argsort([p.split("/")[-1] for p in pb["paths"]])
    assert np.array_equal(pa["probs"], pb["probs"][order])


@pytest.mark.parametrize("name", ["01", "1000", "-1", "3.0", "٣"])
def test_folders_that_are_not_class_indices_are_refused(tmp_path, name):
    _copy_into(tmp_path / "0", IMAGES[:1])
    _copy_into(tmp_path / name, IMAGES[1:2])
    with pytest.raises(DataError, match="not an ImageNet-1k WordNet id.*class index"):
        list_dataset(tmp_path)


def test_corruption_tree_is_one_data_set_of_groups(corruption_tree):
    listing = list_dataset(corruption_tree)
    assert listing.layout == CORRUPTION_TREE
    assert len(listing.samples) == 4 * len(IMAGES)
    groups = {s.group for s in listing.samples}
    assert groups == {"gaussian_noise/1", "gaussian_noise/3", "defocus_blur/1", "defocus_blur/3"}
    for s in listing.samples:
        assert s.rel_path.startswith(s.group + "/" + s.wnid + "/")


def test_corruption_tree_files_out_of_place_are_counted_not_evaluated(corruption_tree, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(corruption_tree, root)
    shutil.copy(IMAGES[0], root / "fog.jpg")  # at the top
    shutil.copy(IMAGES[0], root / "gaussian_noise" / "1" / "x.jpg")  # beside the class folders
    listing = list_dataset(root)
    assert len(listing.samples) == 4 * len(IMAGES)
    assert listing.ignored["outside class folders"] == 2


def test_a_tree_that_is_almost_imagenet_c_is_refused(corruption_tree, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(corruption_tree, root)
    (root / "fog" / "6").mkdir(parents=True)  # no such severity
    with pytest.raises(DataError, match="ImageNet-C tree"):
        list_dataset(root)


# --------------------------------------------------------------------------- class subsets


def test_known_subsets_are_the_published_200_classes():
    index = wnid_to_index()
    subsets = known_subsets()
    assert set(subsets) == {"ImageNet-A", "ImageNet-R"}
    for wnids in subsets.values():
        assert len(set(wnids)) == 200 and all(w in index for w in wnids)
    a = [index[w] for w in subsets["ImageNet-A"]]
    r = [index[w] for w in subsets["ImageNet-R"]]
    # the first class indices as both datasets' code lists them
    assert a[:8] == [6, 11, 13, 15, 17, 22, 23, 27] and r[:8] == [1, 2, 4, 6, 8, 9, 11, 13]


def test_auto_restricts_only_a_known_benchmark(subset_tree):
    samples = list_dataset(subset_tree).samples
    chosen = resolve_class_subset("auto", samples)
    assert chosen.name == "ImageNet-R" and len(chosen.indices) == 200
    assert resolve_class_subset("all", samples) is None
    assert resolve_class_subset("auto", list_dataset(DATA).samples) is None  # 8 classes: not a benchmark's


def test_subset_file_of_wnids_and_indices(tmp_path):
    samples = list_dataset(DATA).samples
    index = wnid_to_index()
    wnids = sorted({s.wnid for s in samples})
    listed = tmp_path / "classes.txt"
    listed.write_text("# my subset\n" + "\n".join(wnids[:-1]) + f"\n{index[wnids[-1]]}\n\nn01440764  # tench\n")
    chosen = resolve_class_subset(str(listed), samples)
    assert chosen.indices == tuple(sorted([index[w] for w in wnids] + [0]))


@pytest.mark.parametrize(
    "content, message",
    [
        ("n01440764\n", "leaves out 8 class"),
        ("n99999999\n", "line 1: 'n99999999' is neither"),
        ("1000\n", "neither an ImageNet-1k WordNet id nor a class index"),
        ("# nothing\n", "names no class"),
        (b"\xff\xfe\n", "--class-subset"),
    ],
)
def test_bad_subset_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "classes.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SubsetError, match=message):
        resolve_class_subset(str(path), list_dataset(DATA).samples)


def test_a_fifo_as_subset_file_is_refused_without_blocking(tmp_path, deadline):
    fifo = tmp_path / "classes.txt"
    os.mkfifo(fifo)
    with pytest.raises(SubsetError, match="--class-subset"):
        resolve_class_subset(str(fifo), list_dataset(DATA).samples)


def test_cli_bad_subset_is_one_line_exit_2(tmp_path, demo_ckpts, capsys):
    code = main(
        ["--models", str(demo_ckpts[0]), "--data", str(DATA), "--class-subset", str(tmp_path / "missing.txt")]
        + ["--out", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def _masked_reference(image: torch.Tensor, models, keys, classes: list[int], crop_size: int) -> np.ndarray:
    """The mean over crops and members of a softmax over `classes` alone, computed crop by crop."""
    total = torch.zeros(1000, dtype=torch.float64)
    count = 0
    for key in keys:
        x = v2.ToDtype(torch.float32, scale=True)(reference_crop(image, key, crop_size))
        for model in models:
            logits = model(v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD))(x).unsqueeze(0))[0]
            total[classes] += torch.softmax(logits[classes], dim=0).double()
            count += 1
    return (total / count).numpy()


@pytest.fixture(scope="module")
def restricted_run(subset_tree, demo_ckpts, tmp_path_factory):
    out = tmp_path_factory.mktemp("restricted") / "run"
    results = ee.evaluate(
        [str(p) for p in demo_ckpts],
        subset_tree,
        out=out,
        protocol="quick-72px",
        crops="10",
        table=True,
        limit=6,
        save_logits=True,
        compare_merges=True,
        workers=0,
        progress=False,
    )
    return results, out


def test_restriction_equals_an_independent_masked_softmax(restricted_run, subset_tree, demo_models):
    results, out = restricted_run
    classes = sorted(wnid_to_index()[w] for w in known_subsets()["ImageNet-R"])
    assert results.summary["class_subset"]["indices"] == classes
    pred = np.load(out / "predictions.npz")
    keys = [(72, "center", c, f) for c in ("tl", "tr", "bl", "br", "center") for f in ("none", "mirror")]
    models = [m.eval() for m in demo_models]
    with torch.no_grad():
        for i in (0, 3):
            ref = _masked_reference(decode(subset_tree / pred["paths"][i]), models, keys, classes, 64)
            assert np.abs(pred["probs"][i] - ref).max() < 1e-6
            outside = np.setdiff1d(np.arange(1000), classes)
            assert not pred["probs"][i][outside].any()
    top5 = pred["top5"]
    assert np.isin(top5, classes).all()  # every reported class is one of the 200, in canonical indices


def _merged(logits: torch.Tensor, merge: str) -> torch.Tensor:
    """One merge mode from first principles: logits [M members, K crops, C'] -> probabilities [C']."""
    if merge == "mean-prob":
        return torch.softmax(logits, -1).mean(dim=(0, 1))
    if merge == "mean-logit":
        return torch.softmax(logits.mean(dim=(0, 1)), -1)
    if merge == "geo-mean":
        return torch.softmax(torch.log_softmax(logits, -1).mean(dim=(0, 1)), -1)
    assert merge == "max-crop"
    best = torch.softmax(logits, -1).amax(dim=1).mean(dim=0)
    return best / best.sum()


def test_every_merge_mode_is_taken_over_the_subset_alone(restricted_run, subset_tree, demo_models):
    _, out = restricted_run
    classes = sorted(wnid_to_index()[w] for w in known_subsets()["ImageNet-R"])
    pred = np.load(out / "predictions.npz")
    merges = [str(m) for m in pred["merges"]]
    assert sorted(merges) == ["geo-mean", "max-crop", "mean-logit", "mean-prob"]
    keys = [(72, "center", c, f) for c in ("tl", "tr", "bl", "br", "center") for f in ("none", "mirror")]
    s = list(pred["set_names"]).index("10")
    with torch.no_grad():
        for i in (1, 4):
            image = decode(subset_tree / pred["paths"][i])
            crops = [v2.ToDtype(torch.float32, scale=True)(reference_crop(image, key, 64)) for key in keys]
            x = torch.stack([v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD))(c) for c in crops])
            logits = torch.stack([m.eval()(x)[:, classes] for m in demo_models]).double()  # [M, K, C']
            target = classes.index(int(pred["targets"][i]))
            for r, merge in enumerate(merges):
                probs = _merged(logits, merge)
                assert pred["target_prob"][i, 2, s, r] == pytest.approx(float(probs[target]), abs=1e-6)
                assert pred["confidence"][i, 2, s, r] == pytest.approx(float(probs.max()), abs=1e-6)
                top = [classes[k] for k in probs.argsort(descending=True)[:5].tolist()]
                assert list(pred["top5"][i, 2, s, r]) == top


def test_restricted_report_rebuilt_from_logits_is_the_run(restricted_run, tmp_path):
    results, out = restricted_run
    code = main(["report", str(out), "--members", "0", "1", "--out", str(tmp_path / "rep")])
    assert code == 0
    rebuilt = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert rebuilt["top1_correct"] == results.summary["top1_correct"]
    assert rebuilt["top5_correct"] == results.summary["top5_correct"]
    assert [c["top1_err"] for c in rebuilt["table"]] == [c["top1_err"] for c in results.summary["table"]]


def test_all_keeps_every_output(subset_tree, demo_ckpts, tmp_path):
    results = ee.evaluate(
        str(demo_ckpts[0]),
        subset_tree,
        out=tmp_path / "r",
        protocol="quick-72px",
        crops="1",
        limit=2,
        class_subset="all",
        workers=0,
        progress=False,
    )
    assert "class_subset" not in results.summary
    probs = np.load(tmp_path / "r" / "predictions.npz")["probs"]
    assert (probs > 0).sum(axis=1).min() > 200


# --------------------------------------------------------------------------- ImageNet-C


def test_corruption_arithmetic_by_hand():
    errors = {"gaussian_noise": {1: 0.5, 2: 0.7}, "fog": {1: 0.2}, "speckle_noise": {1: 0.9}, "mine": {5: 0.1}}
    got = corruption_errors(errors, clean_error=0.25)
    ce_noise, ce_fog = 0.6 / 0.886428, 0.2 / 0.819324
    assert got["ce"] == pytest.approx({"gaussian_noise": ce_noise, "fog": ce_fog}, abs=1e-12)
    assert got["mce"] == pytest.approx((ce_noise + ce_fog) / 2, abs=1e-12)
    assert got["corruptions_in_mce"] == 2 and not got["complete"]
    rel_noise = (0.6 - 0.25) / (0.886428 - ALEXNET_CLEAN_ERROR)
    rel_fog = (0.2 - 0.25) / (0.819324 - ALEXNET_CLEAN_ERROR)
    assert got["relative_mce"] == pytest.approx((rel_noise + rel_fog) / 2, abs=1e-12)


def test_complete_imagenet_c_is_marked_comparable():
    from ensemble_eval.benchmarks import ALEXNET_ERRORS

    full = {c: {s: e for s in range(1, 6)} for c, e in ALEXNET_ERRORS.items()}
    got = corruption_errors(full)
    assert got["complete"] and got["mce"] == pytest.approx(1.0) and got["corruptions_in_mce"] == 15


@pytest.fixture(scope="module")
def corruption_run(corruption_tree, demo_ckpts, tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "run"
    code = main(
        ["--models", *map(str, demo_ckpts), "--data", str(corruption_tree), "--config", QUICK, "--table"]
        + ["--workers", "0", "--no-progress", "--out", str(out), "--save-logits", "--batch-size", "72"]
    )
    assert code == 0
    return out


def test_imagenet_c_run_reports_mce_as_computed_by_hand(corruption_run):
    summary = json.loads((corruption_run / "summary.json").read_text())
    section = summary["corruptions"]
    assert section["corruptions"] == ["gaussian_noise", "defocus_blur"] and section["severities"] == [1, 3]
    pred = np.load(corruption_run / "predictions.npz")
    alexnet = {"gaussian_noise": 0.886428, "defocus_blur": 0.819880}
    for setting in section["settings"]:
        row = 2 if setting["label"] == "all members" else int(summary["best_member"] == summary["models"][1]["name"])
        s = list(pred["set_names"]).index(setting["crop_set"])
        wrong = pred["top5"][:, row, s, 0, 0] != pred["targets"]
        by_hand = {}
        for c in alexnet:
            means = []
            for severity in (1, 3):
                mine = np.array([p.startswith(f"{c}/{severity}/") for p in pred["paths"]])
                assert setting["errors"][c][str(severity)]["top1_err"] == pytest.approx(wrong[mine].mean(), abs=1e-12)
                means.append(wrong[mine].mean())
            by_hand[c] = np.mean(means) / alexnet[c]
        assert setting["ce"] == pytest.approx(by_hand, abs=1e-12)
        assert setting["mce"] == pytest.approx(np.mean(list(by_hand.values())), abs=1e-12)
        assert setting["complete"] is False
    errors = [setting["errors"]["gaussian_noise"]["3"]["top1_err"] for setting in section["settings"]]
    assert len(set(errors)) > 1 or errors[0] not in (0.0, 1.0)  # the images do tell cells apart


def test_imagenet_c_outputs_and_report(corruption_run, tmp_path, capsys):
    rows = (corruption_run / "corruptions.csv").read_text().splitlines()
    assert rows[0].startswith("label,models,crops,corruption,severity,top1_err")
    assert len(rows) == 1 + 6 * 4  # 6 settings (2 rows x 3 crop sets) x 2 corruptions x 2 severities
    assert (corruption_run / "corruptions.png").read_bytes()[:4] == b"\x89PNG"
    table = (corruption_run / "table.md").read_text()
    assert "ImageNet-C" in table and "partial" in table
    code = main(["report", str(corruption_run), "--out", str(tmp_path / "rep")])
    assert code == 0
    again = json.loads((tmp_path / "rep" / "summary.json").read_text())
    first = json.loads((corruption_run / "summary.json").read_text())
    assert again["corruptions"] == first["corruptions"]
    assert "mCE" in capsys.readouterr().out


def test_a_killed_imagenet_c_run_resumes_to_the_same_results(corruption_tree, corruption_run, demo_ckpts, tmp_path):
    from test_scale import _kill_after, _run

    out = tmp_path / "killed"
    args = ["--models", *map(str, demo_ckpts), "--data", str(corruption_tree), "--config", QUICK, "--table"]
    args += ["--workers", "0", "--no-progress", "--save-logits", "--batch-size", "72", "--save-every", "1"]
    assert _kill_after([*args, "--out", str(out)], out, 3), "the run finished before it could be killed"
    resumed = _run([*args, "--out", str(out), "--resume"])
    _, stderr = resumed.communicate()
    assert resumed.returncode == 0, stderr
    a, b = (json.loads((d / "summary.json").read_text()) for d in (corruption_run, out))
    assert b["resumed"] and a["corruptions"] == b["corruptions"] and a["table"] == b["table"]
    pa, pb = (np.load(d / "predictions.npz") for d in (corruption_run, out))
    assert list(pa["paths"]) == list(pb["paths"]) and np.array_equal(pa["probs"], pb["probs"])


def test_compare_gives_mce_and_relative_mce_of_a_real_imagenet_c_run(corruption_run, demo_ckpts, tmp_path, capsys):
    from ensemble_eval.benchmarks import ALEXNET_CLEAN_ERROR

    val = tmp_path / "val"
    args = ["--models", *map(str, demo_ckpts), "--data", str(DATA), "--config", QUICK, "--table", "--workers", "0"]
    assert main([*args, "--no-progress", "--batch-size", "72", "--out", str(val)]) == 0
    capsys.readouterr()
    assert main(["compare", f"val={val}", f"c={corruption_run}", "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "relative mCE % (ImageNet-C" in printed
    clean = json.loads((val / "summary.json").read_text())["table"]
    c = json.loads((corruption_run / "summary.json").read_text())["corruptions"]["settings"]
    rows = list(csv.reader(io.StringIO((tmp_path / "cmp" / "compare.csv").read_text())))
    header = rows[0]
    at = {name: header.index(name) for name in ("members", "crop_set", "dataset", "mce", "relative_mce")}
    by_setting = {(int(r[at["members"]]) > 1, r[at["crop_set"]]): r for r in rows[1:] if r[at["dataset"]] == "c"}
    group = lambda x: (x["models"] > 1, x["crop_set"])  # noqa: E731  the best member may differ between sets
    clean_of = {group(cell): cell for cell in clean}
    for setting in c:
        cell = clean_of[group(setting)]
        means = {k: np.mean([e["top1_err"] for e in v.values()]) for k, v in setting["errors"].items()}
        alexnet = {"gaussian_noise": 0.886428, "defocus_blur": 0.819880}
        relative = np.mean([(means[k] - cell["top1_err"]) / (alexnet[k] - ALEXNET_CLEAN_ERROR) for k in alexnet])
        row = by_setting[group(setting)]
        assert float(row[at["mce"]]) == pytest.approx(setting["mce"], abs=1e-12)
        assert float(row[at["relative_mce"]]) == pytest.approx(relative, abs=1e-12)


def test_check_data_says_what_it_recognised(index_tree, subset_tree, corruption_tree, capsys):
    expected = {
        index_tree: ["index folders: 8 images, 8 classes"],
        subset_tree: ["wnid folders: 200 images, 200 classes", "class subset: ImageNet-R's 200 classes; a run"],
        corruption_tree: ["ImageNet-C tree: 2 corruptions x 2 severities, 32 images, 8 classes"],
    }
    for root, lines in expected.items():
        assert main(["check-data", str(root), "--no-progress", "--workers", "0"]) == 0
        printed = capsys.readouterr().out.splitlines()
        for line, start in zip(printed, lines):
            assert line.startswith(start)
        assert "class subset" not in " ".join(printed[len(lines) :])
    assert main(["check-data", str(subset_tree), "--class-subset", "all", "--no-progress", "--workers", "0"]) == 0
    assert "class subset" not in capsys.readouterr().out
