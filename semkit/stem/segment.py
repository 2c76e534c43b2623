"""Segment one nanoparticle in a HAADF-STEM image into intensity clusters on a 128 × 128 grid (steps 1–6).

1. Resize the square parent image to the acquisition grid (128 × 128) with area averaging (anti-aliased) and
   stretch its intensities to 0–255, so 16-bit files, dark detectors and 8-bit files all look alike.
2. Unsharp mask, Gaussian blur, adaptive Gaussian threshold → foreground mask (no particle: an empty result),
   joined by pixels far above the background noise (dark phases next to bright ones sit below their local mean);
   bounding box of its significant connected components plus a margin (faint edges); crop.
3. Background cutoff from the intensity profile along the crop's upper-left → lower-right diagonal: the
   outermost edges are the first/last runs of steep slope whose rise is a sizeable fraction of the profile's
   intensity range; the cutoff lies a fraction of that range above the background level outside them.
4. Convex hull of the largest above-cutoff component (particles are convex); background → 0, the hull
   brightened by a fraction of the diagonal's range; sharpen and blur again inside the hull.
5. k from the histogram of the non-zero intensities (bins of width 20, peaks with
   :func:`scipy.signal.find_peaks` at a prominence above 5 % of the highest bin) and the element count
   (:func:`choose_k`).
6. 1-D k-means (k-means++, fixed seed) of the hull intensities into k − 1 foreground clusters; the background
   is the k-th cluster, known exactly from the hull.

Reference: adaptive acquisition boxes for high-throughput STEM of nanoparticle megalibraries (the study behind
issue 6); its code is not public, so thresholds below are design choices, collected in :class:`SegmentSettings`.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi

from semkit.errors import InputError

#: Side of the acquisition grid the study replaces (128 × 128 = 16,384 points).
GRID = 128


@dataclass
class SegmentSettings:
    """Settings of steps 1–6 (intensities in the 0–255 units of the stretched 128-grid image).

    Attributes:
        grid: side of the resized image.
        unsharp_sigma: Gaussian sigma (grid pixels) of the unsharp mask.
        unsharp_amount: unsharp-mask gain (``img + amount · (img − blur)``).
        blur_sigma: Gaussian blur after sharpening.
        threshold_block: block size of the adaptive Gaussian threshold (odd; sigma = (block − 1) / 6, as in
            OpenCV's ``ADAPTIVE_THRESH_GAUSSIAN_C`` and skimage's ``threshold_local``).
        threshold_offset: a pixel is foreground if it exceeds its local Gaussian mean by this much.
        min_component_fraction: foreground components smaller than this fraction of the grid are noise.
        bbox_margin: grid pixels added around the bounding box so faint edges and some background stay in the
            crop (the diagonal profile needs background at its ends).
        min_snr: smallest contrast of the largest foreground component over the background, in units of the
            background's robust standard deviation (median absolute deviation), that counts as a particle;
            thresholding pure noise gives 2–5, particles on carbon 15 and more.
        significance: pixels brighter than the background's median by this many robust standard deviations
            join the foreground (dark phases that the adaptive threshold misses next to bright ones).
        profile_rise_fraction: an edge on the diagonal profile is a run of rising (falling) slope whose total
            change exceeds this fraction of the profile's intensity range; also the cutoff's margin above the
            background level ...
        profile_slope_fraction: ... and whose steepest slope exceeds this fraction of the range per sample.
        brighten_fraction: hull pixels are raised by this fraction of the diagonal's intensity range, which
            keeps every particle intensity well away from the background's 0.
        bin_width: histogram bin width for counting intensity peaks.
        prominence_fraction: minimal peak prominence as a fraction of the highest bin.
        seed: k-means++ seed (results repeat exactly).
        kmeans_iterations: Lloyd iterations of the 1-D k-means (scipy's default, 10).
    """

    grid: int = GRID
    unsharp_sigma: float = 1.0
    unsharp_amount: float = 1.0
    blur_sigma: float = 1.0
    threshold_block: int = 51
    threshold_offset: float = 8.0
    min_component_fraction: float = 0.002
    bbox_margin: int = 3
    min_snr: float = 8.0
    significance: float = 6.0
    profile_rise_fraction: float = 0.06
    profile_slope_fraction: float = 0.02
    brighten_fraction: float = 0.5
    bin_width: float = 20.0
    prominence_fraction: float = 0.05
    seed: int = 0
    kmeans_iterations: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Segmentation:
    """Every intermediate of steps 1–6 (for the step-by-step figure) and the final cluster map.

    Attributes:
        parent_shape: (H, W) of the input image.
        resized: float32 (grid, grid), stretched to 0–255.
        sharpened, blurred: float32 (grid, grid) after step 2's unsharp mask and blur.
        threshold_mask: bool (grid, grid) adaptive-threshold foreground, joined by the pixels far above the
            background noise.
        bbox: (row0, col0, row1, col1) of the crop in the grid, half-open; ``None`` if no particle was found.
        crop: float32 (h, w) crop of ``resized``.
        profile: float32 (n,) blurred intensity along the crop's diagonal.
        cutoff: background cutoff (0–255 units) from the profile; ``nan`` when not reached.
        edges: (first, last) profile index of the feet of the outermost edges (``-1`` where none).
        hull: bool (h, w) convex hull of the particle inside the crop.
        brightened: float32 (h, w), 0 outside the hull, brightened + sharpened + blurred inside.
        hist_counts, hist_edges: histogram of the non-zero intensities (bin width ``bin_width``).
        peaks: indices of the histogram peaks found.
        n_elements: element count used by the k rule.
        k: number of clusters including the background.
        centers: (k − 1,) sorted foreground cluster centres.
        labels: int32 (h, w): 0 background, 1..k−1 clusters in increasing intensity.
        reason: why nothing was segmented (``None`` on success).
    """

    parent_shape: tuple[int, int]
    resized: np.ndarray
    sharpened: np.ndarray | None = None
    blurred: np.ndarray | None = None
    threshold_mask: np.ndarray | None = None
    bbox: tuple[int, int, int, int] | None = None
    crop: np.ndarray | None = None
    profile: np.ndarray | None = None
    cutoff: float = float("nan")
    edges: tuple[int, int] = (-1, -1)
    hull: np.ndarray | None = None
    brightened: np.ndarray | None = None
    hist_counts: np.ndarray | None = None
    hist_edges: np.ndarray | None = None
    peaks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_elements: int = 0
    k: int = 0
    centers: np.ndarray = field(default_factory=lambda: np.zeros(0))
    labels: np.ndarray | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when a particle was segmented (``labels`` is set)."""
        return self.reason is None and self.labels is not None

    @property
    def offset(self) -> tuple[int, int]:
        """(row, col) of the crop's top-left corner in the grid."""
        return (0, 0) if self.bbox is None else (self.bbox[0], self.bbox[1])


def choose_k(n_peaks: int, n_elements: int) -> int:
    """The study's rule for the number of k-means clusters (background included).

    With p histogram peaks and n elements in the particle: if ``p < 2`` or ``|p − n| >= 2`` then ``k = n + 1``,
    otherwise ``k = p + 1``. The peaks are trusted only when there are at least two and they roughly agree with
    the composition.

    Raises:
        InputError: if ``n_elements < 1`` or ``n_peaks < 0``.
    """
    if n_elements < 1:
        raise InputError(f"element count must be >= 1, got {n_elements}")
    if n_peaks < 0:
        raise InputError(f"peak count must be >= 0, got {n_peaks}")
    if n_peaks < 2 or abs(n_peaks - n_elements) >= 2:
        return n_elements + 1
    return n_peaks + 1


def check_image(image: np.ndarray, source: str | None = None) -> np.ndarray:
    """Validate a parent image: 2-D, square, at least 8 × 8, numeric and finite.

    Any numeric dtype is accepted (8/16-bit integers, floats in any range): step 1 stretches intensities to the
    image's own range. Returns the image as float32 (no copy for float32 input); NaN/inf are caught after the
    resize by :func:`segment_particle`.

    Raises:
        InputError: naming ``source``, for RGB or 3-D arrays, non-square or tiny images, non-numeric data.
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise InputError(
            f"HAADF image must be 2-D grayscale, got shape {arr.shape} (load files with semkit.data.load_image)",
            source,
        )
    h, w = arr.shape
    if h != w:
        raise InputError(
            f"image is {h}×{w}; STEM boxing maps a square image onto the square 128 × 128 grid, crop it to a "
            f"square first",
            source,
        )
    if h < 8:
        raise InputError(f"image is only {h}×{w} pixels; need at least 8×8", source)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"image must hold numbers, got dtype {arr.dtype}", source)
    # Finiteness is checked on the 128-grid image in segment_particle: area averaging carries any NaN or inf
    # through, and checking 16k pixels instead of a million saves half a millisecond per image.
    return arr.astype(np.float32, copy=False)


def resize_to_grid(image: np.ndarray, grid: int = GRID) -> np.ndarray:
    """Area-average a square float32 image to (grid, grid): the anti-aliased resize of step 1.

    Area averaging (OpenCV ``INTER_AREA``) is the exact box-filter anti-aliasing for the integer factors of
    512/1024 → 128 and is about 100× faster than a Gaussian pre-filter on a 1024² image. Smaller images are
    interpolated up (bilinear).
    """
    import cv2

    interp = cv2.INTER_AREA if image.shape[0] >= grid else cv2.INTER_LINEAR
    return cv2.resize(image, (grid, grid), interpolation=interp)


#: scipy.ndimage boundary modes → OpenCV border flags with the same meaning.
_BORDERS = {"nearest": 1, "reflect": 2, "constant": 0}  # BORDER_REPLICATE, BORDER_REFLECT, BORDER_CONSTANT


def gaussian(img: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    """Gaussian filter of a float32 (h, w) image, equal to :func:`scipy.ndimage.gaussian_filter` with the same
    ``mode`` and ``truncate`` (tested) but computed by OpenCV, about ten times faster on the 128-grid, which
    matters for the per-image time budget."""
    import cv2

    radius = int(truncate * sigma + 0.5)
    k = 2 * radius + 1
    return cv2.GaussianBlur(np.asarray(img, dtype=np.float32), (k, k), sigma, sigmaY=sigma,
                            borderType=_BORDERS[mode])


def _unsharp(img: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    return img + amount * (img - gaussian(img, sigma, "nearest"))


def _masked_gaussian(img: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur inside ``mask`` only (normalised convolution), 0 outside."""
    m = mask.astype(np.float32)
    num = gaussian(img * m, sigma, "constant")
    den = gaussian(m, sigma, "constant")
    out = np.zeros_like(img)
    np.divide(num, den, out=out, where=mask)
    return out


def _particle_snr(blur: np.ndarray, fg: np.ndarray, component: np.ndarray) -> tuple[float, float, float]:
    """Contrast of ``component`` over the background (pixels away from any foreground) in robust noise units.

    Thresholding pure noise always yields some foreground; what tells a particle apart is how far it stands
    above the background's own fluctuation.

    Returns:
        ``(snr, noise, level)``: ``snr`` is ``inf`` when the background is too small to measure or noise-free;
        ``noise`` is the background's robust standard deviation (1.4826 × MAD) and ``level`` its median, both
        0 when unknown.
    """
    bg = ~ndi.binary_dilation(fg, iterations=3)
    if bg.sum() < 64:
        return float("inf"), 0.0, 0.0
    values = blur[bg]
    med = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - med)))
    contrast = float(np.median(blur[component])) - med
    if mad <= 0:
        return (float("inf") if contrast > 0 else 0.0), 0.0, med
    return contrast / mad, mad, med


