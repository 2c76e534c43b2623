"""Synthetic HAADF-STEM images of single multi-element nanoparticles on amorphous carbon.

No public HAADF megalibrary dataset is available, so the STEM boxing pipeline is developed and tested on these.
The image model follows HAADF (Z-contrast) imaging: a pixel's signal is roughly proportional to the projected
thickness times Z^1.7 of the atoms in the column (Pennycook, *Ultramicroscopy* 30 (1989) 58), blurred by the
probe, and recorded with shot (Poisson) noise and detector (Gaussian) noise.

Each image holds one convex, faceted particle with one to five elements arranged in one of four phase layouts
(:data:`LAYOUTS`): core–shell, Janus, segregated domains or alloyed. The element count, the elements, the layout,
the ground-truth particle mask and phase map are recorded on the returned :class:`~semkit.data.SEMRecord`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from semkit.data.records import SEMRecord
from semkit.errors import InputError

#: Elements found in nanoparticle megalibraries and their atomic numbers (HAADF contrast ∝ Z^1.7).
ELEMENTS = {"Au": 79, "Pt": 78, "Sn": 50, "Ag": 47, "Pd": 46, "Cu": 29, "Ni": 28, "Co": 27}
#: Phase arrangements the generator draws from.
LAYOUTS = ("core-shell", "janus", "segregated", "alloyed")
#: Atomic number of the amorphous carbon support.
Z_CARBON = 6
#: HAADF intensity exponent.
Z_EXPONENT = 1.7


def _convex_polygon(rng: np.random.Generator, size: int, diameter: float, center: tuple[float, float]):
    """A faceted convex particle: vertices on a rotated ellipse at sorted random angles (convex position)."""
    from skimage.draw import polygon2mask

    n_vertices = int(rng.integers(6, 13))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n_vertices))
    aspect = rng.uniform(0.7, 1.0)
    rot = rng.uniform(0, np.pi)
    a, b = diameter / 2, diameter / 2 * aspect
    x, y = a * np.cos(angles), b * np.sin(angles)
    xr = center[1] + x * np.cos(rot) - y * np.sin(rot)
    yr = center[0] + x * np.sin(rot) + y * np.cos(rot)
    return polygon2mask((size, size), np.stack([yr, xr], axis=1)), rot


def _phase_map(rng, mask: np.ndarray, depth: np.ndarray, layout: str, n_phases: int, rot: float) -> np.ndarray:
    """uint8 map: 0 outside the particle, 1..n_phases inside, arranged as ``layout``."""
    phases = np.zeros(mask.shape, dtype=np.uint8)
    if n_phases == 1 or layout == "alloyed":
        phases[mask] = 1
        return phases
    rr, cc = np.nonzero(mask)
    cy, cx = rr.mean(), cc.mean()
    if layout == "core-shell":
        # Concentric shells by distance to the particle's edge (shells follow the facets).
        inner = depth[mask]
        frac = inner / inner.max()
        bounds = np.sort(rng.uniform(0.15, 0.85, n_phases - 1))
        phases[mask] = 1 + np.searchsorted(bounds, frac)
    elif layout == "janus":
        # Parallel slabs across the particle, one per phase (two phases: the classic Janus particle).
        theta = rot + rng.uniform(0, np.pi)
        t = (cc - cx) * np.cos(theta) + (rr - cy) * np.sin(theta)
        q = np.quantile(t, np.linspace(0, 1, n_phases + 1)[1:-1] + rng.uniform(-0.1, 0.1, n_phases - 1))
        phases[mask] = 1 + np.searchsorted(np.sort(q), t)
    elif layout == "segregated":
        # Voronoi domains around random seeds inside the particle; every phase owns at least one domain.
        n_seeds = int(rng.integers(n_phases, 2 * n_phases + 3))
        pick = rng.choice(rr.size, n_seeds, replace=False)
        seeds = np.stack([rr[pick], cc[pick]], axis=1).astype(np.float64)
        owner = np.concatenate([np.arange(n_phases), rng.integers(0, n_phases, n_seeds - n_phases)])
        _, nearest = cKDTree(seeds).query(np.stack([rr, cc], axis=1))
        phases[mask] = 1 + owner[nearest]
    else:
        raise InputError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    return phases


def make_haadf_image(
    size: int = 1024,
    n_elements: int = 2,
    layout: str | None = None,
    seed: int = 0,
    diameter_fraction: tuple[float, float] = (0.3, 0.7),
    dose: float | None = None,
) -> SEMRecord:
    """One synthetic HAADF image of a single nanoparticle.

    Args:
        size: image side in pixels (the study's images are 512 or 1024).
        n_elements: elements in the particle (1–5), drawn without replacement from :data:`ELEMENTS`.
        layout: one of :data:`LAYOUTS`; ``None`` draws one (always ``"alloyed"`` for one element).
        seed: everything (shape, position, magnification, phases, noise) follows from it.
        diameter_fraction: range of the particle's diameter as a fraction of the field of view (the
            magnification).
        dose: electrons per pixel at the brightest phase; ``None`` draws 30–300 (Poisson noise level).

    Returns:
        :class:`SEMRecord` with ``image`` float32 (size, size) in [0, 1], ``instances`` the particle mask (1),
        ``semantic`` the phase map (0 background, 1..P phases), ``pixel_size_nm``, ``source``
        ``synthetic://stem/seed=S`` and ``meta`` holding ``n_elements``, ``elements``, ``layout``, ``n_phases``,
        ``phase_levels`` (noise-free intensity of each phase, before thickness) and ``diameter_nm``.

    Raises:
        InputError: for ``n_elements`` outside 1–5, an unknown layout or ``size < 32``.
    """
    if not 1 <= n_elements <= 5:
        raise InputError(f"n_elements must be 1–5, got {n_elements}")
    if size < 32:
        raise InputError(f"size must be >= 32 pixels, got {size}")
    rng = np.random.default_rng(seed)
    if layout is None:
        layout = "alloyed" if n_elements == 1 else str(rng.choice(LAYOUTS))
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    names = [str(e) for e in rng.choice(list(ELEMENTS), n_elements, replace=False)]

    # Magnification and position: particle diameter as a fraction of the field, centre kept inside.
    frac = rng.uniform(*diameter_fraction)
    diameter = frac * size
    margin = 0.5 * diameter + 0.05 * size
    center = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
    mask, rot = _convex_polygon(rng, size, diameter, center)
    diameter_nm = rng.uniform(8.0, 40.0)
    pixel_size_nm = diameter_nm / diameter

    # Phases: each is rich in one element (segregated/janus/core-shell) or the whole particle is the alloy.
    n_phases = 1 if layout == "alloyed" else n_elements
    # Distance to the particle's edge: shells of the core-shell layout and the projected thickness.
    depth = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    phases = _phase_map(rng, mask, depth, layout, n_phases, rot)
    if n_phases == 1:
        z_phase = np.array([np.mean([ELEMENTS[e] for e in names])])
    else:
        z_phase = np.array([ELEMENTS[e] for e in names], dtype=np.float64)
    levels = (z_phase / ELEMENTS["Au"]) ** Z_EXPONENT

    # Projected thickness: flat top, rounded rim (faceted particle seen from above).
    thickness = np.clip(depth / (0.06 * diameter), 0, 1) ** 0.5
    signal = np.zeros((size, size), dtype=np.float64)
    signal[mask] = levels[phases[mask] - 1] * thickness[mask]

    # Amorphous carbon: low Z, smooth thickness variation (drawn on a coarse grid and interpolated, which is
    # much cheaper than a wide Gaussian filter at 1024²) plus fine-grained texture.
    carbon_level = (Z_CARBON / ELEMENTS["Au"]) ** Z_EXPONENT * rng.uniform(1.0, 3.0)
    coarse = ndi.gaussian_filter(rng.standard_normal((16, 16)), 2.0, mode="wrap")
    smooth = ndi.zoom(coarse / (coarse.std() + 1e-12), size / 16, order=1, mode="nearest", grid_mode=True)
    texture = ndi.gaussian_filter(rng.standard_normal((size, size)), 1.5, mode="wrap")
    texture /= texture.std() + 1e-12
    carbon = carbon_level * (1 + 0.15 * smooth + 0.3 * texture).clip(0.2, None)
    signal += carbon

    # Probe blur (Gaussian probe, about 1–2 px at 1024), then shot noise and detector noise.
    signal = ndi.gaussian_filter(signal, rng.uniform(0.6, 1.6) * size / 1024, mode="nearest")
    dose = float(rng.uniform(30, 300) if dose is None else dose)
    counts = rng.poisson(signal * dose).astype(np.float64) / dose
    counts += rng.normal(0.0, 0.01, counts.shape)
    image = (counts / (1.15 * (levels.max() + carbon_level * 1.5))).clip(0, 1).astype(np.float32)

    return SEMRecord(
        image=image,
        instances=mask.astype(np.int32),
        semantic=phases,
        pixel_size_nm=float(pixel_size_nm),
        source=f"synthetic://stem/seed={seed}",
        meta={
            "n_elements": int(n_elements),
            "elements": names,
            "layout": layout,
            "n_phases": int(n_phases),
            "phase_levels": [float(v) for v in levels],
            "diameter_nm": float(diameter_nm),
            "dose": dose,
        },
    )


def make_haadf_set(
    n_images: int, sizes: tuple[int, ...] = (512, 1024), seed: int = 0, n_elements: int | None = None
) -> list[SEMRecord]:
    """A reproducible set of synthetic HAADF images cycling through sizes and element counts 1–5.

    Args:
        n_images: number of images.
        sizes: image sides to alternate between.
        seed: base seed; image ``i`` uses ``seed * 100_003 + i``.
        n_elements: fixed element count, or ``None`` to cycle 1, 2, 3, 4, 5.

    Returns:
        List of :class:`SEMRecord` as from :func:`make_haadf_image`.
    """
    if n_images < 0:
        raise InputError(f"n_images must be >= 0, got {n_images}")
    return [
        make_haadf_image(
            size=sizes[i % len(sizes)],
            n_elements=n_elements if n_elements is not None else 1 + i % 5,
            seed=seed * 100_003 + i,
        )
        for i in range(n_images)
    ]
