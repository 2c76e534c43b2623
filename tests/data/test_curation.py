"""Curation: quality measures, folder scan with bad input, splits, tiling, ablation subsets, figures and CLI."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from semkit.data import curation as cur
from semkit.data import quality as q
from semkit.data.io import load_image
from semkit.errors import InputError

# --------------------------------------------------------------------------------------------------------------
# helpers


def folder_digest(root: Path) -> str:
    """Hash of every file's relative path, size, content and mtime under ``root``."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
            h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()


def square_image(n: int = 100, side: int = 20, value: float = 1.0) -> np.ndarray:
    img = np.zeros((n, n))
    img[40 : 40 + side, 40 : 40 + side] = value
    return img


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """write_curation_demo with 4 regular 256-px images (2 without, 2 with a 64-row databar)."""
    return cur.write_curation_demo(tmp_path_factory.mktemp("demo") / "input", n=4, seed=0, size=256)


@pytest.fixture(scope="module")
def scanned(demo):
    digest = folder_digest(demo)
    manifest, skipped = cur.scan_folders(demo / "images", progress=False)
    return manifest, skipped, digest


# --------------------------------------------------------------------------------------------------------------
# quality measures


def test_focus_score_is_the_log_variance_of_the_stretched_image():
    rng = np.random.default_rng(3)
    img = rng.random((40, 50))
    lo, hi = np.percentile(img, [1, 99])
    stretched = np.clip((img - lo) / (hi - lo), 0, 1)
    # Slow reference: the LoG as the sum of second Gaussian derivatives along each axis.
    log = sum(
        ndimage.gaussian_filter(stretched, q.FOCUS_SIGMA, order=o, mode="reflect") for o in ((2, 0), (0, 2))
    )
    assert q.focus_score(img) == pytest.approx(float(log.var()), rel=1e-9)
    assert q.focus_score(np.full((20, 20), 0.3)) == 0.0


def test_focus_score_ranks_sharp_edges_above_blurred_ones_despite_noise():
    rng = np.random.default_rng(4)
    sharp = square_image(128, 30) * 0.5 + 0.2
    scores = []
    for sigma in (0.0, 1.5, 3.0):
        blurred = ndimage.gaussian_filter(sharp, sigma)
        scores.append(q.focus_score(np.clip(blurred + 0.03 * rng.standard_normal(blurred.shape), 0, 1)))
    assert scores[0] > scores[1] > scores[2]


def test_focus_score_ignores_brightness_and_contrast_but_drops_with_blur():
    rng = np.random.default_rng(0)
    img = ndimage.gaussian_filter(rng.random((128, 128)), 1.0)
    img = (img - img.min()) / (img.max() - img.min())
    assert q.focus_score(0.2 + 0.3 * img) == pytest.approx(q.focus_score(img), rel=1e-6)
    blurred = [q.focus_score(ndimage.gaussian_filter(img, s)) for s in (0.5, 1.0, 2.0, 4.0)]
    assert q.focus_score(img) > blurred[0] > blurred[1] > blurred[2] > blurred[3]


def test_contrast_measures_by_hand():
    ramp = np.arange(100, dtype=float).reshape(10, 10) / 99
    assert q.contrast(ramp) == pytest.approx((98.01 - 0.99) / 99)
    half = np.zeros((10, 10))
    half[:, 5:] = 1
    assert q.rms_contrast(half) == pytest.approx(0.5)
    assert q.contrast(np.full((10, 10), 0.7)) == 0.0


def test_structure_fraction_and_near_empty_rule():
    # A 20x20 bright square in 100x100: the square itself (4 %) plus at most 1.28 sigma of blur around it.
    frac = q.structure_fraction(square_image())
    assert 0.04 <= frac <= (20 + 2 * 1.28 * q.NEAR_EMPTY_SIGMA) ** 2 / 100**2
    assert not q.is_near_empty(square_image())
    assert q.structure_fraction(np.full((64, 64), 0.5)) == 0.0
    assert q.is_near_empty(np.full((64, 64), 0.5))
    noise = np.clip(0.3 + 0.05 * np.random.default_rng(1).standard_normal((128, 128)), 0, 1)
    assert q.is_near_empty(noise)  # shot noise alone is not structure
    faint = square_image(value=0.08)  # below NEAR_EMPTY_DELTA everywhere
    assert q.structure_fraction(faint) == 0.0


def test_phash_and_hamming():
    img = square_image()
    h = q.phash_hex(img)
    assert len(h) == 16 and int(h, 16) >= 0
    assert q.phash_hex(img.copy()) == h
    assert q.hamming_distance("0" * 16, "f" * 16) == 64
    assert q.hamming_distance("0" * 16, "0" * 15 + "1") == 1
    assert q.hamming_distance(h, h) == 0


def flip(h: str, bits: list[int]) -> str:
    v = int(h, 16)
    for b in bits:
        v ^= 1 << b
    return f"{v:016x}"


