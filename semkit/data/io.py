"""The one image loader: TIFF (8/16-bit, grayscale/RGB/palette, Zeiss and FEI metadata), PNG and JPEG.

Intensity images come back as float32 grayscale in [0, 1] together with an :class:`ImageMeta` that records the
original dtype and its range, so nothing about the file is lost. Label images (instance maps, masks, semantic
annotations) are read with :func:`load_labels`, which never rescales values.

Physical pixel size is read from the instrument's own metadata and never guessed:

1. Zeiss SmartSEM (``TiffFile.sem_metadata['ap_image_pixel_size']``),
2. FEI / Thermo Fisher (``TiffFile.fei_metadata['Scan']['PixelWidth']``, metres),
3. ImageJ calibration (``unit`` + ``XResolution``) or TIFF resolution tags in centimetres/millimetres/micrometres,
4. otherwise ``None``. Resolution in *inches* at typical screen/print densities (≤ 1200 dpi) is a display
   setting written by image editors, not a calibration, and is ignored.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from semkit.errors import InputError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_UNIT_TO_NM = {"pm": 1e-3, "nm": 1.0, "µm": 1e3, "μm": 1e3, "um": 1e3, "micron": 1e3, "microns": 1e3,
               "mm": 1e6, "cm": 1e7, "m": 1e9}
# ITU-R BT.601 luma weights, the convention of PIL's "L" conversion.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
# Below this many dots per inch a resolution tag is a display/print setting (72, 96, 300 dpi), not a calibration.
_MAX_DISPLAY_DPI = 1200


@dataclass
class ImageMeta:
    """What the loader learned about a file besides its pixels.

    Attributes:
        path: the file read.
        shape: (H, W) of the returned grayscale image.
        original_dtype: numpy dtype name of the stored samples (``uint8``, ``uint16``, ...).
        original_range: (min, max) of the dtype's range used for scaling to [0, 1]
            (for float files: the data range).
        original_channels: 1 for grayscale, 3/4 for RGB(A); ``"palette"`` for palette images.
        pixel_size_nm: physical pixel edge length, or ``None`` when the file carries no calibration.
        pixel_size_source: ``"zeiss"``, ``"fei"``, ``"imagej"``, ``"tiff-resolution"`` or ``None``.
        magnification: nominal magnification (e.g. 50000.0) when the metadata states it.
        detector: detector name from the metadata (e.g. ``"InLens"``).
        instrument: ``"zeiss"``, ``"fei"`` or ``None``.
        field_of_view_um: image width in µm (width × pixel size) when the pixel size is known.
        extra: further metadata worth keeping (acceleration voltage, working distance, date).
    """

    path: str
    shape: tuple[int, int]
    original_dtype: str
    original_range: tuple[float, float]
    original_channels: int | str = 1
    pixel_size_nm: float | None = None
    pixel_size_source: str | None = None
    magnification: float | None = None
    detector: str | None = None
    instrument: str | None = None
    field_of_view_um: float | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def load_image(path: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """Read an image file as float32 grayscale in [0, 1].

    Args:
        path: TIFF, PNG or JPEG file.

    Returns:
        ``(image, meta)``: ``image`` is float32 (H, W) in [0, 1]; ``meta`` records the original dtype and range,
        the pixel size (``None`` when the file is not calibrated), magnification, detector and field of view.

    Raises:
        InputError: naming the file, if it is missing, corrupt, truncated or of an unsupported mode.
    """
    path = Path(path)
    raw, channels, meta_kwargs = _read(path)
    gray = _to_gray(raw, channels, path)
    scaled, dtype_range = _scale(gray, raw.dtype, path)
    meta = ImageMeta(path=str(path), shape=scaled.shape, original_dtype=str(raw.dtype),
                     original_range=dtype_range, original_channels=channels, **meta_kwargs)
    if meta.pixel_size_nm is not None:
        meta.field_of_view_um = scaled.shape[1] * meta.pixel_size_nm / 1000.0
    return scaled, meta


def load_labels(path: str | Path) -> np.ndarray:
    """Read a label image (instance map, binary mask or semantic annotation) without rescaling.

    RGB label files whose three channels are equal (a common export artefact) are reduced to one channel;
    genuinely coloured label images are rejected rather than guessed at.

    Raises:
        InputError: naming the file, if it cannot be read or is not a single-channel integer image.
    """
    path = Path(path)
    raw, channels, _ = _read(path, metadata=False)
    if channels == "palette":
        # Palette label images store class indices; the colours are only for display.
        pass
    elif raw.ndim == 3:
        if raw.shape[-1] in (3, 4) and np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(
            raw[..., 0], raw[..., 2]
        ):
            raw = raw[..., 0]
        else:
            raise InputError(f"label image must be single-channel, got shape {raw.shape}", path)
    if not np.issubdtype(raw.dtype, np.integer) and raw.dtype != np.bool_:
        if np.issubdtype(raw.dtype, np.floating) and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw)):
            raw = raw.astype(np.int64)
        else:
            raise InputError(f"label image must hold integers, got {raw.dtype}", path)
    return np.asarray(raw)


def save_labels(path: str | Path, labels: np.ndarray) -> Path:
    """Write an instance/semantic label map losslessly (TIFF, zlib) with the smallest fitting dtype."""
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
    tifffile.imwrite(path, labels.astype(dtype), compression="zlib")
    return path


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """All image files under ``folder`` (sorted, case-insensitive suffix match).

    Raises:
        InputError: if ``folder`` does not exist or is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a directory", folder)
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# --------------------------------------------------------------------------------------------------------------
# internals


