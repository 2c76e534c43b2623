"""Tiled inference: segment overlapping tiles and stitch them into one label map without cut particles.

A detector sees only its tile, so a particle crossing a tile border comes back as a *piece* from each tile that
holds part of it. The stitching rule (:func:`stitch_pieces`):

1. every tile is post-processed on its own with :func:`semkit.models.postprocess.combine_masks` (the study's
   certain/uncertain rules and mask NMS), giving non-overlapping *pieces*;
2. a piece is **cut** when it touches an *inner* tile edge (an edge with a neighbouring tile behind it; the
   image border cuts every method alike and does not count). Its **margin** is the distance of its bounding box
   from the nearest inner edge;
3. two pieces from different tiles show **the same particle** when their masks agree where both tiles looked:
   the IoU of the two masks *restricted to the intersection of the two tile windows* exceeds ``match_iou``.
   Both tiles see that common strip completely, so a whole particle and its cut copy agree there (IoU ≈ 1)
   even though their full IoU is small; two neighbouring particles do not;
4. each group of matching pieces (transitively) becomes one particle: the **uncut** member farthest from an
   inner edge when there is one (the tile that saw the particle whole), otherwise -- a particle too large for
   any single tile -- the **union** of the pieces;
5. the particles are painted as :func:`~semkit.models.postprocess.combine_masks` paints them: certain ones
   first, each group by decreasing objectness; a pixel belongs to the first particle that claims it.

With an overlap wider than the largest particle every particle is seen whole by some tile, so rule 4 picks an
uncut copy and tiling changes nothing. For one tile (``tile=None`` or an image no larger than a tile) the
result is exactly :func:`~semkit.models.postprocess.combine_masks` on the whole image.

Related rules: StarDist's ``predict_instances_big`` keeps an object from the tile whose core holds its centre
(Schmidt et al., MICCAI 2018; Weigert et al., WACV 2020); IoU matching inside the overlap is the usual way to
stitch label maps (e.g. Cellpose's 3-D stitching, Stringer et al., Nat. Methods 18, 100 (2021)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

from semkit.errors import InputError
from semkit.models.postprocess import CombineThresholds, combine_masks

#: Columns of the stitched per-particle table.
STITCHED_COLUMNS = ["id", "objectness", "confidence", "certain", "area_px", "tile", "pieces"]


@dataclass(frozen=True)
class Tile:
    """One window of a tile grid, ``[y0, y1) × [x0, x1)`` in image pixels.

    Attributes:
        inner: for the edges (top, left, bottom, right): ``True`` when a neighbouring tile continues past it,
            ``False`` on the image border.
    """

    y0: int
    x0: int
    y1: int
    x1: int
    inner: tuple[bool, bool, bool, bool] = (False, False, False, False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


@dataclass
class Detections:
    """One tile's (or image's) raw detector output, as NumPy arrays in the tile's pixel grid.

    Attributes:
        boxes: float32 (N, 4) xyxy.
        scores: float32 (N,) objectness.
        mask_probs: float32 (N, 1, M, M) per-box mask probabilities (torchvision's 28 × 28 crops) or, with
            ``cropped=False``, (N, 1, H, W) full-tile probabilities.
        bin_probs: float32 (N, k) confidence-bin probabilities, or ``None`` for a model without the head.
        cropped: whether ``mask_probs`` are per-box crops.
    """

    boxes: np.ndarray
    scores: np.ndarray
    mask_probs: np.ndarray
    bin_probs: np.ndarray | None = None
    cropped: bool = True

    def __len__(self) -> int:
        return int(self.scores.shape[0])


#: A detector maps a float32 (H, W) image in [0, 1] to its :class:`Detections`.
Detector = Callable[[np.ndarray], Detections]


@dataclass
class Piece:
    """A particle as seen by one tile: a bool mask cropped to its bounding box, in image coordinates."""

    tile: int
    y0: int
    x0: int
    mask: np.ndarray
    objectness: float
    confidence: float
    certain: bool
    cut: bool
    margin: float
    area: int = field(init=False)

    def __post_init__(self) -> None:
        self.area = int(np.count_nonzero(self.mask))

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        return self.y0, self.x0, self.y0 + self.mask.shape[0], self.x0 + self.mask.shape[1]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap`` px overlap.

    The tiles are spread evenly, the first at 0 and the last ending at ``length``, so every tile has the full
    size and the actual overlap is the requested one or a little more. ``length <= tile`` gives ``[0]``.
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    return [int(v) for v in np.round(np.linspace(0, length - tile, n))]


def tile_grid(shape: tuple[int, int], tile: int | None, overlap: int = 128) -> list[Tile]:
    """Overlapping tiles covering an image, row by row.

    Args:
        shape: (H, W) of the image.
        tile: tile side in px; ``None`` or a tile at least as large as the image gives one tile (the image).
            Tiles never exceed the image: an image smaller than the tile in one direction gets tiles of the
            image's size in that direction.
        overlap: minimum overlap of neighbouring tiles in px; should exceed the largest particle diameter so
            that every particle lies whole in some tile (larger ones are stitched from their pieces).

    Returns:
        The tiles; each knows which of its edges are inner edges.

    Raises:
        ValueError: for a non-positive tile or an overlap outside ``[0, tile)``.
    """
    height, width = int(shape[0]), int(shape[1])
    if tile is None:
        return [Tile(0, 0, height, width)]
    if tile < 1:
        raise ValueError(f"tile size must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile) = [0, {tile}), got {overlap}")
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    th, tw = min(tile, height), min(tile, width)
    return [
        Tile(y, x, y + th, x + tw, inner=(i > 0, j > 0, i < len(ys) - 1, j < len(xs) - 1))
        for i, y in enumerate(ys)
        for j, x in enumerate(xs)
    ]


def pieces_from_labels(labels: np.ndarray, table: pd.DataFrame, tile: Tile, tile_index: int) -> list[Piece]:
    """Cut a tile's label map (from :func:`combine_masks`) into :class:`Piece` objects in image coordinates."""
    h, w = labels.shape
    objects = ndimage.find_objects(labels)
    top, left, bottom, right = tile.inner
    pieces = []
    for row in table.itertuples(index=False):
        sl = objects[int(row.id) - 1]
        if sl is None:
            continue
        r0, r1, c0, c1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        distances = [d for d, inner in ((r0, top), (c0, left), (h - r1, bottom), (w - c1, right)) if inner]
        margin = float(min(distances)) if distances else math.inf
        pieces.append(Piece(
            tile=tile_index, y0=tile.y0 + r0, x0=tile.x0 + c0, mask=labels[sl] == row.id,
            objectness=float(row.objectness), confidence=float(row.confidence), certain=bool(row.certain),
            cut=bool(distances) and margin == 0.0, margin=margin,
        ))
    return pieces


def stitch_pieces(
    pieces: list[Piece], tiles: list[Tile], shape: tuple[int, int], match_iou: float = 0.5, min_area: int = 1
) -> tuple[np.ndarray, pd.DataFrame]:
    """Merge the pieces of all tiles into one non-overlapping label map (rules in the module docstring).

    Args:
        pieces: from :func:`pieces_from_labels` for every tile.
        tiles: the grid the pieces came from (indexed by ``Piece.tile``).
        shape: (H, W) of the image.
        match_iou: IoU inside the common window above which two pieces of different tiles are one particle.
        min_area: particles left with fewer visible pixels are dropped.

    Returns:
        ``(labels, table)``: int32 (H, W) map with particles 1..P, and one row per particle with columns
        :data:`STITCHED_COLUMNS` (``tile``: the tile whose piece was kept, or the largest piece's tile for a
        union; ``pieces``: how many tile pieces the particle was made of).
    """
    parent = list(range(len(pieces)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_tile: dict[int, list[int]] = {}
    for i, p in enumerate(pieces):
        by_tile.setdefault(p.tile, []).append(i)
    for a in range(len(tiles)):
        for b in range(a + 1, len(tiles)):
            common = _intersection(_window(tiles[a]), _window(tiles[b]))
            if common is None:
                continue
            in_a = [i for i in by_tile.get(a, []) if _intersection(pieces[i].bounds, common)]
            in_b = [j for j in by_tile.get(b, []) if _intersection(pieces[j].bounds, common)]
            for i in in_a:
                for j in in_b:
                    if _iou_within(pieces[i], pieces[j], common) > match_iou:
                        parent[find(i)] = find(j)

    groups: dict[int, list[int]] = {}
    for i in range(len(pieces)):
        groups.setdefault(find(i), []).append(i)
    merged = [_resolve([pieces[i] for i in members]) for members in groups.values()]
    # certain particles first, then by decreasing objectness, as combine_masks paints
    merged.sort(key=lambda m: (not m[0].certain, -m[0].objectness, m[0].tile, m[0].y0, m[0].x0))

    labels = np.zeros(shape, dtype=np.int32)
    rows = []
    for piece, n_pieces in merged:
        y0, x0, y1, x1 = piece.bounds
        region = labels[y0:y1, x0:x1]
        visible = piece.mask & (region == 0)
        area = int(visible.sum())
        if area < max(min_area, 1):
            continue
        pid = len(rows) + 1
        region[visible] = pid
        rows.append((pid, piece.objectness, piece.confidence, piece.certain, area, piece.tile, n_pieces))
    table = pd.DataFrame(rows, columns=STITCHED_COLUMNS).astype(
        {"id": "int32", "objectness": "float64", "confidence": "float64", "certain": "bool", "area_px": "int64",
         "tile": "int64", "pieces": "int64"}
    )
    return labels, table


def predict_tiled(
    detector: Detector,
    image: np.ndarray,
    thresholds: CombineThresholds | None = None,
    tile: int | None = None,
    overlap: int = 128,
    match_iou: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Segment ``image`` tile by tile and stitch the result.

    Memory: only one tile's detections (per-box mask crops) and one tile-sized label map exist at a time; the
    kept particles are stored as masks cropped to their bounding boxes.

    Args:
        detector: image (h, w) float32 → :class:`Detections` in the tile's pixel grid.
        image: float32 (H, W) in [0, 1].
        thresholds: post-processing thresholds for every tile.
        tile, overlap: see :func:`tile_grid`.
        match_iou: see :func:`stitch_pieces`.
        progress: called as ``progress(done, total)`` after every tile.

    Returns:
        ``(labels, table)`` as :func:`stitch_pieces`.
    """
    th = thresholds or CombineThresholds()
    tiles = tile_grid(image.shape, tile, overlap)
    pieces: list[Piece] = []
    for k, t in enumerate(tiles):
        window = np.ascontiguousarray(image[t.slices])
        det = detector(window)
        tile_labels, tile_table = combine_masks(
            det.boxes, det.scores, det.mask_probs, t.shape, bin_probs=det.bin_probs, thresholds=th,
            cropped=det.cropped,
        )
        pieces.extend(pieces_from_labels(tile_labels, tile_table, t, k))
        if progress is not None:
            progress(k + 1, len(tiles))
    return stitch_pieces(pieces, tiles, image.shape, match_iou=match_iou, min_area=th.min_area)


def check_detections(det: Detections, shape: tuple[int, int], name: str | None = None) -> Detections:
    """Validate a detector's output shapes (raises :class:`InputError` naming ``name``)."""
    n = len(det)
    if det.boxes.shape != (n, 4):
        raise InputError(f"detector returned boxes of shape {det.boxes.shape} for {n} scores", name)
    if det.mask_probs.shape[0] != n:
        raise InputError(f"detector returned {det.mask_probs.shape[0]} masks for {n} scores", name)
    if det.bin_probs is not None and det.bin_probs.shape[0] != n:
        raise InputError(f"detector returned {det.bin_probs.shape[0]} bin rows for {n} scores", name)
    return det


def _window(t: Tile) -> tuple[int, int, int, int]:
    return t.y0, t.x0, t.y1, t.x1


def _intersection(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    y0, x0, y1, x1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (y0, x0, y1, x1) if y1 > y0 and x1 > x0 else None


def _crop(p: Piece, box: tuple[int, int, int, int]) -> np.ndarray:
    # the piece's mask on the window `box` (zeros where the piece does not reach)
    out = np.zeros((box[2] - box[0], box[3] - box[1]), dtype=bool)
    inter = _intersection(p.bounds, box)
    if inter is not None:
        y0, x0, y1, x1 = inter
        out[y0 - box[0] : y1 - box[0], x0 - box[1] : x1 - box[1]] = p.mask[y0 - p.y0 : y1 - p.y0, x0 - p.x0 : x1 - p.x0]
    return out


def _iou_within(a: Piece, b: Piece, window: tuple[int, int, int, int]) -> float:
    # IoU of the two masks counting only pixels inside `window` (the part both tiles saw)
    ya, yb = _intersection(a.bounds, window), _intersection(b.bounds, window)
    if ya is None or yb is None:
        return 0.0
    span = (min(ya[0], yb[0]), min(ya[1], yb[1]), max(ya[2], yb[2]), max(ya[3], yb[3]))
    ma, mb = _crop(a, span), _crop(b, span)
    union = np.count_nonzero(ma | mb)
    return np.count_nonzero(ma & mb) / union if union else 0.0


def _resolve(group: list[Piece]) -> tuple[Piece, int]:
    whole = [p for p in group if not p.cut]
    if whole:
        # the tile that saw the particle farthest from its inner edges; ties: higher objectness
        return max(whole, key=lambda p: (p.margin, p.objectness, -p.tile)), len(group)
    if len(group) == 1:
        return group[0], 1
    y0 = min(p.y0 for p in group)
    x0 = min(p.x0 for p in group)
    y1 = max(p.bounds[2] for p in group)
    x1 = max(p.bounds[3] for p in group)
    mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for p in group:
        mask |= _crop(p, (y0, x0, y1, x1))
    # scores of a particle cut in every tile: those of its largest (most completely seen) piece
    largest = max(group, key=lambda p: (p.area, p.objectness))
    union = Piece(tile=largest.tile, y0=y0, x0=x0, mask=mask, objectness=largest.objectness,
                  confidence=largest.confidence, certain=largest.certain, cut=True, margin=0.0)
    return union, len(group)