def test_duplicate_groups_are_transitive_and_numbered_by_first_member():
    a = "0" * 16
    b = flip(a, [0, 1, 2])
    c = flip(b, [10, 11, 12])  # 6 bits from a, 3 from b
    far = "f" * 16
    far2 = flip(far, [5])
    groups = q.duplicate_groups([far, a, c, far2, b, "0f" * 8], max_distance=3)
    assert groups.tolist() == [0, 1, 1, 0, 1, -1]
    assert q.duplicate_groups([a, c], max_distance=5).tolist() == [-1, -1]
    assert q.duplicate_groups([a, c], max_distance=6).tolist() == [0, 0]
    assert q.duplicate_groups([]).tolist() == []
    with pytest.raises(InputError):
        q.duplicate_groups(["xyz", a])


def reference_groups(hashes: list[str], max_distance: int) -> list[int]:
    """Slow union-find over all pairs, for parity."""
    parent = list(range(len(hashes)))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            if bin(int(hashes[i], 16) ^ int(hashes[j], 16)).count("1") <= max_distance:
                parent[find(j)] = find(i)
    roots = [find(i) for i in range(len(hashes))]
    sizes = {r: roots.count(r) for r in roots}
    ids: dict[int, int] = {}
    out = []
    for r in roots:
        if sizes[r] == 1:
            out.append(-1)
        else:
            ids.setdefault(r, len(ids))
            out.append(ids[r])
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=0, max_size=25), st.integers(0, 40), st.integers(1, 7))
def test_duplicate_groups_match_slow_union_find(values, max_distance, chunk):
    # Cluster the random hashes a little so groups actually form.
    hashes = [f"{v & 0xFFFF00000000FFFF:016x}" for v in values]
    assert q.duplicate_groups(hashes, max_distance, chunk=chunk).tolist() == reference_groups(
        hashes, max_distance
    )


def test_magnification_bucket_boundary_and_unknown():
    assert cur.magnification_bucket(50.0) == "low"
    assert cur.magnification_bucket(49.99) == "high"
    assert cur.magnification_bucket(7.52) == "high"
    assert cur.magnification_bucket(None) is None
    assert cur.magnification_bucket(float("nan")) is None
    assert cur.magnification_bucket(20.0, threshold_um=10.0) == "low"


# --------------------------------------------------------------------------------------------------------------
# folder scan


def test_scan_demo_folder_values(scanned, demo):
    manifest, skipped, _ = scanned
    assert list(manifest.columns) == cur.MANIFEST_COLUMNS
    names = sorted(manifest["name"])
    assert names == [
        "duplicate_of_synthetic_s0_0000",
        "near_empty_s2_0000",
        "synthetic_s0_0000",
        "synthetic_s0_0001",
        "synthetic_s1_0000",
        "synthetic_s1_0001",
    ]
    m = manifest.set_index("name")
    assert (m["height"] == 256).all() and (m["width"] == 256).all()  # the databar is cropped
    assert m.loc[["synthetic_s1_0000", "synthetic_s1_0001"], "databar_rows"].tolist() == [64, 64]
    assert m.drop(["synthetic_s1_0000", "synthetic_s1_0001"])["databar_rows"].eq(0).all()
    assert m["pixel_size_nm"].tolist() == pytest.approx([7.5] * 6, abs=1e-6)
    assert m["field_of_view_um"].tolist() == pytest.approx([256 * 7.5 / 1000] * 6, abs=1e-6)
    assert set(m["magnification_bucket"]) == {"high"}
    assert set(m["original_dtype"]) == {"uint8"}
    assert m["near_empty"].tolist() == [n.startswith("near_empty") for n in m.index]
    dup = m.loc[["synthetic_s0_0000", "duplicate_of_synthetic_s0_0000"]]
    assert dup["duplicate_group"].tolist() == [0, 0] and dup["phash"].nunique() == 1
    assert (m.drop(dup.index)["duplicate_group"] == -1).all()
    # The folder argument and relative path are kept; paths point at the scanned files.
    assert set(manifest["folder"]) == {str(demo / "images")}
    assert all(Path(p).is_file() for p in manifest["path"])
    # One skip: the truncated file, with the reason.
    assert len(skipped) == 1
    assert Path(skipped.loc[0, "path"]).name == "truncated.tif"
    assert skipped.loc[0, "stage"] == "read" and "cannot read image" in skipped.loc[0, "reason"]


def test_scan_matches_single_file_measures(scanned):
    manifest, _, _ = scanned
    row = manifest[manifest["name"] == "synthetic_s1_0000"].iloc[0]
    image, meta = load_image(row["path"])
    image = image[:-64]
    assert meta.pixel_size_nm == pytest.approx(7.5)
    assert row["focus_score"] == pytest.approx(q.focus_score(image))
    assert row["contrast"] == pytest.approx(q.contrast(image))
    assert row["phash"] == q.phash_hex(image)


