"""semkit.data.synthetic: determinism, exact labels (hand-built layouts), certainty rules, databar, disk round
trip, config validation, and intensity statistics next to the real BAM TiO2 images."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from semkit.data.databar import crop_databar, detect_databar
from semkit.data.instance_folder import read_instance_folder
from semkit.data.io import list_images, load_image
from semkit.data.synthetic import (
    Particle,
    SyntheticConfig,
    add_databar,
    make_sem_dataset,
    make_sem_record,
    max_databar_rows,
    write_synthetic_dataset,
)
from semkit.errors import InputError

SMALL = SyntheticConfig(height=128, width=160, n_particles=(15, 30), radius_px=(4.0, 14.0))
UNIT_SQUARE = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [1.0, -1.0]])


def _square(y: float, x: float, side: float, **kwargs) -> Particle:
    """Axis-aligned square of the given side centred at (y, x): equivalent radius side / sqrt(pi)."""
    return Particle(y=y, x=x, radius=side / np.sqrt(np.pi), outline=UNIT_SQUARE, **kwargs)


def _pieces(labels: np.ndarray, lab: int) -> np.ndarray:
    """Sizes of the 4-connected pieces of instance ``lab``."""
    comp, n = ndi.label(labels == lab)
    return np.bincount(comp.ravel(), minlength=n + 1)[1:]


# ---------------------------------------------------------------------------------------------------------------
# determinism


def test_same_seed_is_bit_identical_and_seeds_differ():
    a, b = make_sem_record(7, SMALL, index=2), make_sem_record(7, SMALL, index=2)
    assert a.image.tobytes() == b.image.tobytes()
    assert np.array_equal(a.instances, b.instances) and np.array_equal(a.certain, b.certain)
    assert a.meta == b.meta
    for other in (make_sem_record(8, SMALL, index=2), make_sem_record(7, SMALL, index=3)):
        assert np.abs(other.image - a.image).mean() > 0.01
        assert not np.array_equal(other.instances, a.instances)
    assert a.source == "synthetic://seed=7/index=2"


def test_dataset_image_i_does_not_depend_on_dataset_size():
    records = make_sem_dataset(3, seed=5, config=SMALL)
    assert [r.source for r in records] == [f"synthetic://seed=5/index={i}" for i in range(3)]
    single = make_sem_record(5, SMALL, index=2)
    assert np.array_equal(records[2].image, single.image)
    assert np.array_equal(records[2].instances, single.instances)


# ---------------------------------------------------------------------------------------------------------------
# exact labels and certainty on a hand-built layout


def test_constructed_layout_labels_and_certainty():
    """Squares with pixel-centre-exact edges (x.5 coordinates): every label map pixel is known by hand."""
    config = SyntheticConfig(height=128, width=128, pixel_size_nm=None)
    layout = [  # bottom to top
        _square(30.5, 30.5, 20),  # A: rows/cols 21..40; B hides cols 33..40 -> occlusion 8/20 = 0.4 > 0.35
        _square(30.5, 42.5, 20),  # B: rows 21..40, cols 33..52
        _square(80.5, 30.5, 20),  # C: rows 71..90, cols 21..40; D hides cols 37..40 -> occlusion 0.2
        _square(80.5, 46.5, 20),  # D: rows 71..90, cols 37..56
        _square(5.5, 100.5, 20),  # E: rows -4..15 -> cut by the top border
        _square(9.5, 40.5, 20),  # F: rows 0..19 -> touches the outermost row: cut
        _square(60.5, 60.5, 16, out_of_focus=True),  # G: rows/cols 53..68, out of focus
        _square(60.5, 100.5, 4),  # H: rows 59..62, cols 99..102; I leaves an 8-px remnant -> dropped
        _square(60.5, 104.5, 8),  # I: rows 57..64, cols 101..108
        _square(110.5, 80.5, 20),  # J: rows 101..120, cols 71..90; K splits it into two 160-px pieces
        Particle(y=110.5, x=80.5, radius=np.sqrt(120 / np.pi),  # K: 30 x 4 bar, rows 96..125, cols 79..82
                 outline=np.array([[-15.0, -2.0], [-15.0, 2.0], [15.0, 2.0], [15.0, -2.0]])),
    ]
    rec = make_sem_record(0, config, particles=layout)

    expected = np.zeros((128, 128), dtype=np.int32)
    boxes = {1: (21, 40, 21, 40), 2: (21, 40, 33, 52), 3: (71, 90, 21, 40), 4: (71, 90, 37, 56),
             5: (0, 15, 91, 110), 6: (0, 19, 31, 50), 7: (53, 68, 53, 68), 8: (57, 64, 101, 108),
             9: (101, 120, 71, 90), 10: (96, 125, 79, 82)}
    for lab, (r0, r1, c0, c1) in boxes.items():  # painted bottom to top, as the generator does
        expected[r0:r1 + 1, c0:c1 + 1] = lab
    assert rec.instances.dtype == np.int32
    assert np.array_equal(rec.instances, expected)
    assert rec.meta["n_drawn"] == 11 and rec.meta["n_hidden"] == 1  # H's 8-px remnant went to background
    assert rec.instances[59:63, 99:101].max() == 0

    #                         A      B     C     D     E      F      G      I     J      K
    assert rec.certain.tolist() == [False, True, True, True, False, False, False, True, False, True]
    assert rec.meta["occlusion"][0] == pytest.approx(0.4)
    assert rec.meta["occlusion"][2] == pytest.approx(0.2)
    assert rec.meta["occlusion"][8] == pytest.approx(0.2)
    assert rec.meta["border_cut"] == [False, False, False, False, True, True, False, False, False, False]
    assert rec.meta["out_of_focus"] == [False] * 6 + [True] + [False] * 3
    assert rec.meta["fragments"][8] == 2 and len(_pieces(rec.instances, 9)) == 2
    assert rec.meta["area_px"] == [240, 400, 320, 400, 320, 400, 256, 64, 320, 120]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_out_of_focus_particle_has_soft_edges(seed):
    """Twin squares of equal brightness: the out-of-focus one has much weaker edge gradients."""
    layout = [_square(32.5, 32.5, 20, out_of_focus=True, brightness=0.5), _square(32.5, 92.5, 20, brightness=0.5)]
    rec = make_sem_record(seed, SyntheticConfig(height=64, width=128, noise=0.0), particles=layout)
    assert rec.certain.tolist() == [False, True]
    grad = np.hypot(*np.gradient(rec.image.astype(np.float64)))

    def edge_gradient(lab: int) -> float:
        mask = rec.instances == lab
        band = ndi.binary_dilation(mask, iterations=2) & ~ndi.binary_erosion(mask, iterations=2)
        return float(np.percentile(grad[band], 90))

    assert edge_gradient(1) < 0.6 * edge_gradient(2)


def test_occlusion_threshold_decides_certainty():
    """Same layout, threshold just below and just above A's occlusion of 0.4."""
    layout = [_square(30.5, 30.5, 20), _square(30.5, 42.5, 20)]
    low = make_sem_record(0, SyntheticConfig(height=64, width=80, uncertain_occlusion=0.39), particles=layout)
    high = make_sem_record(0, SyntheticConfig(height=64, width=80, uncertain_occlusion=0.41), particles=layout)
    assert low.certain.tolist() == [False, True]
    assert high.certain.tolist() == [True, True]