def convex_hull(mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of the pixel centres of a boolean (h, w) mask (contains the mask; empty → empty).

    OpenCV's ``convexHull`` + ``fillConvexPoly`` take a tenth of the time of
    :func:`skimage.morphology.convex_hull_image`; on particle masks the two differ only by a few pixels along
    slanted edges that skimage adds because it takes the hull of the pixels' corners (tested).
    """
    import cv2

    out = np.zeros(mask.shape, dtype=np.uint8)
    points = cv2.findNonZero(mask.astype(np.uint8))
    if points is not None:
        cv2.fillConvexPoly(out, cv2.convexHull(points), 1)
    return out.astype(bool)


def diagonal_profile(img: np.ndarray) -> np.ndarray:
    """Intensities along the upper-left → lower-right diagonal of a (h, w) image, ``max(h, w)`` samples."""
    h, w = img.shape
    n = max(h, w)
    rows = np.rint(np.linspace(0, h - 1, n)).astype(np.intp)
    cols = np.rint(np.linspace(0, w - 1, n)).astype(np.intp)
    return img[rows, cols]


def _first_edge(p: np.ndarray, g: np.ndarray, min_rise: float, min_slope: float) -> int:
    """Foot (first sample) of the first rising edge of ``p``: a run of positive slope whose total rise and
    steepest slope are large enough; ``-1`` if there is none. Noise wiggles rise little in total, edges a lot."""
    pos = g > 0
    if not pos.any():
        return -1
    change = np.flatnonzero(np.diff(pos.astype(np.int8))) + 1
    bounds = np.concatenate(([0], change, [p.size]))
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if pos[a] and p[min(b, p.size - 1)] - p[max(a - 1, 0)] >= min_rise and g[a:b].max() >= min_slope:
            return int(a)
    return -1


def profile_cutoff(
    profile: np.ndarray, rise_fraction: float = 0.06, slope_fraction: float = 0.02, noise: float = 0.0
) -> tuple[float, tuple[int, int]]:
    """Background cutoff from a diagonal profile (step 3).

    The particle's outermost edges are the first run of rising slope from the start and the first run of
    falling slope from the end whose total change exceeds ``rise_fraction`` and whose steepest slope exceeds
    ``slope_fraction`` of the profile's intensity range. What lies outside them is background; the cutoff sits
    above the higher of the two background levels (median of the samples outside each edge) by
    ``rise_fraction`` × range, or by 3 × ``noise`` if that is more. Measuring from the background rather than
    from the edges keeps a dark phase inside the particle even when both ends of the diagonal are bright.

    Args:
        profile: (n,) intensities along the crop's diagonal.
        rise_fraction: minimal total rise of an edge and margin above the background, as a fraction of the
            intensity range.
        slope_fraction: minimal steepest slope of an edge per sample, as a fraction of the intensity range.
        noise: robust standard deviation of the background, if known.

    Returns:
        ``(cutoff, (first, last))``: indices of the two edges' feet (``-1`` where there is none). The cutoff is
        ``-inf`` (everything is particle) when no edge is found, e.g. when the particle fills the diagonal.
    """
    p = np.asarray(profile, dtype=np.float64)
    if p.size < 3:
        return -np.inf, (-1, -1)
    rng = p.max() - p.min()
    if rng <= 0:
        return -np.inf, (-1, -1)
    g = np.gradient(p)
    first = _first_edge(p, g, rise_fraction * rng, slope_fraction * rng)
    rev = _first_edge(p[::-1], -g[::-1], rise_fraction * rng, slope_fraction * rng)
    last = -1 if rev < 0 else p.size - 1 - rev
    levels = []
    if first >= 0:
        levels.append(np.median(p[: first + 1]))
    if last >= 0:
        levels.append(np.median(p[last:]))
    if not levels:
        return -np.inf, (-1, -1)
    return float(max(levels) + max(rise_fraction * rng, 3.0 * noise)), (first, last)


def count_peaks(values: np.ndarray, bin_width: float = 20.0, prominence_fraction: float = 0.05):
    """Histogram ``values`` in bins of ``bin_width`` and find its peaks (step 5).

    The histogram is padded with an empty bin on each side so a peak in the first or last bin counts too
    (``find_peaks`` never reports an end point).

    Returns:
        ``(peaks, counts, edges)``: peak bin indices, bin counts, bin edges.
    """
    from scipy.signal import find_peaks

    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(1)
    lo = np.floor(v.min() / bin_width) * bin_width
    n_bins = max(1, int(np.ceil((v.max() - lo) / bin_width + 1e-9)))
    edges = lo + bin_width * np.arange(n_bins + 1)
    counts = np.bincount(np.minimum(((v - lo) / bin_width).astype(np.int64), n_bins - 1), minlength=n_bins)
    padded = np.concatenate(([0], counts, [0]))
    peaks, _ = find_peaks(padded, prominence=prominence_fraction * counts.max())
    return (peaks - 1).astype(np.int64), counts, edges


def kmeans_1d(values: np.ndarray, k: int, seed: int = 0, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """1-D k-means with k-means++ initialisation (:func:`scipy.cluster.vq.kmeans2`), labels ordered by intensity.

    Args:
        values: (N,) intensities.
        k: clusters wanted; lowered to the number of distinct values when there are fewer.
        seed: k-means++ seed; the same input and seed give the same clusters.
        iterations: Lloyd iterations.

    Returns:
        ``(centers, labels)``: sorted centres (k',) and int32 labels (N,) in 0..k'−1, empty clusters dropped.
    """
    from scipy.cluster.vq import kmeans2

    v = np.asarray(values, dtype=np.float64)
    k = int(min(k, np.unique(v).size))
    if k <= 1:
        return np.array([v.mean()]), np.zeros(v.size, dtype=np.int32)
    with warnings.catch_warnings():
        # An empty cluster is handled below by dropping it; the warning would only add noise.
        warnings.simplefilter("ignore")
        centers, labels = kmeans2(v, k, iter=iterations, minit="++", seed=np.random.default_rng(seed))
    used = np.unique(labels)
    order = used[np.argsort(centers[used])]
    remap = np.zeros(k, dtype=np.int32)
    remap[order] = np.arange(order.size, dtype=np.int32)
    return centers[order], remap[labels]


def segment_particle(
    image: np.ndarray, n_elements: int, settings: SegmentSettings | None = None, source: str | None = None
) -> Segmentation:
    """Run steps 1–6 on one square HAADF image.

    Args:
        image: (N, N) array of any numeric dtype (float in [0, 1] from :func:`semkit.data.load_image`, raw
            8/16-bit counts, ...).
        n_elements: number of elements in the particle's composition (1–5 in the study).
        settings: thresholds; defaults to :class:`SegmentSettings`.
        source: name of the image for error messages.

    Returns:
        :class:`Segmentation`. When there is nothing to box (constant image, no particle found) its ``reason``
        says why and ``labels`` is ``None``: a batch gets an empty box list, not an exception.

    Raises:
        InputError: naming ``source``, for a non-square, non-2-D or non-finite image or ``n_elements < 1``.
    """
    cfg = settings or SegmentSettings()
    img = check_image(image, source)
    if n_elements is None or int(n_elements) < 1:
        raise InputError(
            f"element count must be a positive integer, got {n_elements!r} (give --elements N or a counts CSV)",
            source,
        )
    n_elements = int(n_elements)
    g = cfg.grid
    small = resize_to_grid(img, g)
    if not np.isfinite(small).all():
        raise InputError("image contains NaN or infinite values", source)
    lo, hi = float(small.min()), float(small.max())
    seg = Segmentation(parent_shape=img.shape, resized=small, n_elements=n_elements)
    if not hi - lo > 1e-6 * max(1.0, abs(hi)):
        seg.reason = "constant image: nothing to segment"
        return seg
    small = (small - lo) * np.float32(255.0 / (hi - lo))
    seg.resized = small

    # Step 2: sharpen, blur, adaptive Gaussian threshold, bounding box of the significant components.
    sharp = _unsharp(small, cfg.unsharp_sigma, cfg.unsharp_amount)
    blur = gaussian(sharp, cfg.blur_sigma, "nearest")
    seg.sharpened, seg.blurred = sharp, blur
    # Kernel of threshold_block taps (truncate = 3 sigma), as OpenCV's ADAPTIVE_THRESH_GAUSSIAN_C.
    local_mean = gaussian(blur, (cfg.threshold_block - 1) / 6.0, "reflect", truncate=3.0)
    fg = blur > local_mean + cfg.threshold_offset
    seg.threshold_mask = fg
    comp, n_comp = ndi.label(fg)
    if n_comp == 0:
        seg.reason = "no particle: the adaptive threshold found no foreground"
        return seg
    sizes = np.bincount(comp.ravel())[1:]
    keep = np.flatnonzero(sizes >= max(cfg.min_component_fraction * g * g, 1)) + 1
    if keep.size == 0:
        seg.reason = "no particle: only foreground specks smaller than the minimum particle size"
        return seg
    snr, noise, bg_level = _particle_snr(blur, fg, comp == (np.argmax(sizes) + 1))
    if snr < cfg.min_snr:
        seg.reason = (
            f"no particle: the brightest object stands only {snr:.1f} noise units above the background "
            f"(need {cfg.min_snr:g})"
        )
        return seg
    # A dark phase next to a bright one sits below its local mean and escapes the adaptive threshold; pixels
    # far above the background's noise are particle too, so they join the mask before the bounding box.
    if noise > 0:
        fg = fg | (blur > bg_level + cfg.significance * noise)
        seg.threshold_mask = fg
        comp, n_comp = ndi.label(fg)
        sizes = np.bincount(comp.ravel())[1:]
        keep = np.flatnonzero(sizes >= max(cfg.min_component_fraction * g * g, 1)) + 1
    slices = ndi.find_objects(comp)
    r0 = min(slices[i - 1][0].start for i in keep)
    r1 = max(slices[i - 1][0].stop for i in keep)
    c0 = min(slices[i - 1][1].start for i in keep)
    c1 = max(slices[i - 1][1].stop for i in keep)
    m = cfg.bbox_margin
    r0, c0, r1, c1 = max(r0 - m, 0), max(c0 - m, 0), min(r1 + m, g), min(c1 + m, g)
    seg.bbox = (r0, c0, r1, c1)
    crop = small[r0:r1, c0:c1]
    crop_blur = blur[r0:r1, c0:c1]
    seg.crop = crop

    # Step 3: background cutoff from the diagonal profile.
    seg.profile = diagonal_profile(crop_blur)
    seg.cutoff, seg.edges = profile_cutoff(
        seg.profile, cfg.profile_rise_fraction, cfg.profile_slope_fraction, noise
    )
    diag_range = float(seg.profile.max() - seg.profile.min())
    above = crop_blur >= seg.cutoff
    comp, n_comp = ndi.label(above)
    if n_comp == 0:
        seg.reason = "no particle: nothing above the background cutoff"
        return seg
    largest = comp == (np.argmax(np.bincount(comp.ravel())[1:]) + 1)

    # Step 4: convex hull, background to 0, brighten, sharpen and blur again inside the hull.
    hull = convex_hull(largest)
    seg.hull = hull
    bright = np.where(hull, crop + np.float32(cfg.brighten_fraction * diag_range), np.float32(0))
    # Both filters see only the hull: the zeroed background would otherwise brighten (unsharp) or darken (blur)
    # the rim into a ring of its own cluster.
    bright = bright + cfg.unsharp_amount * (bright - _masked_gaussian(bright, hull, cfg.unsharp_sigma))
    bright = _masked_gaussian(bright * hull, hull, cfg.blur_sigma)
    # Keep every hull pixel strictly positive: "non-zero" is what marks the particle from here on.
    bright[hull] = np.maximum(bright[hull], np.float32(1e-3))
    seg.brightened = bright

    # Step 5: number of clusters from the histogram peaks and the composition.
    values = bright[hull]
    seg.peaks, seg.hist_counts, seg.hist_edges = count_peaks(values, cfg.bin_width, cfg.prominence_fraction)
    seg.k = choose_k(len(seg.peaks), n_elements)

    # Step 6: 1-D k-means of the particle's intensities; the background is the k-th cluster (exactly the pixels
    # outside the hull; the brightening keeps them apart, so this equals clustering all pixels into k groups).
    seg.centers, lab = kmeans_1d(values, seg.k - 1, cfg.seed, cfg.kmeans_iterations)
    labels = np.zeros(hull.shape, dtype=np.int32)
    labels[hull] = lab + 1
    seg.labels = labels
    return seg