def test_scan_and_tiling_never_modify_the_input(scanned, demo, tmp_path):
    manifest, _, digest_before = scanned
    cur.write_tiles(manifest, tmp_path / "tiles", tile=128, progress=False)
    cur.scan_folders(demo, progress=False)
    assert folder_digest(demo) == digest_before


def test_scan_with_workers_gives_the_same_manifest(scanned, demo):
    manifest, skipped, _ = scanned
    par, par_skipped = cur.scan_folders(demo / "images", workers=2, progress=False)
    pd.testing.assert_frame_equal(par, manifest)
    pd.testing.assert_frame_equal(par_skipped, skipped)


def test_scan_options_override_databar_and_pixel_size(demo):
    m, _ = cur.scan_folders(demo / "images", crop_databar=False, pixel_size_nm=200.0, progress=False)
    m = m.set_index("name")
    assert m.loc["synthetic_s1_0000", "height"] == 320 and m.loc["synthetic_s1_0000", "databar_rows"] == 0
    assert set(m["pixel_size_source"]) == {"override"}
    assert m["field_of_view_um"].tolist() == pytest.approx([51.2] * len(m))
    assert set(m["magnification_bucket"]) == {"low"}
    m10, _ = cur.scan_folders(demo / "images", crop_databar=10, progress=False)
    assert set(m10["databar_rows"]) == {10}


def make_bad_folder(root: Path) -> Path:
    """Folder with one good image and one example of every kind of bad input."""
    root.mkdir()
    rng = np.random.default_rng(0)
    good = (rng.random((64, 64)) * 255).astype(np.uint8)
    Image.fromarray(good).save(root / "good.png")  # readable, but no calibration
    (root / "not_an_image.png").write_bytes(b"this is text, not a PNG")
    tifffile.imwrite(root / "signed.tif", (rng.random((64, 64)) * 100).astype(np.int16))
    Image.fromarray(good[:8, :8]).save(root / "tiny.png")
    Image.fromarray(good).save(root / "bitmap.bmp")
    (root / "README.md").write_text("notes")
    (root / ".hidden.png").write_bytes(b"ignored")
    sub = root / "sub"
    sub.mkdir()
    Image.fromarray(good).save(sub / "nested.jpg", quality=95)
    return root


def test_bad_input_is_logged_and_listed_never_dropped_silently(tmp_path, caplog):
    root = make_bad_folder(tmp_path / "bad")
    before = folder_digest(root)
    with caplog.at_level(logging.WARNING, logger="semkit.data.curation"):
        manifest, skipped = cur.scan_folders(root, progress=False)
    assert sorted(manifest["name"]) == ["good", "nested"]
    reasons = {Path(p).name: r for p, r in zip(skipped["path"], skipped["reason"], strict=True)}
    assert set(reasons) == {"not_an_image.png", "signed.tif", "tiny.png", "bitmap.bmp"}
    assert "cannot read image" in reasons["not_an_image.png"]
    assert "signed integer" in reasons["signed.tif"]
    assert "8x8" in reasons["tiny.png"]
    assert "unsupported file type '.bmp'" in reasons["bitmap.bmp"]
    assert (
        dict(zip(skipped["path"].map(lambda p: Path(p).name), skipped["stage"], strict=True))["bitmap.bmp"]
        == "list"
    )
    for name in reasons:
        assert any(name in rec.getMessage() for rec in caplog.records), name
    # Uncalibrated images are kept with no bucket, unless a pixel size is required.
    assert manifest["magnification_bucket"].isna().all() and manifest["pixel_size_nm"].isna().all()
    strict, strict_skipped = cur.scan_folders(root, require_pixel_size=True, progress=False)
    assert strict.empty and list(strict.columns) == cur.MANIFEST_COLUMNS
    assert sum("no pixel size" in r for r in strict_skipped["reason"]) == 2
    # Non-recursive: the nested image is not listed at all.
    flat, _ = cur.scan_folders(root, recursive=False, progress=False)
    assert sorted(flat["name"]) == ["good"]
    assert folder_digest(root) == before


def test_scan_folder_errors_and_repeated_folders(tmp_path, demo):
    with pytest.raises(InputError, match="does not exist"):
        cur.scan_folders(tmp_path / "missing", progress=False)
    with pytest.raises(InputError):
        cur.scan_folders([], progress=False)
    once, _ = cur.scan_folders([demo / "images"], progress=False)
    twice, _ = cur.scan_folders([demo / "images", demo / "images"], progress=False)
    assert len(twice) == len(once)
    with pytest.raises(InputError, match="truncated.tif"):
        cur.scan_image(demo / "images" / "truncated.tif")
    with pytest.raises(InputError, match="databar height"):
        cur.scan_image(demo / "images" / "synthetic_s0_0000.tif", crop_databar=1000)


def test_save_and_load_manifest_round_trip(scanned, tmp_path):
    manifest, _, _ = scanned
    path = cur.save_manifest(manifest, tmp_path / "out" / "manifest.csv")
    assert path.name == "manifest.parquet" and path.with_suffix(".csv").exists()
    back = cur.load_manifest(path)
    pd.testing.assert_frame_equal(back, manifest, check_dtype=False)
    assert len(pd.read_csv(path.with_suffix(".csv"))) == len(manifest)
    with pytest.raises(InputError):
        cur.load_manifest(tmp_path / "nope.parquet")


