"""Synthetic HAADF generator: reproducibility, recorded metadata, Z-contrast, layouts."""

from __future__ import annotations

import numpy as np
import pytest

from semkit.errors import InputError
from semkit.stem.synthetic import ELEMENTS, LAYOUTS, make_haadf_image, make_haadf_set


def test_same_seed_same_image_and_metadata():
    a, b = make_haadf_image(256, 3, seed=7), make_haadf_image(256, 3, seed=7)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.meta == b.meta and a.pixel_size_nm == b.pixel_size_nm
    assert not np.array_equal(a.image, make_haadf_image(256, 3, seed=8).image)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_record_elements_and_phases(layout):
    rec = make_haadf_image(256, 3, layout=layout, seed=2)
    assert rec.image.dtype == np.float32 and rec.image.shape == (256, 256)
    assert 0 <= rec.image.min() and rec.image.max() <= 1
    assert rec.meta["n_elements"] == 3 and len(set(rec.meta["elements"])) == 3
    assert set(rec.meta["elements"]) <= set(ELEMENTS)
    n_phases = 1 if layout == "alloyed" else 3
    assert rec.meta["n_phases"] == n_phases and len(rec.meta["phase_levels"]) == n_phases
    # The phase map fills exactly the particle mask, with every phase present.
    np.testing.assert_array_equal(rec.semantic > 0, rec.instances == 1)
    assert sorted(np.unique(rec.semantic[rec.semantic > 0])) == list(range(1, n_phases + 1))
    assert rec.pixel_size_nm > 0 and rec.source == "synthetic://stem/seed=2"


def test_z_contrast_orders_phase_brightness():
    rec = make_haadf_image(512, 2, layout="janus", seed=0)
    levels = rec.meta["phase_levels"]
    z = [ELEMENTS[e] for e in rec.meta["elements"]]
    assert np.argmax(levels) == np.argmax(z)
    expected = [(zi / 79) ** 1.7 for zi in z]
    np.testing.assert_allclose(levels, expected)
    # Measured: the phase of the heavier element is brighter; the particle is brighter than the carbon.
    means = [rec.image[rec.semantic == p].mean() for p in (1, 2)]
    assert np.argmax(means) == np.argmax(z)
    assert min(means) > 2 * rec.image[rec.instances == 0].mean()


def test_one_element_is_alloyed_and_sets_cycle_counts_and_sizes():
    assert make_haadf_image(128, 1, seed=3).meta["layout"] == "alloyed"
    recs = make_haadf_set(6, sizes=(128, 256), seed=1)
    assert [r.meta["n_elements"] for r in recs] == [1, 2, 3, 4, 5, 1]
    assert [r.image.shape[0] for r in recs] == [128, 256] * 3
    assert all(r.meta["n_elements"] == 2 for r in make_haadf_set(3, sizes=(128,), n_elements=2))


def test_bad_generator_arguments():
    with pytest.raises(InputError, match="1–5"):
        make_haadf_image(256, 6)
    with pytest.raises(InputError, match="layout"):
        make_haadf_image(256, 2, layout="onion")
    with pytest.raises(InputError, match="32"):
        make_haadf_image(16, 2)
    with pytest.raises(InputError):
        make_haadf_set(-1)
