"""Synthetic SEM powder images with exact instance labels: the embedded default data of semkit.

``make demo`` and the tests must run on a fresh machine without downloads, so semkit draws its own SEM-like
images of powder particles on a substrate, modelled on secondary-electron (SE) micrographs such as the BAM TiO2
set (Ruehle et al., Sci. Rep. 11, 4942, 2021) and Phenom desktop-SEM powders:

* particles: rounded or faceted, convex-ish outlines, some elongated, log-normal sizes, grown into agglomerates
  by attaching each new particle to a member of a cluster (touching and overlapping), the rest scattered;
* image formation: dark textured substrate, bright particles with an SE edge effect (brighter rims where
  electrons escape through the side walls), directional topographic shading from the outline's distance
  transform (facets for polygons, domes for round particles), surface grain, faint shadows next to particles,
  out-of-focus particles, Gaussian probe blur, Poisson shot noise, scan-line jitter and horizontal charging
  streaks; optionally an instrument-style databar (black, white text) below the image.

The labels are exact by construction. Particles are painted bottom to top (painter's algorithm), so the
instance map holds the *visible* part of every particle: where two overlap, the pixels belong to the one on
top. Visible remnants smaller than ``min_fragment_px`` (4-connected pieces) go to background and a particle
without any remaining piece is not counted. A particle whose visible part is split by an occluder into several
large pieces stays one instance (it is one physical particle), so instances are not always connected; such a
particle is always uncertain. A particle is *uncertain* (``certain[i] == False``) when more than
``uncertain_occlusion`` of its in-image area is hidden by others, when it is rendered out of focus, when its
outline is cut by the image border (or touches the outermost pixel row/column), or when it is split.

The databar convention: :func:`make_sem_record` returns the specimen image *without* the bar, with labels of
the same size, and ``meta["databar_rows"]`` says how many rows the bar adds below it on disk.
:func:`add_databar` renders those rows, and :func:`write_synthetic_dataset` writes the image with the bar and
the label map padded with the same number of background (0) rows, so image and labels keep one size on disk
as :mod:`semkit.data.instance_folder` requires; ``crop_databar(image, None, labels)`` recovers the record.

Every random choice comes from ``numpy.random.default_rng([seed, index])``: the same ``(seed, index)`` gives
bit-identical arrays, and image ``index`` of a dataset does not depend on how many images are drawn.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from semkit.data.databar import MAX_BAR_FRACTION, MIN_BAR_ROWS
from semkit.data.folders import magnification_bucket
from semkit.data.records import SEMRecord
from semkit.errors import InputError

#: Number of outline points of smooth (non-faceted) particles.
_SMOOTH_POINTS = 48
#: Particles are rasterised at this many sub-pixels per pixel edge (odd, so one sub-pixel sits at the centre).
_SUPERSAMPLE = 3


@dataclass
class SyntheticConfig:
    """Settings of the synthetic SEM powder-image generator (one object, saved as JSON with a dataset).

    Ranges are ``(low, high)`` pairs from which every image draws its own value.

    Attributes:
        height: specimen image rows (without the databar).
        width: image columns.
        n_particles: range of the number of particles drawn per image (before fully hidden ones are dropped).
        radius_px: range of the equivalent radius (radius of the circle of equal area) in pixels; sizes are
            log-normal within it.
        agglomeration: fraction of particles grown into clusters; 0 = all scattered, 1 = all in clusters.
        overlap: how far particles in a cluster may overlap: neighbours sit at ``(1 - overlap * u)`` times the
            sum of their radii, ``u`` uniform in [0, 1]; 0 = only touching.
        blur_sigma: range of the Gaussian probe blur (pixels).
        noise: shot-noise level, the relative standard deviation at full brightness (``1 / sqrt(electrons)``);
            0 = noise-free.
        edge_brightening: strength of the SE edge effect (bright rims), relative to the particle brightness.
        charging_streaks: probability that an image shows horizontal charging streaks (also scales their
            strength); 0 = never.
        substrate_texture: amplitude of the substrate texture (blotches and faint worm-like features).
        out_of_focus_fraction: probability that a particle is rendered out of focus (and therefore uncertain).
        databar_rows: rows of the instrument-style databar written below the image on disk; 0 = none, else at
            least ``MIN_BAR_ROWS`` (8) so :func:`semkit.data.databar.detect_databar` can find it.
        pixel_size_nm: physical pixel size recorded on the record (and written to disk); ``None`` =
            uncalibrated.
        uncertain_occlusion: particles with more than this fraction of their in-image area hidden by other
            particles are uncertain.
        min_fragment_px: visible pieces (4-connected) smaller than this many pixels go to background.
        substrate_level: range of the mean substrate brightness.
        particle_level: range of the per-particle base brightness (before rims and shading).
        defocus_sigma: range of the extra blur of out-of-focus particles (pixels).
    """

    height: int = 512
    width: int = 512
    n_particles: tuple[int, int] = (40, 120)
    radius_px: tuple[float, float] = (6.0, 28.0)
    agglomeration: float = 0.6
    overlap: float = 0.3
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    noise: float = 0.04
    edge_brightening: float = 0.35
    charging_streaks: float = 0.2
    substrate_texture: float = 0.3
    out_of_focus_fraction: float = 0.08
    databar_rows: int = 0
    pixel_size_nm: float | None = 7.5
    uncertain_occlusion: float = 0.35
    min_fragment_px: int = 10
    substrate_level: tuple[float, float] = (0.10, 0.20)
    particle_level: tuple[float, float] = (0.38, 0.60)
    defocus_sigma: tuple[float, float] = (2.5, 5.0)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every setting; raise :class:`InputError` saying which one is wrong and why."""
        for name in (
            "n_particles",
            "radius_px",
            "blur_sigma",
            "substrate_level",
            "particle_level",
            "defocus_sigma",
        ):
            value = getattr(self, name)
            if not isinstance(value, Sequence) or len(value) != 2:
                raise InputError(f"SyntheticConfig.{name} must be a (low, high) pair, got {value!r}")
            setattr(self, name, tuple(value))
        for name in ("height", "width", "databar_rows", "min_fragment_px"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool):
                raise InputError(f"SyntheticConfig.{name} must be an integer, got {value!r}")
        if self.height < 16 or self.width < 16:
            raise InputError(
                f"SyntheticConfig image size must be at least 16 x 16, got {self.height} x {self.width}"
            )
        lo, hi = self.n_particles
        if not (isinstance(lo, int | np.integer) and isinstance(hi, int | np.integer)) or not 0 <= lo <= hi:
            raise InputError(
                f"SyntheticConfig.n_particles must be integers 0 <= low <= high, got {self.n_particles}"
            )
        self._check_range("radius_px", low_min=1.0, strictly_positive=True)
        if self.radius_px[1] > min(self.height, self.width) / 2:
            raise InputError(
                f"SyntheticConfig.radius_px upper bound {self.radius_px[1]} exceeds half the image "
                f"size ({min(self.height, self.width) / 2})"
            )
        self._check_range("blur_sigma", low_min=0.0)
        self._check_range("defocus_sigma", low_min=0.0)
        self._check_range("substrate_level", low_min=0.0, high_max=1.0)
        self._check_range("particle_level", low_min=0.0, high_max=1.0)
        for name in (
            "agglomeration",
            "overlap",
            "charging_streaks",
            "out_of_focus_fraction",
            "uncertain_occlusion",
        ):
            self._check_scalar(name, 0.0, 1.0)
        for name in ("noise", "edge_brightening", "substrate_texture"):
            self._check_scalar(name, 0.0, math.inf)
        if self.min_fragment_px < 1:
            raise InputError(f"SyntheticConfig.min_fragment_px must be >= 1, got {self.min_fragment_px}")
        if self.databar_rows != 0:
            max_rows = max_databar_rows(self.height)
            if not MIN_BAR_ROWS <= self.databar_rows <= max_rows:
                raise InputError(
                    f"SyntheticConfig.databar_rows must be 0 or within [{MIN_BAR_ROWS}, {max_rows}] "
                    f"for height {self.height}, got {self.databar_rows}"
                )
        if self.pixel_size_nm is not None and not (
            math.isfinite(self.pixel_size_nm) and self.pixel_size_nm > 0
        ):
            raise InputError(
                f"SyntheticConfig.pixel_size_nm must be positive or None, got {self.pixel_size_nm}"
            )

    def _check_scalar(self, name: str, low: float, high: float) -> None:
        value = getattr(self, name)
        if not isinstance(value, int | float | np.number) or not low <= float(value) <= high:
            raise InputError(f"SyntheticConfig.{name} must be a number in [{low}, {high}], got {value!r}")

    def _check_range(
        self, name: str, low_min: float, high_max: float = math.inf, strictly_positive: bool = False
    ) -> None:
        lo, hi = getattr(self, name)
        ok = all(isinstance(v, int | float | np.number) and math.isfinite(v) for v in (lo, hi))
        if not ok or not (low_min <= lo <= hi <= high_max) or (strictly_positive and lo <= 0):
            raise InputError(
                f"SyntheticConfig.{name} must be numbers {low_min} <= low <= high <= {high_max}, "
                f"got {getattr(self, name)}"
            )

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dictionary (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> SyntheticConfig:
        """Inverse of :meth:`to_dict`; an unknown key is an :class:`InputError` listing the valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(
                f"unknown SyntheticConfig keys {unknown}; valid keys: {', '.join(sorted(names))}"
            )
        return cls(**values)


def max_databar_rows(height: int) -> int:
    """Tallest databar that :func:`semkit.data.databar.detect_databar` still finds below an image of ``height``
    rows: it searches only the bottom ``MAX_BAR_FRACTION`` of the written (taller) image and rejects a uniform
    band that fills its whole search window."""
    rows = int(height * MAX_BAR_FRACTION / (1 - MAX_BAR_FRACTION))
    while rows > 0 and rows >= int((height + rows) * MAX_BAR_FRACTION):
        rows -= 1
    return rows


@dataclass
class Particle:
    """One particle of an explicit layout (see ``particles=`` of :func:`make_sem_record`).

    Attributes:
        y: centre row in pixels (may lie outside the image).
        x: centre column in pixels.
        radius: equivalent radius in pixels (the outline is scaled so its area is ``pi * radius**2``).
        aspect: ratio of the long to the short axis (1 = isotropic).
        angle: orientation of the long axis in radians (counter-clockwise from the x axis).
        outline: (K, 2) polygon ``(row, col)`` around the origin giving the shape; ``None`` = circle/ellipse.
            It is re-centred, stretched by ``aspect``, rotated and scaled to the equivalent radius.
        out_of_focus: render this particle blurred (it is then uncertain).
        brightness: base brightness; ``None`` draws one from ``SyntheticConfig.particle_level``.
    """

    y: float
    x: float
    radius: float
    aspect: float = 1.0
    angle: float = 0.0
    outline: np.ndarray | None = field(default=None, repr=False)
    out_of_focus: bool = False
    brightness: float | None = None


def make_sem_record(
    seed: int,
    config: SyntheticConfig | None = None,
    index: int = 0,
    particles: Sequence[Particle] | None = None,
) -> SEMRecord:
    """Draw one synthetic SEM powder image with its exact visible-instance labels and certainty flags.

    Args:
        seed: random seed; with ``index`` it fixes every random choice.
        config: generator settings; ``None`` = defaults.
        index: image number within a dataset (``make_sem_dataset`` passes 0..n-1).
        particles: explicit layout, listed bottom (first) to top (last), instead of a random one; substrate,
            shading and noise are still drawn from the seed. Used for constructed test cases and teaching.

    Returns:
        A :class:`SEMRecord` with ``image`` float32 (H, W) in [0, 1] (no databar), ``instances`` int32 (H, W)
        (0 = background, 1..N visible particles, numbered in drawing order), ``certain`` bool (N,),
        ``pixel_size_nm``, ``source = "synthetic://seed={seed}/index={index}"`` and ``meta`` holding
        ``databar_rows`` (rows added below the image on disk), ``blur_sigma``, ``n_drawn``, ``n_hidden``
        and per-instance lists ``occlusion`` (hidden fraction of the in-image area), ``out_of_focus``,
        ``border_cut``, ``fragments`` (number of visible pieces), ``radius_px`` and ``area_px``.

    Raises:
        InputError: for an invalid configuration or particle layout.
    """
    config = SyntheticConfig() if config is None else config
    config.validate()
    for name, value in (("seed", seed), ("index", index)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
            raise InputError(f"synthetic image {name} must be a non-negative integer, got {value!r}")
    rng = np.random.default_rng([int(seed), int(index)])
    h, w = config.height, config.width
    if particles is None:
        particles = _random_particles(rng, config)
    else:
        particles = [_checked_particle(p, i) for i, p in enumerate(particles)]
    looks = _particle_looks(rng, config, particles)

    canvas, base = _substrate(rng, (h, w), config)
    # Surface texture at two scales (fine grain, coarse lumps); each particle picks its own amplitudes.
    texture = np.stack([_smooth_noise(rng, (h, w), rng.uniform(1.5, 3.0)), _smooth_noise(rng, (h, w), 10.0)])
    painted, full_area, border_cut = _paint_particles(canvas, particles, looks, texture, config)
    labels, visible_area, fragments = _visible_instances(painted, len(particles), config.min_fragment_px)
    # Pixels whose label was dropped as a remnant still show that particle: keep the image as rendered, they are
    # only a few pixels each and annotators ignore such slivers too.
    image, blur_sigma = _acquire(rng, canvas, painted, particles, config, base)

    kept = np.flatnonzero(visible_area > 0)
    occlusion = 1.0 - visible_area[kept] / np.maximum(full_area[kept], 1)
    oof = np.array([particles[i].out_of_focus for i in kept], dtype=bool)
    cut = border_cut[kept]
    split = fragments[kept] > 1
    certain = ~((occlusion > config.uncertain_occlusion) | oof | cut | split)

    pixel_size = config.pixel_size_nm
    bucket = magnification_bucket(None if pixel_size is None else w * pixel_size / 1000.0)
    meta = {
        "generator": "semkit.data.synthetic",
        "seed": int(seed),
        "index": int(index),
        "databar_rows": int(config.databar_rows),
        "blur_sigma": float(blur_sigma),
        "n_drawn": len(particles),
        "n_hidden": int(len(particles) - len(kept)),
        "occlusion": [round(float(v), 4) for v in occlusion],
        "out_of_focus": oof.tolist(),
        "border_cut": cut.tolist(),
        "fragments": fragments[kept].astype(int).tolist(),
        "radius_px": [round(float(particles[i].radius), 3) for i in kept],
        "area_px": visible_area[kept].astype(int).tolist(),
        "config": config.to_dict(),
    }
    return SEMRecord(
        image=image,
        instances=labels,
        certain=certain,
        pixel_size_nm=pixel_size,
        source=f"synthetic://seed={seed}/index={index}",
        magnification_bucket=bucket,
        meta=meta,
    )


def make_sem_dataset(n: int, seed: int = 0, config: SyntheticConfig | None = None) -> list[SEMRecord]:
    """``n`` synthetic records ``make_sem_record(seed, config, index=i)`` for ``i = 0..n-1``.

    Raises:
        InputError: if ``n`` is negative or the configuration is invalid.
    """
    if not isinstance(n, int | np.integer) or n < 0:
        raise InputError(f"number of synthetic images must be a non-negative integer, got {n!r}")
    config = SyntheticConfig() if config is None else config
    return [make_sem_record(seed, config, index=i) for i in range(n)]


def add_databar(record: SEMRecord, rows: int | None = None) -> np.ndarray:
    """The record's image with an instrument-style databar appended below it (what is written to disk).

    The bar is black (exactly 0) with white text (generator, pixel size, field of view, image number) and,
    for calibrated images, a scale bar, like Zeiss/FEI bars.

    Args:
        record: a synthetic record (image without bar).
        rows: bar height; ``None`` uses ``record.meta["databar_rows"]``. 0 returns the image unchanged.

    Returns:
        float32 (H + rows, W) image.
    """
    from PIL import Image, ImageDraw, ImageFont

    rows = int(record.meta.get("databar_rows", 0) if rows is None else rows)
    if rows < 0:
        raise InputError(f"databar height must be >= 0, got {rows}", record.source or None)
    if rows == 0:
        return record.image.copy()
    h, w = record.image.shape
    bar = Image.new("L", (w, rows), 0)
    draw = ImageDraw.Draw(bar)
    font_px = max(8, min(int(rows * 0.32), 18))
    try:
        font = ImageFont.load_default(size=font_px)
    except TypeError:  # Pillow < 10.1: only the fixed bitmap font
        font = ImageFont.load_default()
    px = record.pixel_size_nm
    index = record.meta.get("index", 0)
    left = [
        f"semkit synthetic  seed={record.meta.get('seed', '?')}  #{index}",
        f"Pixel = {px:.3f} nm" if px is not None else "Pixel = uncalibrated",
    ]
    if px is not None:
        left.append(f"Width = {w * px / 1000.0:.3f} um")
    y = 2
    for line in left:
        if y + font_px > rows:
            break
        # Text stays within the left 45 % so every bar row remains mostly black (what detect_databar looks for).
        if draw.textlength(line, font=font) <= 0.45 * w - 4:
            draw.text((4, y), line, fill=255, font=font)
        y += font_px + 2
    if px is not None:
        length_nm = _nice_length(0.15 * w * px)
        length_px = max(2, round(length_nm / px))
        x1 = w - 8
        x0 = x1 - length_px
        yb = rows // 2
        draw.rectangle((x0, yb, x1, yb + 1), fill=255)
        draw.rectangle((x0, yb - 3, x0 + 1, yb + 4), fill=255)
        draw.rectangle((x1 - 1, yb - 3, x1, yb + 4), fill=255)
        label = f"{length_nm / 1000:g} um" if length_nm >= 1000 else f"{length_nm:g} nm"
        if yb - 3 - font_px >= 0:
            draw.text((x0, yb - 4 - font_px), label, fill=255, font=font)
    bar_arr = np.asarray(bar, dtype=np.float32) / 255.0
    return np.concatenate([record.image, bar_arr], axis=0)


def write_synthetic_dataset(
    root: str | Path, n: int, seed: int = 0, config: SyntheticConfig | None = None
) -> Path:
    """Draw ``n`` records and write them in semkit's instance-folder layout (images, labels, certainty).

    Files are named ``synthetic_s{seed}_{index:04d}``. With ``config.databar_rows > 0`` the images on disk carry
    the databar and the label maps are padded with as many background rows (see the module docstring).
    ``root/synthetic.json`` records the seed, ``n`` and the configuration.

    Returns:
        ``root``, readable with :func:`semkit.data.instance_folder.read_instance_folder`.
    """
    from semkit.data.instance_folder import write_instance_folder

    config = SyntheticConfig() if config is None else config
    records = make_sem_dataset(n, seed=seed, config=config)
    on_disk = []
    for rec in records:
        image = add_databar(rec)
        pad = image.shape[0] - rec.image.shape[0]
        labels = np.pad(rec.instances, ((0, pad), (0, 0))) if pad else rec.instances
        on_disk.append(
            SEMRecord(
                image=image,
                instances=labels,
                certain=rec.certain,
                pixel_size_nm=rec.pixel_size_nm,
                source=f"synthetic_s{seed}_{rec.meta['index']:04d}",
                meta=rec.meta,
            )
        )
    root = write_instance_folder(on_disk, root)
    info = {"generator": "semkit.data.synthetic", "seed": int(seed), "n": int(n), "config": config.to_dict()}
    (root / "synthetic.json").write_text(json.dumps(info, indent=2) + "\n")
    return root


# --------------------------------------------------------------------------------------------------------------
# particle layout


def _checked_particle(p: Particle, i: int) -> Particle:
    if not isinstance(p, Particle):
        raise InputError(f"particles[{i}] must be a synthetic.Particle, got {type(p).__name__}")
    values = (p.y, p.x, p.radius, p.aspect, p.angle)
    if not all(math.isfinite(float(v)) for v in values) or p.radius <= 0 or p.aspect < 1:
        raise InputError(f"particles[{i}] needs finite coordinates, radius > 0 and aspect >= 1, got {p}")
    if p.brightness is not None and not 0 <= p.brightness <= 1:
        raise InputError(f"particles[{i}].brightness must be in [0, 1], got {p.brightness}")
    if p.outline is not None:
        outline = np.asarray(p.outline, dtype=np.float64)
        if outline.ndim != 2 or outline.shape[1] != 2 or len(outline) < 3 or abs(_polygon_area(outline)) == 0:
            raise InputError(f"particles[{i}].outline must be a (K >= 3, 2) polygon with non-zero area")
    return p


def _random_particles(rng: np.random.Generator, config: SyntheticConfig) -> list[Particle]:
    """Sizes, shapes and positions: agglomerates grown by attachment plus scattered particles."""
    h, w = config.height, config.width
    n = int(rng.integers(config.n_particles[0], config.n_particles[1] + 1))
    lo, hi = np.log(config.radius_px)
    # Powders have roughly log-normal sizes; the configured range holds about +-2 standard deviations.
    radii = np.exp(np.clip(rng.normal((lo + hi) / 2, max((hi - lo) / 4, 1e-9), n), lo, hi))
    in_cluster = rng.random(n) < config.agglomeration
    n_clustered = int(in_cluster.sum())
    n_clusters = max(1, round(n_clustered / rng.uniform(5, 14))) if n_clustered else 0
    seeds = np.column_stack(
        [rng.uniform(0.05, 0.95, n_clusters) * h, rng.uniform(0.05, 0.95, n_clusters) * w]
    )
    members: list[list[int]] = [[] for _ in range(n_clusters)]
    centres = np.zeros((n, 2))
    for i in range(n):
        if not in_cluster[i]:
            centres[i] = rng.uniform(0, 1, 2) * (h, w)
            continue
        c = int(rng.integers(n_clusters))
        if not members[c]:
            centres[i] = seeds[c]
        else:
            # Attach to a random member: touching at overlap 0, overlapping up to `overlap` of the radii sum.
            j = members[c][int(rng.integers(len(members[c])))]
            theta = rng.uniform(0, 2 * np.pi)
            dist = (radii[i] + radii[j]) * (1 - config.overlap * rng.random())
            centres[i] = centres[j] + dist * np.array([np.sin(theta), np.cos(theta)])
        members[c].append(i)
    oof = rng.random(n) < config.out_of_focus_fraction
    particles = []
    for i in range(n):
        elongated = rng.random() < 0.25
        aspect = rng.uniform(1.4, 2.6) if elongated else rng.uniform(1.0, 1.3)
        particles.append(
            Particle(
                y=float(centres[i, 0]),
                x=float(centres[i, 1]),
                radius=float(radii[i]),
                aspect=float(aspect),
                angle=float(rng.uniform(0, np.pi)),
                outline=_random_outline(rng),
                out_of_focus=bool(oof[i]),
            )
        )
    # Random stacking order: in a powder any particle may lie on any other.
    return [particles[k] for k in rng.permutation(n)]


def _random_outline(rng: np.random.Generator) -> np.ndarray:
    """A unit-size convex-ish outline (K, 2): a faceted polygon with rounded corners or a smooth lumpy blob.

    An irregularity drawn per particle sets how far the outline strays from a regular polygon or circle, from
    near-regular crystals and spheres to irregular fragments.
    """
    irregular = rng.uniform(0.0, 1.0) ** 2  # most particles fairly regular, a few strongly irregular
    if rng.random() < 0.5:
        k = int(rng.integers(5, 11))
        angles = np.sort((np.arange(k) + rng.uniform(-0.3, 0.3, k)) * 2 * np.pi / k)
        jitter = 0.08 + 0.25 * irregular
        r = 1 + rng.uniform(-jitter, jitter, k)
        pts = np.column_stack([r * np.sin(angles), r * np.cos(angles)])
        # Chaikin corner cutting rounds the facets' corners; 0 iterations keeps sharp crystal edges.
        for _ in range(int(rng.integers(0, 4))):
            nxt = np.roll(pts, -1, axis=0)
            pts = np.stack([0.75 * pts + 0.25 * nxt, 0.25 * pts + 0.75 * nxt], axis=1).reshape(-1, 2)
        return pts
    t = np.linspace(0, 2 * np.pi, _SMOOTH_POINTS, endpoint=False)
    r = np.ones_like(t)
    for k in range(2, 7):
        r += rng.normal(0, (0.05 + 0.12 * irregular) / k) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    return np.column_stack([r * np.sin(t), r * np.cos(t)])


def _polygon_area(pts: np.ndarray) -> float:
    y, x = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _placed_outline(p: Particle) -> np.ndarray:
    """Outline in image coordinates (row, col): centred, stretched, rotated, scaled to the equivalent radius."""
    if p.outline is None:
        t = np.linspace(0, 2 * np.pi, _SMOOTH_POINTS, endpoint=False)
        pts = np.column_stack([np.sin(t), np.cos(t)])
    else:
        pts = np.asarray(p.outline, dtype=np.float64)
    pts = pts - pts.mean(axis=0)
    s = math.sqrt(p.aspect)
    pts = pts * np.array([1 / s, s])  # long axis along columns before rotation
    c, si = math.cos(p.angle), math.sin(p.angle)
    rot = np.array([[c, -si], [si, c]])  # (row, col) = (-y, x): rotate counter-clockwise on screen
    xy = np.column_stack([pts[:, 1], -pts[:, 0]]) @ rot.T
    pts = np.column_stack([-xy[:, 1], xy[:, 0]])
    pts *= p.radius * math.sqrt(math.pi / abs(_polygon_area(pts)))
    return pts + np.array([p.y, p.x])


# --------------------------------------------------------------------------------------------------------------
# rendering


@dataclass
class _Look:
    brightness: float
    rim_width: float
    shading: float
    grain: float
    lumps: float
    shadow: float
    shadow_width: float


def _particle_looks(
    rng: np.random.Generator, config: SyntheticConfig, particles: list[Particle]
) -> list[_Look]:
    lo, hi = config.particle_level
    looks = []
    for p in particles:
        b = rng.uniform(lo, hi)
        looks.append(
            _Look(
                brightness=float(b if p.brightness is None else p.brightness),
                rim_width=float(rng.uniform(1.2, 2.8)),
                shading=float(rng.uniform(0.3, 0.7)),
                grain=float(rng.uniform(0.0, 0.1) if rng.random() < 0.4 else 0.0),
                lumps=float(rng.uniform(0.0, 0.12) if rng.random() < 0.4 else 0.0),
                shadow=float(rng.uniform(0.2, 0.45)),
                shadow_width=float(rng.uniform(1.5, 4.0)),
            )
        )
    return looks


def _paint_particles(
    canvas: np.ndarray,
    particles: list[Particle],
    looks: list[_Look],
    texture: np.ndarray,
    config: SyntheticConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Composite particles bottom to top onto ``canvas`` (the substrate, modified in place).

    Each particle is rasterised at ``_SUPERSAMPLE`` x resolution: the block means give anti-aliased edges in the
    image, the sub-pixel at each pixel centre gives the exact label (a pixel belongs to a particle when its
    centre lies inside the outline), and the fine distance transform gives smooth rims and shading.

    Returns:
        ``(painted, full_area, border_cut)``: map of particle index + 1 of the top particle at each pixel,
        in-image area of each full outline, and whether each outline is cut by the image border.
    """
    h, w = canvas.shape
    s = _SUPERSAMPLE
    painted = np.zeros((h, w), dtype=np.int32)
    n = len(particles)
    full_area = np.zeros(n, dtype=np.int64)
    border_cut = np.zeros(n, dtype=bool)
    # Direction (row, col) of the SE detector as seen in the image: slopes and edges facing it look brighter.
    light = np.array([0.6, -0.8])
    margin = 8  # room for the contact shadow around the outline
    for i, (p, look) in enumerate(zip(particles, looks, strict=True)):
        pts = _placed_outline(p)
        r0, c0 = np.floor(pts.min(axis=0)).astype(int) - margin
        r1, c1 = np.ceil(pts.max(axis=0)).astype(int) + margin + 1
        bh, bw = r1 - r0, c1 - c0
        # Sub-pixel (R, C) has its centre at pixel coordinate r0 + (R + 0.5) / s - 0.5.
        # Sub-pixel (R, C) has its centre at pixel coordinate r0 + (R + 0.5) / s - 0.5, so the centre sub-pixel
        # of every pixel sits exactly at the pixel centre.
        fine = _rasterise((pts - (r0, c0) + 0.5) * s - 0.5, (bh * s, bw * s))
        mask = fine[s // 2 :: s, s // 2 :: s]
        # Cut: part of the outline lies outside the image or on its outermost row/column.
        inner_area = int(mask[max(1 - r0, 0) : max(h - 1 - r0, 0), max(1 - c0, 0) : max(w - 1 - c0, 0)].sum())
        border_cut[i] = inner_area != int(mask.sum())
        y0, x0, y1, x1 = max(r0, 0), max(c0, 0), min(r1, h), min(c1, w)
        if y1 <= y0 or x1 <= x0:
            continue
        win = (slice(y0 - r0, y1 - r0), slice(x0 - c0, x1 - c0))
        local = mask[win]
        full_area[i] = int(local.sum())
        if not local.any():
            continue
        alpha = _block_mean(fine.astype(np.float32), s)
        # Inside distances only need the outline plus a one-pixel ring of outside: skip the shadow margin.
        tight = slice((margin - 1) * s, -(margin - 1) * s)
        dist = np.zeros(mask.shape)
        dist[margin - 1 : -(margin - 1), margin - 1 : -(margin - 1)] = (
            _block_mean(ndi.distance_transform_edt(fine[tight, tight]), s) / s
        )
        # The shadow outside is soft anyway: the pixel-resolution distance is good enough there (and 9x cheaper).
        out_dist = np.maximum(ndi.distance_transform_edt(~mask) - 0.5, 0)
        depth = dist / max(float(dist.max()), 1.0)
        # Dome-like height over the distance to the outline: facets for polygons, smooth domes for blobs.
        height = np.sqrt(np.clip(depth * (2 - depth), 0, 1))
        gy, gx = np.gradient(height)
        facing = np.clip(-(gy * light[0] + gx * light[1]) * p.radius * 0.5, -1, 1)
        # The distance gradient points inward; its opposite (the outward normal) decides the rim brightness.
        dy, dx = np.gradient(dist)
        norm = np.maximum(np.hypot(dy, dx), 1e-6)
        rim_facing = np.clip(-(dy * light[0] + dx * light[1]) / norm, -1, 1)
        value = look.brightness * (1 + look.shading * facing - 0.1 * height)
        rim = np.exp(-dist / look.rim_width) * (0.65 + 0.35 * rim_facing)
        value += 2.0 * config.edge_brightening * look.brightness * rim
        value = value[win] * (
            1 + look.grain * texture[0, y0:y1, x0:x1] + look.lumps * texture[1, y0:y1, x0:x1]
        )
        # Contact shadow on whatever lies underneath, within a few pixels outside the outline.
        shadow = 1 - look.shadow * np.exp(-out_dist[win] / look.shadow_width)
        a = alpha[win]
        region = canvas[y0:y1, x0:x1]
        region[:] = a * value + (1 - a) * region * shadow
        painted[y0:y1, x0:x1][local] = i + 1
    return painted, full_area, border_cut


def _rasterise(pts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask (H, W) of the pixels whose centre (at integer coordinates) lies inside polygon ``pts`` (K, 2)
    given as (row, col); even-odd rule, vectorised scan-line fill.

    Costs O(rows x vertices + pixels), where a per-pixel point-in-polygon test (skimage.draw.polygon) costs
    O(pixels x vertices) and was the bottleneck of the generator; PIL's fill is fast but not centre-exact.
    """
    h, w = shape
    y0, x0 = pts[:, 0], pts[:, 1]
    y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
    rows = np.arange(h, dtype=np.float64)[:, None]
    # Half-open rule: an edge counts for rows in [min(y0, y1), max(y0, y1)), so shared vertices count once.
    crosses = (np.minimum(y0, y1) <= rows) & (rows < np.maximum(y0, y1))
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = x0 + (rows - y0) * (x1 - x0) / (y1 - y0)
    r_idx, e_idx = np.nonzero(crosses)
    start = np.clip(np.ceil(xc[r_idx, e_idx]), 0, w).astype(np.int64)
    toggles = np.zeros((h, w + 1), dtype=np.int32)
    np.add.at(toggles, (r_idx, start), 1)
    return (np.cumsum(toggles[:, :w], axis=1) & 1).astype(bool)


def _block_mean(arr: np.ndarray, s: int) -> np.ndarray:
    """Mean over non-overlapping s x s blocks (shape must be divisible by s)."""
    h, w = arr.shape
    return arr.reshape(h // s, s, w // s, s).mean(axis=(1, 3))


def _visible_instances(painted: np.ndarray, n: int, min_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop remnants below ``min_px``; relabel visible particles 1..N in drawing order.

    Returns:
        (labels int32, visible area per drawn particle, number of kept pieces per drawn particle).
    """
    from skimage.measure import label as cc_label

    # Neighbouring pixels of equal value form one component, so this splits every particle into its pieces.
    pieces = cc_label(painted, background=0, connectivity=1)
    sizes = np.bincount(pieces.ravel())
    owner = np.zeros(len(sizes), dtype=np.int64)
    owner[pieces.ravel()] = painted.ravel()
    keep_piece = sizes >= min_px
    keep_piece[0] = False
    particle_of_pixel = np.where(keep_piece[pieces], painted, 0)
    visible_area = np.bincount(particle_of_pixel.ravel(), minlength=n + 1)[1:]
    fragments = np.bincount(owner[keep_piece], minlength=n + 1)[1:]
    new_id = np.zeros(n + 1, dtype=np.int32)
    kept = np.flatnonzero(visible_area > 0)
    new_id[kept + 1] = np.arange(1, len(kept) + 1, dtype=np.int32)
    return new_id[particle_of_pixel], visible_area, fragments


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ``scale`` pixels (cheap: drawn at
    low resolution and interpolated up)."""
    h, w = shape
    step = scale / 2.0
    if step <= 1.0:
        field_ = ndi.gaussian_filter(rng.standard_normal(shape), max(scale / 2.0, 0.5), mode="wrap")
        return (field_ - field_.mean()) / max(float(field_.std()), 1e-12)
    small = rng.standard_normal((int(h / step) + 4, int(w / step) + 4))
    small = ndi.gaussian_filter(small, 1.0, mode="wrap")
    field_ = ndi.zoom(small, step, order=1, prefilter=False)[:h, :w]
    if field_.shape != (h, w):  # rounding of the zoom
        field_ = np.pad(field_, ((0, h - field_.shape[0]), (0, w - field_.shape[1])), mode="edge")
    return (field_ - field_.mean()) / max(float(field_.std()), 1e-12)


def _substrate(
    rng: np.random.Generator, shape: tuple[int, int], config: SyntheticConfig
) -> tuple[np.ndarray, float]:
    """Dark support with large blotches and faint worm-like features (zero crossings of band-pass noise), like
    the carbon/silicon supports in SE images. Returns (image, mean level)."""
    tex = config.substrate_texture
    base = rng.uniform(*config.substrate_level)
    substrate = base * (1 + 0.25 * tex * _smooth_noise(rng, shape, rng.uniform(40, 120)))
    worms = np.exp(-((_smooth_noise(rng, shape, rng.uniform(8, 16)) / 0.12) ** 2))
    patches = np.clip(1.5 * (_smooth_noise(rng, shape, 50) - 0.2), 0, 1)
    substrate += 1.5 * tex * base * worms * patches
    substrate += 0.15 * tex * base * _smooth_noise(rng, shape, 2.0)
    return substrate, base


def _acquire(
    rng: np.random.Generator,
    image: np.ndarray,
    painted: np.ndarray,
    particles: list[Particle],
    config: SyntheticConfig,
    base: float,
) -> tuple[np.ndarray, float]:
    """The microscope: defocus of out-of-focus particles, probe blur, charging streaks, shot noise, line jitter.

    Returns (float32 image in [0, 1], probe blur sigma)."""
    h, w = image.shape
    oof_ids = np.array([0] + [p.out_of_focus for p in particles], dtype=bool)
    oof_mask = oof_ids[painted]
    if oof_mask.any():
        sigma = rng.uniform(*config.defocus_sigma)
        blurred = ndi.gaussian_filter(image, sigma)
        weight = np.clip(ndi.gaussian_filter(oof_mask.astype(np.float64), sigma) * 2, 0, 1)
        image = image * (1 - weight) + blurred * weight
    blur = rng.uniform(*config.blur_sigma)
    if blur > 0:
        image = ndi.gaussian_filter(image, blur)
    if rng.random() < config.charging_streaks:
        image = image + _charging_streaks(rng, (h, w), particles, config.charging_streaks)
    image = np.clip(image, 0, 1)
    if config.noise > 0:
        electrons = 1.0 / config.noise**2
        image = rng.poisson(image * electrons) / electrons
        # Scan-line jitter: the beam current drifts from line to line.
        image = image + (0.15 * config.noise * base) * rng.standard_normal((h, 1))
    return np.clip(image, 0, 1).astype(np.float32), blur


def _charging_streaks(
    rng: np.random.Generator, shape: tuple[int, int], particles: list[Particle], strength: float
) -> np.ndarray:
    """Bright horizontal streaks trailing to the right of charging particles (scan direction), decaying."""
    h, w = shape
    out = np.zeros(shape, dtype=np.float64)
    cols = np.arange(w)
    for _ in range(int(rng.integers(1, 4))):
        if particles and rng.random() < 0.7:
            p = particles[int(rng.integers(len(particles)))]
            row, col = p.y + rng.uniform(-0.6, 0.6) * p.radius, p.x + p.radius
        else:
            row, col = rng.uniform(0, h), rng.uniform(0, w / 2)
        thickness = rng.uniform(0.7, 4.0)
        amp = (0.5 + strength) * rng.uniform(0.05, 0.2)
        decay = rng.uniform(0.05, 0.5) * w
        rows = np.arange(max(int(row - 3 * thickness), 0), min(int(row + 3 * thickness) + 1, h))
        if rows.size == 0:
            continue
        vertical = np.exp(-0.5 * ((rows - row) / thickness) ** 2)
        horizontal = np.where(cols >= col, np.exp(-(cols - col) / decay), 0.0)
        out[rows] += amp * vertical[:, None] * horizontal[None, :]
    return out


def _nice_length(nm: float) -> float:
    """Largest 1-2-5 × 10^k length not above ``nm`` (scale-bar lengths)."""
    exp = 10 ** math.floor(math.log10(nm))
    for m in (5, 2, 1):
        if m * exp <= nm:
            return float(m * exp)
    return float(exp)