def test_find_labels_in_known_layouts(scanned, tmp_path):
    manifest, _, _ = scanned
    found = cur.find_labels(manifest)
    assert set(found["label_layout"]) == {"instance-folder"}
    assert all(Path(p).parent.name == "labels" and Path(p).is_file() for p in found["label_path"])
    # BAM and uncertainty layouts, and an image without a label.
    for d in ("bam/images", "bam/instances", "unc/Samples", "unc/High_Confidence_Labels"):
        (tmp_path / d).mkdir(parents=True)
    for p in (
        "bam/images/a.tif",
        "bam/instances/a_m.tif",
        "bam/images/b.tif",
        "unc/Samples/c.tif",
        "unc/High_Confidence_Labels/c.png",
    ):
        (tmp_path / p).write_bytes(b"")
    table = pd.DataFrame(
        {"path": [str(tmp_path / p) for p in ("bam/images/a.tif", "bam/images/b.tif", "unc/Samples/c.tif")]}
    )
    out = cur.find_labels(table)
    assert out["label_layout"].tolist() == ["bam", None, "uncertainty"]
    assert Path(out.loc[2, "label_path"]).name == "c.png"
    assert cur.find_labels(table, ["instance-folder"])["label_path"].isna().all()
    with pytest.raises(InputError, match="bam, uncertainty"):
        cur.find_labels(table, ["coco"])


# --------------------------------------------------------------------------------------------------------------
# splits and subsets


@pytest.mark.parametrize(
    ("n", "fractions", "expected"),
    [
        (0, (0.65, 0.15, 0.2), [0, 0, 0]),
        (1, (0.65, 0.15, 0.2), [1, 0, 0]),
        (2, (0.65, 0.15, 0.2), [1, 0, 1]),
        (3, (0.65, 0.15, 0.2), [1, 1, 1]),
        (10, (0.65, 0.15, 0.2), [7, 1, 2]),
        (30, (0.65, 0.15, 0.2), [20, 4, 6]),
        (100, (0.65, 0.15, 0.2), [65, 15, 20]),
        (29, (0.8, 0.2), [23, 6]),
        (1, (0.8, 0.2), [1, 0]),
    ],
)
def test_split_counts_by_hand(n, fractions, expected):
    assert cur.split_counts(n, fractions) == expected


def test_split_counts_rejects_bad_fractions():
    with pytest.raises(InputError):
        cur.split_counts(10, (0.5, 0.6))
    with pytest.raises(InputError):
        cur.split_counts(10, (1.2, -0.2))


@given(st.integers(0, 500), st.lists(st.integers(1, 20), min_size=2, max_size=4))
def test_split_counts_properties(n, weights):
    fractions = [w / sum(weights) for w in weights]
    counts = cur.split_counts(n, fractions)
    assert sum(counts) == n and min(counts) >= 0
    if n >= len(fractions):
        assert min(counts) >= 1
    if n >= 40 * len(fractions):  # large enough that the at-least-one rule never moves anything
        assert all(abs(c - f * n) < 1 for c, f in zip(counts, fractions, strict=True))


def reference_split(names: list[str], fractions, labels, seed: int) -> dict[str, str]:
    """Slow reference: sort by sha256(seed NUL name), cut by split_counts."""
    order = sorted(names, key=lambda n: (hashlib.sha256(f"{seed}\x00{n}".encode()).hexdigest(), n))
    counts = cur.split_counts(len(order), fractions)
    out, start = {}, 0
    for label, c in zip(labels, counts, strict=True):
        out.update({n: label for n in order[start : start + c]})
        start += c
    return out


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=40, unique=True),
    st.integers(0, 3),
    st.randoms(use_true_random=False),
)
def test_split_labeled_is_order_independent_and_matches_reference(names, seed, rnd):
    shuffled = list(names)
    rnd.shuffle(shuffled)
    a = split_as_dict(cur.split_labeled(names, seed=seed))
    b = split_as_dict(cur.split_labeled(shuffled, seed=seed))
    assert a == b == reference_split(names, cur.LABELED_FRACTIONS, ("train", "val", "test"), seed)
    ssl = split_as_dict(cur.split_ssl(shuffled, seed=seed), column="ssl_split")
    assert ssl == reference_split(names, cur.SSL_FRACTIONS, ("ssl_train", "ssl_eval"), seed)


def split_as_dict(table: pd.DataFrame, column: str = "split") -> dict[str, str]:
    return dict(zip(table["name"], table[column], strict=True))