def _read(path: Path, metadata: bool = True) -> tuple[np.ndarray, int | str, dict]:
    if not path.exists():
        raise InputError("file does not exist", path)
    if not path.is_file():
        raise InputError("not a file", path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"unsupported file type {suffix!r}; expected one of {', '.join(IMAGE_SUFFIXES)}", path)
    try:
        if suffix in (".tif", ".tiff"):
            return _read_tiff(path, metadata)
        # Label reading (metadata=False) keeps palette indices: they are the classes, the colours are display only.
        return _read_pil(path, keep_palette_indices=not metadata)
    except InputError:
        raise
    except Exception as exc:  # corrupt/truncated files raise many different library errors
        raise InputError(f"cannot read image ({type(exc).__name__}: {exc})", path) from exc


def _read_tiff(path: Path, metadata: bool) -> tuple[np.ndarray, int | str, dict]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise InputError("TIFF file has no image pages", path)
        page = tif.pages[0]
        data = page.asarray()
        channels: int | str = 1
        if page.photometric == tifffile.PHOTOMETRIC.PALETTE and page.colormap is not None:
            channels = "palette"
            if metadata:
                # Intensity reading: map indices through the colour map (16-bit entries) to RGB.
                cmap = np.asarray(page.colormap, dtype=np.float64)  # (3, 2**bits)
                if data.max(initial=0) >= cmap.shape[1]:
                    raise InputError("palette index outside the colour map", path)
                data = (cmap[:, data].transpose(1, 2, 0) / 65535.0 * 255.0).round().astype(np.uint8)
        elif data.ndim == 3 and data.shape[-1] in (3, 4):
            channels = data.shape[-1]
        elif data.ndim == 3 and data.shape[0] in (3, 4) and page.planarconfig == tifffile.PLANARCONFIG.SEPARATE:
            data = np.moveaxis(data, 0, -1)
            channels = data.shape[-1]
        elif data.ndim != 2:
            raise InputError(f"unsupported TIFF layout with shape {data.shape} (expected 2-D or RGB)", path)
        meta = _tiff_metadata(tif, page, data.shape[:2]) if metadata else {}
    return data, channels, meta


def _read_pil(path: Path, keep_palette_indices: bool = False) -> tuple[np.ndarray, int | str, dict]:
    from PIL import Image

    with Image.open(path) as im:
        im.load()  # forces decoding so truncated files fail here, naming the file
        mode = im.mode
        if mode == "P" and keep_palette_indices:
            channels: int | str = "palette"
        elif mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            channels = "palette"
        elif mode in ("L", "I;16", "I;16B", "I;16L", "I", "F", "1"):
            channels = 1
        elif mode in ("LA",):
            im = im.getchannel(0)
            channels = 1
        elif mode in ("RGB", "RGBA"):
            channels = len(mode)
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
            channels = 3
        else:
            raise InputError(f"unsupported image mode {mode!r}", path)
        data = np.array(im)
    if mode == "1":
        data = data.astype(bool)  # bilevel: scaled to exactly 0 and 1, not to 0 and 1/255
    elif mode.startswith("I;16"):
        data = data.astype(np.uint16)
    return data, channels, {}


def _to_gray(data: np.ndarray, channels: int | str, path: Path) -> np.ndarray:
    if data.ndim == 2:
        return data
    rgb = data[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0]  # grayscale stored as RGB: keep exact values
    return (rgb.astype(np.float64) @ _LUMA).astype(np.float64)