def test_fully_hidden_particle_is_not_counted():
    rec = make_sem_record(1, SyntheticConfig(height=64, width=64),
                          particles=[_square(30.5, 30.5, 8), _square(30.5, 30.5, 20)])
    assert rec.n_instances == 1 and rec.meta["n_hidden"] == 1
    assert (rec.instances == 1).sum() == 400


# ---------------------------------------------------------------------------------------------------------------
# properties of random images


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    h=st.integers(24, 96),
    w=st.integers(24, 96),
    n=st.integers(0, 25),
    r_hi=st.floats(2.0, 11.0),
    agglomeration=st.floats(0, 1),
    overlap=st.floats(0, 1),
    oof=st.floats(0, 0.5),
    min_fragment=st.integers(1, 20),
)
def test_label_map_invariants(seed, h, w, n, r_hi, agglomeration, overlap, oof, min_fragment):
    config = SyntheticConfig(height=h, width=w, n_particles=(0, n), radius_px=(1.5, min(r_hi, min(h, w) / 2)),
                             agglomeration=agglomeration, overlap=overlap, out_of_focus_fraction=oof,
                             min_fragment_px=min_fragment)
    rec = make_sem_record(seed, config)
    lab, n_inst = rec.instances, rec.n_instances
    assert rec.image.dtype == np.float32 and rec.image.shape == (h, w) == lab.shape
    assert 0.0 <= rec.image.min() and rec.image.max() <= 1.0
    # Contiguous labels 1..N, each non-empty, with one flag and one meta entry each.
    assert np.array_equal(np.unique(lab[lab > 0]), np.arange(1, n_inst + 1))
    assert len(rec.certain) == n_inst
    meta = rec.meta
    for key in ("occlusion", "out_of_focus", "border_cut", "fragments", "radius_px", "area_px"):
        assert len(meta[key]) == n_inst
    assert meta["area_px"] == np.bincount(lab.ravel(), minlength=n_inst + 1)[1:].tolist()
    assert meta["n_drawn"] - meta["n_hidden"] == n_inst
    border = np.zeros((h, w), dtype=bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    for i in range(n_inst):
        pieces = _pieces(lab, i + 1)
        # Connectivity rule: no piece below min_fragment_px; a particle split into several pieces is uncertain.
        assert pieces.min() >= min_fragment and len(pieces) == meta["fragments"][i]
        assert 0.0 <= meta["occlusion"][i] <= 1.0
        if (lab[border] == i + 1).any():
            assert meta["border_cut"][i] and not rec.certain[i]
        expected_certain = not (meta["occlusion"][i] > config.uncertain_occlusion or meta["out_of_focus"][i]
                                or meta["border_cut"][i] or meta["fragments"][i] > 1)
        assert rec.certain[i] == expected_certain


def test_default_images_are_mostly_connected_and_mixed_certainty():
    records = make_sem_dataset(2, seed=0)
    flags = np.concatenate([r.certain for r in records])
    split = sum(f > 1 for r in records for f in r.meta["fragments"])
    assert 70 <= sum(r.n_instances for r in records) <= 240
    assert split <= 0.1 * len(flags)  # "mostly connected": at most 10 % of particles are split by occluders
    assert 0.4 < flags.mean() < 0.9  # both classes well represented, certain the majority


def test_instances_are_bright_regions():
    for rec in make_sem_dataset(3, seed=11, config=SMALL):
        lab = rec.instances
        background = rec.image[~ndi.binary_dilation(lab > 0, iterations=3)]
        per_instance = ndi.mean(rec.image, lab, np.arange(1, rec.n_instances + 1))
        assert rec.image[lab > 0].mean() > background.mean() + 0.15
        assert np.mean(per_instance > np.percentile(background, 99)) > 0.9


def test_agglomeration_controls_touching():
    def touching_fraction(lab: np.ndarray) -> float:
        touch = np.zeros(lab.max() + 1, dtype=bool)
        for a, b in ((lab[:, :-1], lab[:, 1:]), (lab[:-1], lab[1:])):
            m = (a != b) & (a > 0) & (b > 0)
            touch[a[m]] = touch[b[m]] = True
        return float(touch[1:].mean())

    base = SyntheticConfig(height=256, width=256, n_particles=(30, 30), radius_px=(5.0, 12.0))
    scattered = np.mean([touching_fraction(make_sem_record(s, replace(base, agglomeration=0.0)).instances)
                         for s in range(3)])
    clustered = np.mean([touching_fraction(make_sem_record(s, replace(base, agglomeration=1.0)).instances)
                         for s in range(3)])
    assert clustered > 0.85 and clustered > scattered + 0.4


def test_charging_streaks_are_horizontal_and_bright():
    base = SyntheticConfig(height=128, width=256, noise=0.0, charging_streaks=0.0)
    clean = make_sem_record(4, base).image.astype(np.float64)
    streaky = make_sem_record(4, replace(base, charging_streaks=1.0)).image.astype(np.float64)
    diff = streaky - clean
    assert diff.min() >= -1e-6 and diff.max() > 0.05  # streaks only add signal (before clipping at 1)
    comp, n = ndi.label(diff > 0.01)
    assert n >= 1
    for sl in ndi.find_objects(comp):
        assert sl[1].stop - sl[1].start > 3 * (sl[0].stop - sl[0].start)


def test_edge_brightening_makes_rims_brighter_than_interiors():
    def rim_minus_core(strength: float) -> float:
        rec = make_sem_record(2, replace(SMALL, edge_brightening=strength, noise=0.0, blur_sigma=(0.0, 0.0),
                                         out_of_focus_fraction=0.0))
        fg = rec.instances > 0
        dist = ndi.distance_transform_edt(fg)
        return float(rec.image[(dist >= 1) & (dist <= 2)].mean() - rec.image[(dist >= 4) & (dist <= 8)].mean())

    assert rim_minus_core(0.6) > rim_minus_core(0.0) + 0.05


# ---------------------------------------------------------------------------------------------------------------
# databar and disk round trip


@pytest.mark.parametrize("rows", [8, 40])
def test_databar_rendered_and_detected(rows):
    rec = make_sem_record(3, replace(SMALL, databar_rows=rows))
    assert rec.image.shape == rec.instances.shape == (128, 160)  # the record holds the specimen only
    assert rec.meta["databar_rows"] == rows
    on_disk = add_databar(rec)
    assert on_disk.shape == (128 + rows, 160) and on_disk.dtype == np.float32
    assert np.array_equal(on_disk[:128], rec.image)
    assert np.mean(on_disk[128:] == 0) > 0.8 and on_disk[128:].max() == 1.0  # black bar, white text
    assert detect_databar(on_disk) == rows
    assert detect_databar(rec.image) == 0


def test_max_databar_rows_is_the_detectable_limit():
    rows = max_databar_rows(200)
    rec = make_sem_record(0, SyntheticConfig(height=200, width=96, databar_rows=rows))
    assert detect_databar(add_databar(rec)) == rows
    with pytest.raises(InputError, match="databar_rows"):
        SyntheticConfig(height=200, width=96, databar_rows=rows + 1)


@pytest.mark.parametrize("rows", [0, 24])
def test_write_and_read_back(tmp_path, rows):
    config = replace(SMALL, databar_rows=rows)
    root = write_synthetic_dataset(tmp_path / "syn", 2, seed=9, config=config)
    records = make_sem_dataset(2, seed=9, config=config)
    assert [p.name for p in list_images(root / "images")] == ["synthetic_s9_0000.tif", "synthetic_s9_0001.tif"]
    back = read_instance_folder(root)
    assert len(back) == 2
    for rec, got in zip(records, back, strict=True):
        image, found, labels = crop_databar(got.image, None, got.instances)
        assert found == rows and got.image.shape == (128 + rows, 160)
        assert np.array_equal(labels, rec.instances)
        assert np.array_equal(got.certain, rec.certain)
        assert got.pixel_size_nm == pytest.approx(7.5, rel=1e-6)
        assert np.abs(image - rec.image).max() <= 0.5 / 255 + 1e-6  # 8-bit quantisation only
    info = json.loads((root / "synthetic.json").read_text())
    assert info["seed"] == 9 and info["n"] == 2
    assert SyntheticConfig.from_dict(info["config"]) == config


def test_uncalibrated_records_have_no_pixel_size(tmp_path):
    config = replace(SMALL, pixel_size_nm=None)
    rec = make_sem_record(0, config)
    assert rec.pixel_size_nm is None and rec.magnification_bucket is None
    assert make_sem_record(0, SMALL).magnification_bucket == "high"  # 160 px x 7.5 nm = 1.2 µm wide
    back = read_instance_folder(write_synthetic_dataset(tmp_path, 1, config=config))
    assert back[0].pixel_size_nm is None


# ---------------------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"radius_px": (-2.0, 5.0)}, "radius_px"),
        ({"radius_px": (8.0, 4.0)}, "radius_px"),
        ({"radius_px": (2.0, 400.0)}, "radius_px"),
        ({"n_particles": (-1, 5)}, "n_particles"),
        ({"n_particles": (5,)}, "n_particles"),
        ({"height": 8}, "size"),
        ({"width": 100.5}, "width"),
        ({"agglomeration": 1.5}, "agglomeration"),
        ({"noise": -0.1}, "noise"),
        ({"blur_sigma": (-1.0, 1.0)}, "blur_sigma"),
        ({"databar_rows": 3}, "databar_rows"),
        ({"pixel_size_nm": 0.0}, "pixel_size_nm"),
        ({"pixel_size_nm": float("nan")}, "pixel_size_nm"),
        ({"uncertain_occlusion": 2.0}, "uncertain_occlusion"),
    ],
)
def test_invalid_config_is_input_error(kwargs, field):
    with pytest.raises(InputError, match=field):
        SyntheticConfig(**kwargs)