def toy_manifest() -> pd.DataFrame:
    rows = []
    for i in range(20):
        rows.append({"name": f"low_{i:02d}", "magnification_bucket": "low", "duplicate_group": -1})
    for i in range(7):
        rows.append({"name": f"high_{i:02d}", "magnification_bucket": "high", "duplicate_group": -1})
    for i in range(3):
        rows.append({"name": f"unk_{i:02d}", "magnification_bucket": None, "duplicate_group": -1})
    rows.append({"name": "tiny_0", "magnification_bucket": "tiny", "duplicate_group": -1})
    table = pd.DataFrame(rows)
    table.loc[table["name"].isin(["low_03", "low_07", "low_11"]), "duplicate_group"] = 0
    return table


def test_split_labeled_per_bucket_with_duplicate_groups_kept_together():
    table = toy_manifest()
    out = cur.split_labeled(table, seed=0)
    assert list(out.index) == list(table.index) and out["name"].tolist() == table["name"].tolist()
    counts = (
        out.groupby(out["magnification_bucket"].fillna("?"))["split"].value_counts().unstack(fill_value=0)
    )
    # low: 18 units (the duplicate group is one unit) → 12/3/3 units; the group's 3 images count together.
    assert counts.loc["high", ["train", "val", "test"]].tolist() == [5, 1, 1]
    assert counts.loc["?", ["train", "val", "test"]].tolist() == [1, 1, 1]
    assert counts.loc["tiny", "train"] == 1 and counts.loc["tiny"].sum() == 1
    dup_splits = out.loc[out["duplicate_group"] == 0, "split"]
    assert dup_splits.nunique() == 1
    low_units = cur.split_counts(18, cur.LABELED_FRACTIONS)
    expected_low = dict(zip(("train", "val", "test"), low_units, strict=True))
    expected_low[dup_splits.iloc[0]] += 2
    assert counts.loc["low", ["train", "val", "test"]].tolist() == [
        expected_low[k] for k in ("train", "val", "test")
    ]
    # Shuffling the rows does not change anything; another seed does.
    again = cur.split_labeled(table.sample(frac=1, random_state=3), seed=0).sort_index()
    assert again["split"].tolist() == out["split"].tolist()
    assert cur.split_labeled(table, seed=1)["split"].tolist() != out["split"].tolist()


def test_split_labeled_input_errors():
    with pytest.raises(InputError, match="magnification_bucket"):
        cur.split_labeled(pd.DataFrame({"name": ["a", "b"]}))
    with pytest.raises(InputError, match="'name'"):
        cur.split_labeled(pd.DataFrame({"file": ["a"]}), stratify=None)
    assert (
        cur.split_labeled(pd.DataFrame({"name": ["a", "b", "c"]}), stratify=None)["split"]
        .tolist()
        .count("train")
        == 1
    )


def test_assign_splits_keeps_evaluation_images_out_of_the_pool():
    table = toy_manifest()
    table["label_path"] = [
        f"labels/{n}.tif" if n.startswith(("low", "high")) else None for n in table["name"]
    ]
    # An unlabeled copy of a labeled image: same duplicate group.
    out = cur.assign_splits(table, seed=0)
    labeled = out["label_path"].notna()
    assert out.loc[~labeled, "split"].isna().all() and out.loc[labeled, "split"].notna().all()
    in_pool = out["ssl_split"].notna()
    assert (in_pool == (~labeled | (out["split"] == "train"))).all()
    # Counts are per unit: the 3-image duplicate group is one unit and moves as a whole.
    group = out[(out["duplicate_group"] == 0) & in_pool]
    n_units = int(in_pool.sum()) - max(len(group) - 1, 0)
    expected = dict(zip(("ssl_train", "ssl_eval"), cur.split_counts(n_units, cur.SSL_FRACTIONS), strict=True))
    if len(group):
        assert group["ssl_split"].nunique() == 1
        expected[group["ssl_split"].iloc[0]] += len(group) - 1
    assert out["ssl_split"].value_counts().to_dict() == expected
    # A duplicate of a test image is never in the pool, even unlabeled.
    test_name = out.loc[out["split"] == "test", "name"].iloc[0]
    table2 = pd.concat(
        [
            table,
            pd.DataFrame(
                [{"name": "copy", "magnification_bucket": None, "duplicate_group": 5, "label_path": None}]
            ),
        ],
        ignore_index=True,
    )
    table2.loc[table2["name"] == test_name, "duplicate_group"] = 5
    out2 = cur.assign_splits(table2, seed=0)
    assert out2.loc[out2["name"] == "copy", "ssl_split"].isna().all()
    with pytest.raises(InputError, match="find_labels"):
        cur.assign_splits(table.drop(columns="label_path"))


