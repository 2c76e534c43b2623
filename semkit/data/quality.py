"""Per-image quality measures for dataset curation: focus, contrast, near-empty flag and perceptual hashes.

All measures take a float grayscale image in [0, 1] (as returned by :func:`semkit.data.io.load_image`, databar
already cropped) and return plain Python numbers, so they go straight into a manifest table.

Choices, and why:

* **Focus** is the variance of the Laplacian (Pech-Pacheco et al., "Diatom autofocusing in brightfield
  microscopy: a comparative study", ICPR 2000; the LAP family of Pertuz et al., Pattern Recognition 46, 1415,
  2013), computed as a Laplacian of Gaussian (σ = :data:`FOCUS_SIGMA` px) on the image after a robust intensity
  stretch (1st and 99th percentiles mapped to 0 and 1). Without the stretch the score mixes sharpness with
  contrast (it scales with the square of the intensity range), so a dim but sharp image would rank as blurred.
  Without the Gaussian, pixel-level shot noise dominates the plain 3x3 Laplacian of SEM images: a nearly bare,
  noisy Phenom frame (``5_Positive-Examples``) ranked sharpest of 39 real images, with σ = 1 it ranks mid-field
  and the crisp BAM/Phenom frames rank first. The score depends on pixel size, so compare it between images of
  one instrument and magnification, not across datasets.
* **Contrast** is the robust range (99th minus 1st percentile) of the raw [0, 1] intensities: insensitive to a
  few hot pixels or a saturated scale bar. The RMS contrast (standard deviation) is reported alongside.
* **Near-empty** means little specimen structure: after a Gaussian blur (σ = 2 px, which suppresses shot noise
  but keeps particle outlines) fewer than :data:`NEAR_EMPTY_MAX_FRACTION` of the pixels differ from the
  image's median by more than :data:`NEAR_EMPTY_DELTA`. Blank frames, bare substrate and beam-off images are
  flagged; a sparse frame with a few particles covering 1-2 % of it is not.
* **Duplicates** are found with the DCT perceptual hash (``imagehash.phash``, 64 bits): images whose hashes
  differ in at most ``max_distance`` bits are linked and the connected components of these links form the
  duplicate groups (union-find through :func:`scipy.sparse.csgraph.connected_components`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from semkit.errors import InputError

#: Percentiles used for the robust stretch and the robust contrast.
ROBUST_PERCENTILES = (1.0, 99.0)
#: Scale (px) of the Laplacian of Gaussian of the focus score: suppresses shot noise, keeps particle edges.
FOCUS_SIGMA = 1.0
#: Blur of the near-empty rule, in pixels: large enough to average out shot noise, small enough for particles.
NEAR_EMPTY_SIGMA = 2.0
#: A pixel shows structure when its blurred intensity differs from the median by more than this ([0, 1] units).
NEAR_EMPTY_DELTA = 0.1
#: An image is near-empty when at most this fraction of its pixels show structure: about one 50-px particle in
#: a 640 x 640 tile. A sparse BAM frame with ten particles (1908250.tif) has 2 % and is not near-empty.
NEAR_EMPTY_MAX_FRACTION = 0.005
#: Default Hamming distance (of 64 bits) up to which two perceptual hashes count as the same picture.
#: Exact and re-encoded copies differ by 0-2 bits; distinct real SEM images (BAM, Phenom, NASA EBC) differ by 14 to
#: 50 bits (median 32).
DUPLICATE_MAX_DISTANCE = 6


def _check(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0:
        raise InputError(f"quality measures need a non-empty 2-D grayscale image, got shape {image.shape}")
    return image.astype(np.float64, copy=False)


def robust_stretch(image: np.ndarray, percentiles: tuple[float, float] | None = None) -> np.ndarray:
    """Map the 1st/99th intensity percentiles to 0/1 (clipped); a flat image maps to all zeros.

    Args:
        image: (H, W) float image.
        percentiles: the image's (1st, 99th) percentile values when already known.

    Returns:
        float64 (H, W) array in [0, 1].
    """
    img = _check(image)
    lo, hi = np.percentile(img, ROBUST_PERCENTILES) if percentiles is None else percentiles
    if hi <= lo:
        return np.zeros_like(img)
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0)


def _focus(img: np.ndarray, percentiles: tuple[float, float] | None = None) -> float:
    stretched = robust_stretch(img, percentiles)
    return float(ndimage.gaussian_laplace(stretched, FOCUS_SIGMA, mode="reflect").var())


def focus_score(image: np.ndarray) -> float:
    """Variance of the Laplacian of Gaussian (σ = ``FOCUS_SIGMA``) of the robustly stretched image.

    Higher = sharper. ``scipy.ndimage.gaussian_laplace`` with reflected borders.

    Args:
        image: (H, W) float image in [0, 1].

    Returns:
        Non-negative float; 0 for a constant image. Real SEM frames score about 5e-5 (strongly blurred) to
        3e-3 (crisp). On a near-empty frame the stretch amplifies noise and the score measures noise rather than
        focus, which is why the example grid ranks focus among structured images only.
    """
    return _focus(image)


def contrast(image: np.ndarray) -> float:
    """Robust intensity range: 99th minus 1st percentile of the [0, 1] intensities (0 for a flat image)."""
    lo, hi = np.percentile(_check(image), ROBUST_PERCENTILES)
    return float(hi - lo)


def rms_contrast(image: np.ndarray) -> float:
    """RMS contrast: the standard deviation of the [0, 1] intensities."""
    return float(_check(image).std())


def structure_fraction(image: np.ndarray) -> float:
    """Fraction of pixels whose blurred intensity differs from the median by more than ``NEAR_EMPTY_DELTA``."""
    blurred = ndimage.gaussian_filter(_check(image), NEAR_EMPTY_SIGMA, mode="reflect")
    return float(np.mean(np.abs(blurred - np.median(blurred)) > NEAR_EMPTY_DELTA))


def is_near_empty(image: np.ndarray, max_fraction: float = NEAR_EMPTY_MAX_FRACTION) -> bool:
    """True when at most ``max_fraction`` of the pixels show structure (see :func:`structure_fraction`)."""
    return structure_fraction(image) <= max_fraction


def phash_hex(image: np.ndarray) -> str:
    """64-bit DCT perceptual hash (``imagehash.phash``) of an image in [0, 1], as 16 hex digits."""
    import imagehash
    from PIL import Image

    img8 = np.rint(np.clip(_check(image), 0.0, 1.0) * 255).astype(np.uint8)
    return str(imagehash.phash(Image.fromarray(img8)))


def _hash_bits(hashes: list[str]) -> np.ndarray:
    """(N, 64) bool array of the bits of 16-digit hex hashes."""
    bits = np.zeros((len(hashes), 64), dtype=bool)
    for i, h in enumerate(hashes):
        if not isinstance(h, str) or len(h) != 16:
            raise InputError(f"perceptual hash #{i} must be 16 hex digits, got {h!r}")
        value = int(h, 16)
        bits[i] = [(value >> (63 - b)) & 1 for b in range(64)]
    return bits


def hamming_distance(a: str, b: str) -> int:
    """Number of differing bits between two 16-digit hex perceptual hashes."""
    return int((int(a, 16) ^ int(b, 16)).bit_count())


def duplicate_groups(
    hashes: list[str], max_distance: int = DUPLICATE_MAX_DISTANCE, chunk: int = 2048
) -> np.ndarray:
    """Group images whose perceptual hashes are within ``max_distance`` bits (transitively).

    Every pair is compared (O(N²) in ``chunk``-row blocks through :func:`scipy.spatial.distance.cdist`, about a
    second for 10,000 images), linked pairs become graph edges and connected components become groups, so
    A~B and B~C put A, B and C in one group even when A and C are further apart.

    Args:
        hashes: N hex strings from :func:`phash_hex`.
        max_distance: largest Hamming distance (0-64) that still counts as a duplicate.
        chunk: rows compared at once (bounds memory to ``chunk × N`` floats).

    Returns:
        int64 array (N,): ``-1`` for images without a duplicate, otherwise a group id ``0, 1, 2, ...`` numbered
        in order of each group's first member.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial.distance import cdist

    if not 0 <= max_distance <= 64:
        raise InputError(f"max_distance must be within [0, 64], got {max_distance}")
    n = len(hashes)
    out = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return out
    bits = _hash_bits(list(hashes))
    rows, cols = [], []
    for start in range(0, n, chunk):
        # cdist's 'hamming' is the fraction of differing bits; x64 gives the bit count exactly.
        dist = np.rint(cdist(bits[start : start + chunk], bits, metric="hamming") * 64)
        r, c = np.nonzero(dist <= max_distance)
        keep = c > r + start
        rows.append(r[keep] + start)
        cols.append(c[keep])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp)
    next_id = 0
    ids: dict[int, int] = {}
    for i, k in enumerate(comp):
        if sizes[k] > 1:
            if k not in ids:
                ids[k], next_id = next_id, next_id + 1
            out[i] = ids[k]
    return out


def image_quality(image: np.ndarray) -> dict[str, float | bool | str]:
    """All measures of this module for one image, keyed by their manifest column names."""
    img = _check(image)
    lo, hi = np.percentile(img, ROBUST_PERCENTILES)  # shared by focus and contrast: one pass over the pixels
    frac = structure_fraction(img)
    return {
        "focus_score": _focus(img, (lo, hi)),
        "contrast": float(hi - lo),
        "rms_contrast": float(img.std()),
        "structure_fraction": frac,
        "near_empty": bool(frac <= NEAR_EMPTY_MAX_FRACTION),
        "phash": phash_hex(image),
    }