def _scale(gray: np.ndarray, stored_dtype: np.dtype, path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    if gray.dtype == np.bool_:
        return gray.astype(np.float32), (0.0, 1.0)
    if np.issubdtype(stored_dtype, np.integer):
        info = np.iinfo(stored_dtype)
        if info.min < 0:
            raise InputError(f"signed integer images ({stored_dtype}) are not supported", path)
        lo, hi = 0.0, float(info.max)
        return (np.asarray(gray, dtype=np.float64) / hi).clip(0, 1).astype(np.float32), (lo, hi)
    if np.issubdtype(stored_dtype, np.floating):
        g = np.asarray(gray, dtype=np.float64)
        if not np.all(np.isfinite(g)):
            raise InputError("image contains NaN or infinite values", path)
        lo, hi = float(g.min()), float(g.max())
        if lo >= 0.0 and hi <= 1.0:
            return g.astype(np.float32), (0.0, 1.0)
        scaled = (g - lo) / (hi - lo) if hi > lo else np.zeros_like(g)
        return scaled.astype(np.float32), (lo, hi)
    raise InputError(f"unsupported sample type {stored_dtype}", path)


def _length_nm(value: float, unit: str) -> float | None:
    factor = _UNIT_TO_NM.get(unit.strip())
    return None if factor is None else float(value) * factor


def _tiff_metadata(tif, page, shape: tuple[int, int]) -> dict:
    out: dict = {}
    if tif.is_sem and tif.sem_metadata:
        out.update(_zeiss_metadata(tif.sem_metadata))
    elif tif.is_fei and tif.fei_metadata:
        out.update(_fei_metadata(tif.fei_metadata))
    if out.get("pixel_size_nm") is None:
        px = _resolution_pixel_size(tif, page)
        if px is not None:
            out["pixel_size_nm"], out["pixel_size_source"] = px
    return out


def _zeiss_metadata(md: dict) -> dict:
    out: dict = {"instrument": "zeiss", "extra": {}}
    for key in ("ap_image_pixel_size", "ap_pixel_size"):
        entry = md.get(key)
        if entry and len(entry) >= 3 and float(entry[1]) > 0:
            nm = _length_nm(entry[1], entry[2])
            if nm is not None:
                out["pixel_size_nm"], out["pixel_size_source"] = nm, "zeiss"
                break
    mag = md.get("ap_mag")
    if mag and len(mag) >= 2:
        out["magnification"] = _parse_magnification(mag[1])
    det = md.get("dp_detector_type") or md.get("dp_detector_channel")
    if det and len(det) >= 2:
        out["detector"] = str(det[1])
    for key, name in (("ap_actualkv", "eht_kv"), ("ap_wd", "working_distance_mm"), ("ap_date", "date")):
        entry = md.get(key)
        if entry and len(entry) >= 2:
            out["extra"][name] = entry[1]
    return out


def _fei_metadata(md: dict) -> dict:
    out: dict = {"instrument": "fei", "extra": {}}
    scan = md.get("Scan", {})
    if scan.get("PixelWidth"):
        out["pixel_size_nm"], out["pixel_size_source"] = float(scan["PixelWidth"]) * 1e9, "fei"
    beam_name = md.get("Beam", {}).get("Beam")
    beam = md.get(beam_name, {}) if beam_name else {}
    if beam.get("HV"):
        out["extra"]["eht_kv"] = float(beam["HV"]) / 1000.0
    hfw = beam.get("HFW") or scan.get("HorFieldsize")
    if hfw:
        out["extra"]["horizontal_field_width_um"] = float(hfw) * 1e6
    det = md.get("Detectors", {})
    if det.get("Name"):
        out["detector"] = str(det["Name"])
    mag = md.get("Image", {}).get("MagCanvasRealWidth")  # not a magnification: kept out on purpose
    del mag
    return out


def _parse_magnification(text) -> float | None:
    """'50.00 K X' → 50000.0; '1.20 M X' → 1.2e6; '500 X' → 500.0."""
    if isinstance(text, int | float):
        return float(text)
    m = re.match(r"\s*([\d.]+)\s*([kKmM]?)\s*[xX]?", str(text))
    if not m:
        return None
    factor = {"": 1.0, "k": 1e3, "m": 1e6}[m.group(2).lower()]
    return float(m.group(1)) * factor


def _resolution_pixel_size(tif, page) -> tuple[float, str] | None:
    import tifffile

    tags = page.tags
    if "XResolution" not in tags:
        return None
    num, den = tags["XResolution"].value
    if not num or not den:
        return None
    per_unit = num / den  # pixels per unit
    unit_tag = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else tifffile.RESUNIT.INCH
    ij = tif.imagej_metadata if tif.is_imagej else None
    if ij and ij.get("unit") and unit_tag == tifffile.RESUNIT.NONE:
        nm = _length_nm(1.0 / per_unit, str(ij["unit"]).replace("\\u00B5", "µ"))
        return (nm, "imagej") if nm and per_unit != 1 else None
    unit_nm = {tifffile.RESUNIT.CENTIMETER: 1e7, 4: 1e6, 5: 1e3}.get(int(unit_tag))
    if unit_nm is not None:
        return unit_nm / per_unit, "tiff-resolution"
    if int(unit_tag) == int(tifffile.RESUNIT.INCH) and per_unit > _MAX_DISPLAY_DPI:
        return 2.54e7 / per_unit, "tiff-resolution"
    return None