def test_ablation_subsets_sizes_and_nesting():
    names = [f"img_{i:03d}" for i in range(100)]
    subsets = cur.ablation_subsets(names, seed=0)
    assert list(subsets) == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64]
    assert [len(v) for v in subsets.values()] == [1, 2, 4, 8, 16, 32, 64]
    small = cur.ablation_subsets(names[:10])
    assert [len(v) for v in small.values()] == [1, 1, 1, 1, 2, 3, 6]  # round half up, at least 1
    assert [len(v) for v in cur.ablation_subsets(names[:25], [0.5, 0.1, 1.0]).values()] == [13, 3, 25]
    with pytest.raises(InputError, match="repeated"):
        cur.ablation_subsets(["a", "a", "b"])
    with pytest.raises(InputError, match="empty"):
        cur.ablation_subsets([])
    with pytest.raises(InputError):
        cur.ablation_subsets(names, [0.0])


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=60, unique=True),
    st.integers(0, 5),
    st.randoms(use_true_random=False),
)
def test_ablation_subsets_are_nested_and_order_independent(names, seed, rnd):
    subsets = cur.ablation_subsets(names, seed=seed)
    shuffled = list(names)
    rnd.shuffle(shuffled)
    assert cur.ablation_subsets(shuffled, seed=seed) == subsets
    sizes = sorted(subsets)
    for small, large in zip(sizes, sizes[1:], strict=False):
        assert set(subsets[small]) <= set(subsets[large])
    for f, chosen in subsets.items():
        assert len(chosen) == max(1, math.floor(f * len(names) + 0.5))


# --------------------------------------------------------------------------------------------------------------
# tiling


@pytest.mark.parametrize(
    ("length", "tile", "stride", "edge", "expected"),
    [
        (1200, 640, 640, "shift", [0, 560]),
        (1200, 640, 640, "drop", [0]),
        (1200, 640, 640, "pad", [0, 640]),
        (1920, 640, 640, "shift", [0, 640, 1280]),
        (500, 640, 640, "shift", []),
        (500, 640, 640, "drop", []),
        (500, 640, 640, "pad", [0]),
        (10, 4, 3, "shift", [0, 3, 6]),
        (11, 4, 3, "shift", [0, 3, 6, 7]),
    ],
)
def test_tile_starts_by_hand(length, tile, stride, edge, expected):
    assert cur.tile_starts(length, tile, stride, edge) == expected


def test_tile_starts_rejects_unknown_policy():
    with pytest.raises(InputError, match="shift, drop, pad"):
        cur.tile_starts(100, 10, 10, "mirror")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.integers(1, 20), st.integers(1, 25))
def test_shift_tiles_are_exact_crops_covering_every_pixel(h, w, tile, stride):
    image = np.arange(h * w, dtype=np.int32).reshape(h, w)
    tiles, offsets, cover = cur.tile_image(image, tile, stride, "shift")
    if h < tile or w < tile:
        assert tiles.shape == (0, tile, tile) and offsets.shape == (0, 2)
        return
    covered = np.zeros((h, w), dtype=bool)
    for t, (y, x) in zip(tiles, offsets, strict=True):
        assert np.array_equal(t, image[y : y + tile, x : x + tile])
        covered[y : y + tile, x : x + tile] = True
    assert np.all(cover == 1.0)
    if stride <= tile:  # a stride longer than the tile skips pixels on purpose
        assert covered.all()
    if stride >= tile:
        assert len(tiles) == len(cur.tile_starts(h, tile, stride)) * len(cur.tile_starts(w, tile, stride))


def test_pad_policy_keeps_partial_tiles_by_coverage():
    image = np.arange(6 * 10, dtype=float).reshape(6, 10)
    tiles, offsets, cover = cur.tile_image(image, tile=8, edge="pad", min_coverage=0.5)
    # Starts y: [0], x: [0, 8]; the (0, 8) tile holds 6x2 real pixels = 19 % < 50 % → dropped.
    assert offsets.tolist() == [[0, 0]] and cover.tolist() == [pytest.approx(48 / 64)]
    assert np.array_equal(tiles[0][:6, :8], image[:, :8])
    assert np.array_equal(tiles[0][6:, :8], image[[5, 4], :8])  # symmetric padding mirrors the last rows
    _, offsets_all, cover_all = cur.tile_image(image, tile=8, edge="pad", min_coverage=0.0)
    assert offsets_all.tolist() == [[0, 0], [0, 8]] and cover_all[1] == pytest.approx(12 / 64)
    with pytest.raises(InputError):
        cur.tile_image(np.zeros((2, 3, 4)))