def test_other_bad_input():
    with pytest.raises(InputError, match="valid keys"):
        SyntheticConfig.from_dict({"radius": 3})
    with pytest.raises(InputError, match="non-negative"):
        make_sem_dataset(-1)
    with pytest.raises(InputError, match="seed"):
        make_sem_record(-3, SMALL)
    with pytest.raises(InputError, match=r"particles\[0\]"):
        make_sem_record(0, SMALL, particles=[Particle(y=10, x=10, radius=0.0)])
    with pytest.raises(InputError, match=r"particles\[1\]\.outline"):
        make_sem_record(0, SMALL, particles=[_square(20, 20, 5), Particle(10, 10, 3, outline=np.zeros((2, 2)))])
    config = SyntheticConfig()
    config.overlap = -1  # mutated after construction: caught when used
    with pytest.raises(InputError, match="overlap"):
        make_sem_record(0, config)


# ---------------------------------------------------------------------------------------------------------------
# realism next to real SE images


@pytest.mark.shared_data
def test_intensity_statistics_resemble_bam(bam_dir):
    """Substrate level, particle contrast and fine-scale noise within a factor of the real BAM TiO2 images."""

    def stats(image: np.ndarray, fg: np.ndarray) -> tuple[float, float, float]:
        bg = ~ndi.binary_dilation(fg, iterations=5)
        core = ndi.binary_erosion(fg, iterations=4)
        high_pass = image - ndi.gaussian_filter(image, 2)
        return float(image[bg].mean()), float(image[core].mean() - image[bg].mean()), float(high_pass[bg].std())

    real = []
    for path in list_images(bam_dir / "images")[:3]:
        image, _ = load_image(path)
        mask, _ = load_image(bam_dir / "instances" / f"{path.stem}_m.tif")
        real.append(stats(image[:704], mask[:704] > 0.5))  # rows below 704 are the databar
    synthetic = [stats(r.image, r.instances > 0) for r in make_sem_dataset(2, seed=0)]
    real_mean, syn_mean = np.mean(real, axis=0), np.mean(synthetic, axis=0)
    ratio = syn_mean / real_mean
    assert 0.5 < ratio[0] < 1.5, (real_mean, syn_mean)  # substrate brightness
    assert 0.7 < ratio[1] < 1.4, (real_mean, syn_mean)  # particle-substrate contrast
    assert 0.5 < ratio[2] < 3.0, (real_mean, syn_mean)  # noise