def test_write_tiles_round_trip_and_small_images(scanned, tmp_path):
    manifest, _, _ = scanned
    tiles, skipped = cur.write_tiles(manifest, tmp_path / "t", tile=128, progress=False)
    assert skipped.empty and len(tiles) == 4 * len(manifest)
    assert list(tiles.columns) == cur.TILE_COLUMNS
    assert (
        cur.load_manifest(tmp_path / "t" / "tiles.parquet")["tile_path"].tolist()
        == tiles["tile_path"].tolist()
    )
    row = tiles[(tiles["name"] == "synthetic_s1_0000") & (tiles["y"] == 128) & (tiles["x"] == 0)].iloc[0]
    tile_img, meta = load_image(tmp_path / "t" / row["tile_path"])
    source, _ = load_image(row["source"])
    assert np.array_equal(tile_img, source[128:256, 0:128])  # exact 8-bit round trip, databar excluded
    assert meta.pixel_size_nm == pytest.approx(7.5) and meta.original_dtype == "uint8"
    near_empty_tiles = tiles.loc[tiles["name"] == "near_empty_s2_0000", "near_empty"]
    assert near_empty_tiles.all() and not tiles.loc[tiles["name"] == "synthetic_s0_0000", "near_empty"].all()
    # Images smaller than the tile are skipped with a reason, or padded on request.
    big, big_skipped = cur.write_tiles(manifest, tmp_path / "big", tile=300, progress=False)
    assert big.empty and len(big_skipped) == len(manifest)
    assert (
        set(big_skipped["stage"]) == {"tile"}
        and "256x256 gives no 300x300 tile" in big_skipped.loc[0, "reason"]
    )
    padded, _ = cur.write_tiles(manifest.head(1), tmp_path / "pad", tile=300, edge="pad", progress=False)
    assert len(padded) == 1 and padded.loc[0, "coverage"] == pytest.approx(256**2 / 300**2)


def test_curation_summary(scanned):
    manifest, skipped, _ = scanned
    splits = cur.assign_splits(cur.find_labels(manifest), seed=0)
    s = cur.curation_summary(splits, skipped, tiles=pd.DataFrame({"a": range(5)}), subsets={0.5: ["a", "b"]})
    assert s["n_images"] == 6 and s["n_skipped"] == 1 and s["n_near_empty"] == 1
    assert s["n_duplicate_groups"] == 1 and s["n_in_duplicate_groups"] == 2
    assert s["n_bucket_high"] == 6 and s["n_bucket_low"] == 0 and s["n_bucket_unknown"] == 0
    assert s["n_train"] + s["n_val"] + s["n_test"] == 6 and min(s["n_train"], s["n_val"], s["n_test"]) >= 1
    assert s["n_ssl_train"] + s["n_ssl_eval"] == s["n_train"] and s["n_tiles"] == 5
    assert s["ablation_sizes"] == {"0.5": 2}


# --------------------------------------------------------------------------------------------------------------
# figures


def test_select_examples_ranks_and_excludes_near_empty_from_focus():
    table = pd.DataFrame(
        {
            "name": ["a", "b", "c", "d", "e"],
            "focus_score": [0.1, 0.5, 0.3, 0.9, 0.2],
            "contrast": [0.5, 0.1, 0.9, 0.05, 0.7],
            "near_empty": [False, False, False, True, False],
            "duplicate_group": [-1, 0, -1, -1, 0],
        }
    )
    ex = cur_plots().select_examples(table, n=2)
    assert list(ex) == [
        "sharpest",
        "least sharp",
        "highest contrast",
        "lowest contrast",
        "near-empty",
        "duplicates",
    ]
    assert ex["sharpest"]["name"].tolist() == ["b", "c"]  # d is near-empty
    assert ex["least sharp"]["name"].tolist() == ["a", "e"]
    assert ex["highest contrast"]["name"].tolist() == ["c", "e"]
    assert ex["lowest contrast"]["name"].tolist() == ["d", "b"]
    assert ex["near-empty"]["name"].tolist() == ["d"]
    assert ex["duplicates"]["name"].tolist() == ["b", "e"]
    assert cur_plots().select_examples(table.assign(near_empty=False, duplicate_group=-1), n=1).keys() == {
        "sharpest",
        "least sharp",
        "highest contrast",
        "lowest contrast",
    }


def cur_plots():
    import matplotlib

    matplotlib.use("Agg")
    from semkit.plotting import curation as plots

    return plots


def test_figures_from_the_demo_manifest(scanned):
    import matplotlib.pyplot as plt

    plots = cur_plots()
    manifest, _, _ = scanned
    fig = plots.plot_example_grid(manifest, n=3)
    axes = np.asarray(fig.axes).reshape(6, 3)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == [
        "sharpest",
        "least sharp",
        "highest contrast",
        "lowest contrast",
        "near-empty",
        "duplicates",
    ]
    top = manifest[~manifest["near_empty"]].sort_values("focus_score").iloc[-1]["name"]
    assert axes[0, 0].get_title().startswith(top[:22])
    assert axes[4, 0].get_title().startswith("near_empty_s2_0000") and not axes[4, 1].images
    plt.close(fig)
    hist = plots.plot_manifest_histograms(manifest.assign(pixel_size_nm=np.nan))
    titles = [ax.get_title() for ax in hist.axes if ax.get_title()]
    assert titles == [*plots.HISTOGRAM_COLUMNS, "magnification_bucket", "near_empty"]
    pixel_ax = hist.axes[titles.index("pixel_size_nm")]
    assert "no values" in pixel_ax.texts[0].get_text()
    near_ax = hist.axes[titles.index("near_empty")]
    assert sorted(p.get_height() for p in near_ax.patches) == [1, 5]
    plt.close(hist)
    empty = plots.plot_example_grid(manifest.iloc[:0])
    assert "no images" in empty.axes[0].texts[0].get_text()
    plt.close(empty)


# --------------------------------------------------------------------------------------------------------------
# command line


def test_curate_command_writes_all_outputs(demo, tmp_path):
    from click.testing import CliRunner

    from semkit.cli.curate import curate

    before = folder_digest(demo)
    out = tmp_path / "cur"
    result = CliRunner().invoke(curate, [str(demo / "images"), "--out", str(out), "--tile", "128"])
    assert result.exit_code == 0, result.output
    assert "6 images, 1 skipped" in result.output
    manifest = cur.load_manifest(out / "manifest.parquet")
    assert len(manifest) == 6 and manifest["label_layout"].eq("instance-folder").all()
    splits = pd.read_csv(out / "splits.csv")
    assert set(splits["split"]) == {"train", "val", "test"}
    skipped = pd.read_csv(out / "skipped.csv")
    assert [Path(p).name for p in skipped["path"]] == ["truncated.tif"]
    tiles = pd.read_parquet(out / "tiles" / "tiles.parquet")
    assert len(tiles) == 4 * splits["ssl_split"].notna().sum()
    assert (out / "ablation_subsets.json").exists()
    assert json.loads((out / "settings.json").read_text())["tile"] == 128
    assert folder_digest(demo) == before

    # A layout name means FOLDER is a dataset root; "none" treats everything as unlabeled.
    root_run = CliRunner().invoke(
        curate, [str(demo), "--out", str(tmp_path / "r"), "--labels-layout", "instance-folder"]
    )
    assert root_run.exit_code == 0, root_run.output
    assert len(cur.load_manifest(tmp_path / "r" / "manifest.parquet")) == 6
    none_run = CliRunner().invoke(
        curate, [str(demo / "images"), "--out", str(tmp_path / "n"), "--labels-layout", "none"]
    )
    assert none_run.exit_code == 0, none_run.output
    none_splits = pd.read_csv(tmp_path / "n" / "splits.csv")
    assert none_splits["split"].isna().all() and none_splits["ssl_split"].notna().all()


def test_curate_command_refuses_bad_arguments(demo, tmp_path):
    from click.testing import CliRunner

    from semkit.cli.curate import curate

    inside = CliRunner().invoke(curate, [str(demo), "--out", str(demo / "out")])
    assert inside.exit_code == 2 and "never written" in inside.output and not (demo / "out").exists()
    missing = CliRunner().invoke(curate, [str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2
    bad = CliRunner().invoke(
        curate, [str(demo / "images"), "--out", str(tmp_path / "o"), "--fractions", "0.5,0.5"]
    )
    assert bad.exit_code == 2 and "3 comma-separated" in bad.output
    wrong_layout = CliRunner().invoke(
        curate, [str(demo / "images"), "--out", str(tmp_path / "o"), "--labels-layout", "bam"]
    )
    assert wrong_layout.exit_code == 2 and "images/" in wrong_layout.output


# --------------------------------------------------------------------------------------------------------------
# real data


@pytest.mark.shared_data
def test_real_bam_images(bam_dir):
    manifest, skipped = cur.scan_folders(bam_dir / "images", progress=False)
    assert len(manifest) == 30 and skipped.empty
    assert manifest["pixel_size_nm"].tolist() == pytest.approx([7.344] * 30)
    assert set(manifest["pixel_size_source"]) == {"zeiss"}
    # The 1024-px width is untouched by the 56-row databar crop: 1024 x 7.344 nm = 7.52 µm ("Width = 7.520 um").
    assert manifest["field_of_view_um"].tolist() == pytest.approx([7.520256] * 30)
    assert set(manifest["magnification_bucket"]) == {"high"}
    assert set(manifest["databar_rows"]) == {56} and set(manifest["height"]) == {712}
    assert set(manifest["magnification"]) == {50000.0} and set(manifest["detector"]) == {"InLens"}
    assert (manifest["duplicate_group"] == -1).all() and not manifest["near_empty"].any()
    labeled = cur.find_labels(manifest)
    assert set(labeled["label_layout"]) == {"bam"}
    splits = cur.assign_splits(labeled)
    assert splits["split"].value_counts().to_dict() == {"train": 20, "val": 4, "test": 6}


@pytest.mark.shared_data
def test_real_phenom_images(phenom_dir):
    before = folder_digest(phenom_dir)
    manifest, skipped = cur.scan_folders(phenom_dir, progress=False)
    assert len(manifest) == 9 and skipped.empty  # SOURCE.md is documentation, not a skipped image
    assert manifest["magnification_bucket"].isna().all() and manifest["pixel_size_nm"].isna().all()
    assert (manifest["databar_rows"] == 0).all()
    sizes = dict(zip(manifest["name"], zip(manifest["height"], manifest["width"], strict=True), strict=True))
    assert sizes["4_Round-3"] == (1200, 1920) and sizes["Fail_Sample_2"] == (600, 960)
    assert folder_digest(phenom_dir) == before
