"""Registry of public SEM / metallography datasets and a resumable, verifying fetcher.

``DATASETS`` is a plain dictionary NAME → :class:`DatasetSpec`; :func:`fetch` downloads a dataset's files into
``data/NAME/`` (resuming ``.part`` files with HTTP ``Range`` requests or, for ``file://`` URLs, by offset),
verifies every file against its pinned checksum, unpacks archives with a path-traversal guard and writes
``data/NAME/.semkit-fetch.json``. A finished fetch is skipped on the next call unless ``force=True``.

Where a size or checksum could not be found in a published record, the spec holds ``None``: the file is then
fetched *unverified* and the fetcher prints the sha256 it computed so it can be pinned here. Every value records
where it came from (comments next to the entries). Nothing is invented.

Offline use: a download fails at once with a message naming the URL and the two ways out — a mirror
(``mirror=`` / ``SEMKIT_DATA_MIRROR``, laid out as ``<mirror>/<NAME>/<filename>``) or a manual download placed at
``data/NAME/<filename>``, which the next fetch verifies and unpacks exactly like a download.

Example:
    >>> from semkit.data.registry import DATASETS, fetch
    >>> sorted(DATASETS)[:2]
    ['aachen-heerlen', 'bam-tio2']
    >>> fetch("metaldam", dest="data", mirror="/srv/mirror")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import ssl
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from semkit.errors import InputError

MARKER = ".semkit-fetch.json"
MIRROR_ENV = "SEMKIT_DATA_MIRROR"
# One short limit for connecting and for each read: a dead host or a dropped network must fail in seconds, and a
# stalled transfer keeps its .part file so the next call resumes instead of starting again.
DEFAULT_TIMEOUT_S = 10.0
_CHUNK = 1 << 20
_USER_AGENT = "semkit-data-fetch/0.1 (+https://github.com; python-urllib)"

# Layout names a DatasetSpec may declare; each names how semkit reads the unpacked folder (``paths`` in the spec
# says where the parts live). The first six are the adapters of issue 2; the last two describe layouts for which
# semkit has no reader yet (the files are still fetched and verified).
ADAPTERS: dict[str, str] = {
    "bam": "BAM TiO2 layout: SEM images, 4-connected instance outlines (*_m.tif), measurable masks (*_cm.tif)",
    "uncertainty_dataset": "Samples/, High_Confidence_Labels/, Low_Confidence_Labels/ label-map TIFFs (low/high mag)",
    "semantic_folders": "split/NAME.ext + split_annot/NAME.ext semantic masks (NASA benchmark layout)",
    "unlabeled": "folders of unlabeled images, read recursively",
    "instance_folder": "semkit's own images/ + labels/ + certainty/ layout",
    "coco": "COCO instance-segmentation JSON next to the images",
    "image_mask_folders": "images/NAME.* + labels/NAME.png semantic masks (no semkit reader yet)",
    "polygon_csv": "images/ + polygon annotations in a CSV file (no semkit reader yet)",
}


@dataclass(frozen=True)
class FileSpec:
    """One downloadable file of a dataset.

    Attributes:
        url: primary https URL.
        filename: name under ``data/NAME/`` (and under ``<mirror>/NAME/``).
        size_bytes: exact size when published, else ``None``.
        sha256: pinned SHA-256 hex digest, or ``None``.
        md5: pinned MD5 hex digest (Zenodo and figshare publish MD5), or ``None``. SHA-256 wins when both are set.
        unpack: extract this zip/tar(.gz/.bz2/.xz) archive into ``data/NAME/<unpack_to>`` after verification.
        unpack_to: sub-folder of ``data/NAME`` for the archive's members ("" = the dataset folder itself).
        alt_urls: further URLs serving the same bytes, tried in order when the primary one fails.
        source: where url, size and checksum were taken from.
    """

    url: str
    filename: str
    size_bytes: int | None = None
    sha256: str | None = None
    md5: str | None = None
    unpack: bool = False
    unpack_to: str = ""
    alt_urls: tuple[str, ...] = ()
    source: str = ""

    @property
    def pinned(self) -> bool:
        """True when a checksum is pinned, i.e. the download can be verified."""
        return bool(self.sha256 or self.md5)


@dataclass(frozen=True)
class DatasetSpec:
    """A public dataset: where it lives, under which license, and how semkit reads it once unpacked.

    Attributes:
        name: registry key and folder name under ``data/``.
        title: one-line title.
        description: what the images and labels are.
        homepage: landing page (record, repository or DOI resolver), https.
        doi: dataset DOI when one exists (without ``https://doi.org/``).
        license: license of the data, in short form; details in ``notes``.
        files: the files to download; empty when no public download exists (see ``manual``).
        paper: reference to cite.
        adapter: one of :data:`ADAPTERS`.
        paths: role → path relative to ``data/NAME`` (``root`` always; e.g. ``images``, ``labels``).
        notes: caveats (layout conversion, license details, mirrors).
        manual: instructions shown when the data cannot be downloaded automatically.
    """

    name: str
    title: str
    description: str
    homepage: str
    license: str
    files: tuple[FileSpec, ...]
    paper: str
    adapter: str
    doi: str | None = None
    paths: Mapping[str, str] = field(default_factory=lambda: {"root": "."})
    notes: str = ""
    manual: str | None = None

    @property
    def size_bytes(self) -> int | None:
        """Total download size, or ``None`` when any file's size is unpublished (or there are no files)."""
        sizes = [f.size_bytes for f in self.files]
        return None if not sizes or None in sizes else int(sum(sizes))  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["paths"] = dict(self.paths)
        return d


class UnknownDatasetError(KeyError):
    """An unknown dataset name; the message lists the valid names (a KeyError, like a dict lookup)."""

    def __init__(self, name: str, valid: list[str]):
        self.name = name
        self.valid = valid
        super().__init__(name)

    def __str__(self) -> str:
        return f"unknown dataset {self.name!r}; valid names: {', '.join(self.valid) or '(none registered)'}"


class FetchError(RuntimeError):
    """A download could not be completed (network unreachable, HTTP error, interrupted transfer)."""


class ChecksumError(InputError):
    """A downloaded (or manually placed) file does not match its pinned size or checksum; names the file."""


# ---------------------------------------------------------------------------------------------------------------
# The registry. Checksums and sizes are copied from the cited record or left None; never estimated.
# ---------------------------------------------------------------------------------------------------------------

# GitHub commits pinned so that archive URLs (and the folder names inside them) never move.
_BAM_COMMIT = "0aa525b73fc09af31ddcf743485027c909b6ff05"  # a commit holding Datasets/ (BAMresearch repository)
_NASA_COMMIT = "63ef39f50220db4c4baad8777fbf1f80d6689442"  # a commit holding benchmark_segmentation_data/

DATASETS: dict[str, DatasetSpec] = {
    "bam-tio2": DatasetSpec(
        name="bam-tio2",
        title="BAM TiO2 nanoparticle SEM images with manual particle outlines",
        description=("40 Zeiss SEM images (1024 x 768, 50 kX, 64-row databar) of agglomerated TiO2 particles, "
                     "41 TSEM images, manual 4-connected particle outlines and 2-/4-class masks marking "
                     "measurable (fully visible) particles."),
        homepage="https://github.com/BAMresearch/automatic-sem-image-segmentation",
        doi="10.5281/zenodo.4563942",
        license="CC BY-NC-ND 4.0",
        files=(
            # The repository README states the Datasets/ folder is the dataset also published as Zenodo record
            # 4563942. The Zenodo record's file names and MD5s could not be read from here, so the GitHub archive
            # of a pinned commit is used (known layout); GitHub publishes no size or checksum for archives.
            FileSpec(
                url=f"https://github.com/BAMresearch/automatic-sem-image-segmentation/archive/{_BAM_COMMIT}.zip",
                filename=f"automatic-sem-image-segmentation-{_BAM_COMMIT[:7]}.zip",
                unpack=True,
                source="GitHub archive of BAMresearch/automatic-sem-image-segmentation at a pinned commit; "
                       "size/checksum unpublished",
            ),
        ),
        paper=("B. Rühle, J. F. Krumrey, V.-D. Hodoroaba, 'Workflow towards automated segmentation of "
               "agglomerated, non-spherical particles from electron microscopy images using artificial neural "
               "networks', Scientific Reports 11, 4942 (2021), doi:10.1038/s41598-021-84287-6"),
        adapter="bam",
        paths={
            "root": f"automatic-sem-image-segmentation-{_BAM_COMMIT}/Datasets",
            "images": f"automatic-sem-image-segmentation-{_BAM_COMMIT}/Datasets/Electron Microscopy Images/SEM",
            "instances": (f"automatic-sem-image-segmentation-{_BAM_COMMIT}/Datasets/Electron Microscopy Image "
                          "Masks/TiO2_Masks_Manual_4connected"),
            "measurable": (f"automatic-sem-image-segmentation-{_BAM_COMMIT}/Datasets/Electron Microscopy Image "
                           "Masks/TiO2_Masks_Manual_4connected_2Classes"),
        },
        notes=("Data CC BY-NC-ND 4.0 (non-commercial, no derivatives); the repository's code is GPL-3.0. The "
               "archive holds the whole repository (code, trained models) besides Datasets/."),
    ),
    "uncertainty-sem": DatasetSpec(
        name="uncertainty-sem",
        title="Uncertainty-aware SEM particle segmentation data (low/high magnification)",
        description=("Desktop-SEM powder images at low (< 10 kX) and high (> 10 kX) magnification with "
                     "instance label maps in two confidence levels (confident / less certain labels)."),
        homepage="https://osf.io/f2y8w/",
        license="not stated",
        files=(
            # The data repository lrettenberger/Uncertainty-Aware-Particle-Segmentation-for-SEM-Data says:
            # "download High_Mag_Source_Files.zip and Low_Mag_Source_Files.zip from https://osf.io/f2y8w/".
            # OSF file ids are not known here, so the project's whole-storage zip endpoint (OSF WaterButler) is
            # used; it is generated on request, so it has no fixed size or checksum.
            FileSpec(
                url="https://files.osf.io/v1/resources/f2y8w/providers/osfstorage/?zip=",
                filename="osf-f2y8w.zip",
                unpack=True,
                source="OSF project f2y8w (named in the authors' data repository README); zip generated by OSF",
            ),
        ),
        paper=("L. Rettenberger et al., 'Uncertainty-aware particle segmentation for electron microscopy at "
               "varied length scales', npj Computational Materials (2024), doi:10.1038/s41524-024-01302-w"),
        adapter="uncertainty_dataset",
        notes=("The OSF zip holds High_Mag_Source_Files.zip and Low_Mag_Source_Files.zip; unzip both and run "
               "prepare_raw_data.py from github.com/lrettenberger/Uncertainty-Aware-Particle-Segmentation-for-"
               "SEM-Data to get the Samples/ High_Confidence_Labels/ Low_Confidence_Labels/ layout (note the "
               "script's remark that confident/less-certain folder names are swapped for the high-mag files). "
               "No license is stated in the sources checked: ask the authors before redistributing."),
    ),
    "ssl-sem-unlabeled": DatasetSpec(
        name="ssl-sem-unlabeled",
        title="Unlabeled SEM particle images of the SSL (ConvNeXt V2 / FCMAE) study",
        description=("About 25,000 unlabeled SEM images of powder particles curated to pretrain ConvNeXt V2 "
                     "encoders (FCMAE and other SSL methods) for particle segmentation at varied length scales."),
        homepage="https://doi.org/10.1038/s41524-025-01802-3",
        license="unknown (no public release found)",
        files=(),  # no public data record (Zenodo/figshare/OSF/KIT) could be found for this set
        paper=("L. Rettenberger, N. J. Szymanski, A. Giunto, O. Dartsi, A. Jain, G. Ceder, V. Hagenmeyer, "
               "M. Reischl, 'Enhancing particle segmentation using unlabeled SEM datasets with self-supervised "
               "learning', npj Computational Materials 11, 289 (2025), doi:10.1038/s41524-025-01802-3"),
        adapter="unlabeled",
        manual=("No public download of this image set is known. Check the paper's data-availability statement or "
                "ask the authors, then copy the images (any folder structure) into data/ssl-sem-unlabeled/ and "
                "run `semkit data fetch ssl-sem-unlabeled` to register them. Any folder of unlabeled SEM images "
                "(e.g. your own) can stand in for it."),
    ),
    "nasa-pmm-benchmark": DatasetSpec(
        name="nasa-pmm-benchmark",
        title="NASA pretrained-microscopy-models segmentation benchmarks (EBC-1..3, Super-1..4)",
        description=("SEM images of environmental barrier coatings (EBC-1/2/3, 3 classes) and Ni-based "
                     "superalloys (Super-1..4, precipitates) with pixel annotations in published train/val/test "
                     "splits (split/ + split_annot/ folders, TIFF)."),
        homepage="https://github.com/nasa/pretrained-microscopy-models",
        license="MIT",
        files=(
            FileSpec(
                url=f"https://github.com/nasa/pretrained-microscopy-models/archive/{_NASA_COMMIT}.zip",
                filename=f"pretrained-microscopy-models-{_NASA_COMMIT[:7]}.zip",
                unpack=True,
                source="GitHub archive of nasa/pretrained-microscopy-models at a pinned commit; "
                       "size/checksum unpublished",
            ),
        ),
        paper=("J. Stuckner, B. Harder, T. M. Smith, 'Microstructure segmentation with deep learning encoders "
               "pre-trained on a large microscopy dataset', npj Computational Materials 8, 200 (2022), "
               "doi:10.1038/s41524-022-00878-5"),
        adapter="semantic_folders",
        paths={"root": f"pretrained-microscopy-models-{_NASA_COMMIT}/benchmark_segmentation_data"},
        notes=("License: MIT as recorded for this benchmark in the project's shared-data notes; the repository "
               "snapshot checked has no top-level LICENSE file (only LICENSES_bunded.txt for bundled code) - "
               "verify before redistributing. Images are 3-channel TIFFs with equal channels."),
    ),
    "metaldam": DatasetSpec(
        name="metaldam",
        title="MetalDAM: metallography of additively manufactured steel (labeled set)",
        description=("42 SEM micrographs (1280 x 895 and 1024 x 703 after cropping the information band) of "
                     "additively manufactured steel with 5-class pixel labels: matrix, austenite, "
                     "martensite/austenite, precipitate, defect."),
        homepage="https://github.com/ari-dasci/OD-MetalDAM",
        license="not stated (cite Luengo et al. 2022)",
        files=(
            # Release asset URL used identically by two independent public loaders; the release page publishes no
            # checksum. The zip unpacks as MetalDAM/{images,labels,coloured_labels}.
            FileSpec(
                url="https://github.com/ari-dasci/OD-MetalDAM/releases/download/1.0/MetalDAM_labeled.zip",
                filename="MetalDAM_labeled.zip",
                unpack=True,
                source="GitHub release 1.0 of ari-dasci/OD-MetalDAM; size/checksum unpublished",
            ),
        ),
        paper=("J. Luengo et al., 'A tutorial on the segmentation of metallographic images: Taxonomy, new MetalDAM "
               "dataset, deep learning-based ensemble model, experimental analysis and challenges', Information "
               "Fusion 78, 232-253 (2022), https://www.sciencedirect.com/science/article/pii/S1566253521001949"),
        adapter="image_mask_folders",
        paths={"root": "MetalDAM", "images": "MetalDAM/images", "labels": "MetalDAM/labels"},
        notes=("Images provided by ArcelorMittal; the repository has no LICENSE file - ask before redistributing. "
               "Labels may be cropped below the image height (information band): crop images to the label size. "
               "An unlabeled set of 164 images is offered on the same release page."),
    ),
    "aachen-heerlen": DatasetSpec(
        name="aachen-heerlen",
        title="Aachen-Heerlen annotated steel microstructure dataset (martensite-austenite islands)",
        description=("1,705 SEM micrographs of bainitic steels with expert polygon annotations of "
                     "martensite-austenite (MA) islands, plus per-image metadata (steel type, heat treatment)."),
        homepage="https://doi.org/10.6084/m9.figshare.c.5185004",
        doi="10.6084/m9.figshare.c.5185004",
        license="CC0 1.0",
        files=(
            # Sizes and MD5s as pinned (from the figshare records) by the downloader of jinzzze/MicroPhaseLab
            # (src/microphaselab/download.py); ndownloader.figshare.com serves non-browser clients.
            FileSpec(url="https://ndownloader.figshare.com/files/25214918", filename="annotations.csv",
                     size_bytes=3_744_453, md5="e56d19f16c82ae23faeeb77577579e1e",
                     source="figshare file 25214918; size/md5 via jinzzze/MicroPhaseLab download.py"),
            FileSpec(url="https://ndownloader.figshare.com/files/25214927", filename="metadata.csv",
                     size_bytes=136_915, md5="f16113f032e6d984faac4836eb0cb0e1",
                     source="figshare file 25214927; size/md5 via jinzzze/MicroPhaseLab download.py"),
            FileSpec(url="https://ndownloader.figshare.com/files/26094926", filename="images.zip",
                     size_bytes=1_223_165_391, md5="09306cad9a754ae5a963d3f5c67f8f30", unpack=True,
                     unpack_to="images",
                     source="figshare file 26094926; size/md5 via jinzzze/MicroPhaseLab download.py"),
        ),
        paper=("D. Iren et al., 'Aachen-Heerlen annotated steel microstructure dataset', Scientific Data 8, 140 "
               "(2021), doi:10.1038/s41597-021-00926-7"),
        adapter="polygon_csv",
        paths={"root": ".", "images": "images", "annotations": "annotations.csv", "metadata": "metadata.csv"},
        notes=("Annotations are polygons in a semicolon-separated CSV; rasterise them to masks before semantic "
               "training. Split by steel type and temperature to avoid leakage between near-identical images."),
    ),
    "uhcs": DatasetSpec(
        name="uhcs",
        title="UHCSDB: ultrahigh carbon steel micrographs (NIST / CMU)",
        description=("961 SEM micrographs of ultrahigh carbon steel with image-level microconstituent labels and "
                     "processing metadata (annealing temperature/time, cooling, magnification) in an SQLite "
                     "database; no pixel labels (those are the separate benchmark hdl:11256/964)."),
        homepage="https://hdl.handle.net/11256/940",
        doi="hdl:11256/940",
        license="CC BY 3.0 US",
        files=(
            # File names from the UHCSDB explorer's setup script (github.com/bdecost/uhcsdb); NIST publishes no
            # checksums. The Materials Data Facility mirror of the same item serves the database file.
            FileSpec(url="https://materialsdata.nist.gov/bitstream/handle/11256/940/microstructures.sqlite",
                     filename="microstructures.sqlite",
                     alt_urls=("https://data.materialsdatafacility.org/legacy/mdr_item_1496_v1/"
                               "microstructures.sqlite",),
                     source="NIST materialsdata handle 11256/940 (file name from bdecost/uhcsdb setup.sh)"),
            FileSpec(url="https://materialsdata.nist.gov/bitstream/handle/11256/940/micrographs.zip",
                     filename="micrographs.zip", unpack=True,
                     source="NIST materialsdata handle 11256/940 (file name from bdecost/uhcsdb setup.sh)"),
        ),
        paper=("B. L. DeCost, M. D. Hecht, T. Francis, B. A. Webler, Y. N. Picard, E. A. Holm, 'UHCSDB: UltraHigh "
               "Carbon Steel Micrograph DataBase', Integrating Materials and Manufacturing Innovation 6, 197-205 "
               "(2017), doi:10.1007/s40192-017-0097-0"),
        adapter="unlabeled",
        paths={"root": ".", "images": "micrographs", "metadata": "microstructures.sqlite"},
        notes=("The bottom 38 rows of the 645 x 522 frames are the instrument banner: crop them. The NIST host "
               "has been reported unreachable at times; the Materials Data Facility mirror "
               "(data.materialsdatafacility.org/legacy/mdr_item_1496_v1/) holds the same item."),
    ),
}


# ---------------------------------------------------------------------------------------------------------------
# Look-up
# ---------------------------------------------------------------------------------------------------------------


def get_dataset(name: str, registry: Mapping[str, DatasetSpec] | None = None) -> DatasetSpec:
    """The spec registered under ``name``.

    Raises:
        UnknownDatasetError: (a KeyError) listing the valid names.
    """
    registry = DATASETS if registry is None else registry
    try:
        return registry[name]
    except KeyError:
        raise UnknownDatasetError(name, sorted(registry)) from None


def list_datasets(registry: Mapping[str, DatasetSpec] | None = None) -> list[DatasetSpec]:
    """All registered specs, sorted by name."""
    registry = DATASETS if registry is None else registry
    return [registry[k] for k in sorted(registry)]


def read_marker(name: str, dest: str | os.PathLike = "data") -> dict | None:
    """The ``.semkit-fetch.json`` record of a finished fetch of ``name`` under ``dest``, or ``None``."""
    path = Path(dest) / name / MARKER
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_fetched(name: str, dest: str | os.PathLike = "data",
               registry: Mapping[str, DatasetSpec] | None = None) -> bool:
    """True when ``dest/name`` holds a finished fetch of the *current* spec (same files and checksums)."""
    marker = read_marker(name, dest)
    return marker is not None and _marker_matches(marker, get_dataset(name, registry))


def format_size(n: int | None) -> str:
    """Human-readable byte count (decimal units), ``"?"`` when unknown."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


# ---------------------------------------------------------------------------------------------------------------
# Fetching
# ---------------------------------------------------------------------------------------------------------------


def fetch(
    name: str,
    dest: str | os.PathLike = "data",
    mirror: str | None = None,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    *,
    registry: Mapping[str, DatasetSpec] | None = None,
    progress: bool = True,
    keep_archives: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download, verify and unpack dataset ``name`` into ``dest/name``; returns that folder.

    Each file is downloaded into ``dest/name/<filename>.part`` (resuming from its current length), checked against
    its pinned size and checksum, renamed to ``<filename>`` and, for archives, extracted (then deleted unless
    ``keep_archives``). A file already present as ``dest/name/<filename>`` (e.g. downloaded by hand) is verified
    instead of downloaded. The marker ``.semkit-fetch.json`` is written last, so an interrupted fetch is never
    mistaken for a finished one.

    Args:
        name: registry key (see ``semkit data list``).
        dest: parent folder of the dataset folders.
        mirror: base of a mirror holding ``<mirror>/<name>/<filename>``: an ``https://``/``file://`` URL or a local
            path. Defaults to the ``SEMKIT_DATA_MIRROR`` environment variable; the registered URLs otherwise.
        force: download and unpack again even when a finished fetch or a downloaded file exists.
        timeout: seconds allowed for connecting and for each read (no retries; alternates tried once each).
        registry: the dictionary to look ``name`` up in (default :data:`DATASETS`).
        progress: show a tqdm progress bar per file.
        keep_archives: keep verified archives next to their unpacked contents.
        log: receives one line per event (default: print to stderr).

    Returns:
        ``Path(dest) / name``.

    Raises:
        UnknownDatasetError: ``name`` is not registered (lists the valid names).
        FetchError: the network is unreachable, the server refused, the transfer broke off (the ``.part`` file is
            kept for resuming), or the dataset has no public download and no data was placed by hand.
        ChecksumError: a file's size or checksum differs from the pinned value (a downloaded ``.part`` is deleted;
            a file placed by hand is left alone and named).
        InputError: an archive is corrupt, not an archive, or has a member escaping the target folder.
    """
    spec = get_dataset(name, registry)
    say = log or _stderr
    target = Path(dest) / spec.name
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None

    marker = read_marker(spec.name, dest)
    if not force and marker is not None and _marker_matches(marker, spec):
        say(f"[data] {spec.name}: already fetched into {target} (use force=True / --force to fetch again)")
        return target

    # From here on the folder is being (re)written: drop an outdated marker first, so that a fetch failing half-way
    # is never taken for a finished one.
    (target / MARKER).unlink(missing_ok=True)
    if not spec.files:
        if target.is_dir() and any(p.name != MARKER for p in target.iterdir()):
            say(f"[data] {spec.name}: no public download; using the data placed by hand in {target}")
            _write_marker(target, spec, [], mirror=None, manual=True)
            return target
        raise FetchError(f"dataset {spec.name!r} has no public download.\n{spec.manual or ''}".rstrip())

    target.mkdir(parents=True, exist_ok=True)
    records = []
    unpacked_downloads: list[Path] = []
    for f in spec.files:
        final = target / f.filename
        part = target / (f.filename + ".part")
        if force:
            final.unlink(missing_ok=True)
            part.unlink(missing_ok=True)
        by_hand = final.is_file()
        used_url = None
        if by_hand:
            say(f"[data] {spec.name}: found {final}; verifying it instead of downloading")
        else:
            urls = [_mirror_url(mirror, spec.name, f.filename)] if mirror else [f.url, *f.alt_urls]
            used_url = _download_first(urls, part, f, spec, timeout, progress, say)
        sha256, md5 = _verify(part if not by_hand else final, f, delete_on_mismatch=not by_hand, say=say)
        if not by_hand:
            part.replace(final)
        record = {"filename": f.filename, "url": used_url or "(placed by hand)", "size_bytes": final.stat().st_size,
                  "sha256": sha256, "md5": md5, "verified": f.pinned, "unpacked_to": None}
        if f.unpack:
            out = target / f.unpack_to if f.unpack_to else target
            members = _safe_extract(final, out, delete_on_error=not by_hand)
            say(f"[data] {spec.name}: unpacked {members} members of {f.filename} into {out}")
            record["unpacked_to"] = str(out.relative_to(target))
            if not by_hand:  # an archive placed by hand is the user's file: always kept
                unpacked_downloads.append(final)
        records.append(record)
    _write_marker(target, spec, records, mirror=mirror, manual=False)
    # Archives go only once everything succeeded: a fetch that fails on a later file finds them again on the next
    # call (verified, not downloaded a second time).
    for archive in [] if keep_archives else unpacked_downloads:
        archive.unlink(missing_ok=True)
    say(f"[data] {spec.name}: done -> {target}")
    return target


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _mirror_url(mirror: str, name: str, filename: str) -> str:
    """``<mirror>/<name>/<filename>``; a mirror without a URL scheme is a local folder."""
    if "://" not in mirror:
        mirror = Path(mirror).expanduser().resolve().as_uri()
    return f"{mirror.rstrip('/')}/{urllib.parse.quote(name)}/{urllib.parse.quote(filename)}"


def _download_first(urls: list[str], part: Path, f: FileSpec, spec: DatasetSpec, timeout: float,
                    progress: bool, say: Callable[[str], None]) -> str:
    """Download from the first URL that works; one attempt per URL, no retry loops."""
    failures: list[tuple[str, str, bool]] = []
    for url in urls:
        try:
            _download(url, part, f, timeout, progress, say)
            return url
        except _TransferError as exc:  # a started transfer broke off: keep the .part and stop here
            raise FetchError(
                f"download of {f.filename} ({spec.name}) from {url} broke off: {exc}.\n"
                f"The partial data is kept at {part}; run the fetch again to resume from "
                f"{format_size(part.stat().st_size if part.exists() else 0)}.") from exc
        except _ConnectError as exc:  # nothing received: try the next URL (each once), then report them all
            failures.append((url, str(exc), exc.offline))
    offline = all(off for _, _, off in failures)
    lines = [f"cannot download {f.filename} of dataset {spec.name!r}:"]
    lines += [f"  {url}\n    -> {reason}" for url, reason, _ in failures]
    if offline:
        lines.append("The network is unreachable from this machine, or the host is down or unknown.")
    lines += [
        "Ways out:",
        f"  - a mirror holding <mirror>/{spec.name}/{f.filename}: semkit data fetch {spec.name} --mirror "
        f"PATH_OR_URL (or set {MIRROR_ENV});",
        f"  - download the file by hand (browser, another machine) from the URL above and save it as "
        f"{part.with_name(f.filename)}, then run `semkit data fetch {spec.name}` again: it is verified and "
        "unpacked like a download.",
    ]
    raise FetchError("\n".join(lines))


class _ConnectError(Exception):
    """No byte was received: unreachable host, refused connection, HTTP error. ``offline`` for network errors."""

    def __init__(self, msg: str, offline: bool):
        super().__init__(msg)
        self.offline = offline


class _TransferError(Exception):
    """The transfer started but did not finish (timeout, dropped connection, short read)."""


def _open(url: str, offset: int, timeout: float) -> tuple[BinaryIO, int | None, int]:
    """Open ``url`` for reading from ``offset``; returns (stream, total size or None, offset actually used)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
        try:
            fh = open(path, "rb")
        except OSError as exc:
            raise _ConnectError(f"cannot read the mirror file {path} ({exc.strerror or exc})", offline=False) from exc
        total = os.fstat(fh.fileno()).st_size
        offset = offset if offset <= total else 0
        fh.seek(offset)
        return fh, total, offset
    if parsed.scheme not in ("http", "https"):
        raise _ConnectError(f"unsupported URL scheme {parsed.scheme!r}", offline=False)
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part already holds every byte: let verification decide
            return _EmptyStream(), offset, offset
        raise _ConnectError(f"the server answered HTTP {exc.code} {exc.reason}", offline=False) from exc
    except urllib.error.URLError as exc:
        raise _connect_error(exc.reason, timeout) from exc
    except TimeoutError as exc:
        raise _ConnectError(f"no answer within {timeout:g} s", offline=True) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _ConnectError(f"connection failed ({exc})", offline=True) from exc
    length = resp.headers.get("Content-Length")
    remaining = int(length) if length and length.isdigit() else None
    if offset and resp.status == 206:
        content_range = resp.headers.get("Content-Range", "")
        start = content_range.split(" ")[-1].split("-")[0] if content_range else str(offset)
        if start.isdigit() and int(start) == offset:
            return resp, None if remaining is None else offset + remaining, offset
        resp.close()
        raise _ConnectError(f"the server resumed at an unexpected position ({content_range!r})", offline=False)
    # 200: the server ignored the Range header, so the body is the whole file; restart the .part from zero.
    return resp, remaining, 0


def _connect_error(reason: object, timeout: float) -> _ConnectError:
    """Word a failed connection by its cause; TLS problems are not an offline machine."""
    if isinstance(reason, ssl.SSLError):
        return _ConnectError(f"TLS/certificate failure ({reason})", offline=False)
    if isinstance(reason, socket.gaierror):
        return _ConnectError(f"the host name cannot be resolved ({reason.strerror or reason})", offline=True)
    if isinstance(reason, TimeoutError):
        return _ConnectError(f"no answer within {timeout:g} s", offline=True)
    if isinstance(reason, OSError):
        return _ConnectError(f"cannot connect ({reason.strerror or reason})", offline=True)
    return _ConnectError(f"connection failed ({reason})", offline=True)


class _EmptyStream:
    """Stands in for a response with no body (HTTP 416 on a complete .part)."""

    def read(self, n: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass

    def __enter__(self) -> _EmptyStream:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _download(url: str, part: Path, f: FileSpec, timeout: float, progress: bool,
              say: Callable[[str], None]) -> None:
    """Append the missing bytes of ``url`` to ``part`` (created when absent)."""
    from tqdm.auto import tqdm

    offset = part.stat().st_size if part.exists() else 0
    if f.size_bytes is not None and offset > f.size_bytes:
        part.unlink()  # longer than the published file: cannot be a prefix of it
        offset = 0
    if f.size_bytes is not None and offset == f.size_bytes:
        say(f"[data] {part.name}: all {f.size_bytes} bytes present; verifying")
        return
    stream, total, offset = _open(url, offset, timeout)
    if offset:
        say(f"[data] resuming {f.filename} at {format_size(offset)}")
    written = offset
    try:
        with stream, open(part, "ab" if offset else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=f.filename,
            disable=not progress, leave=False,
        ) as bar:
            while True:
                chunk = stream.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    except TimeoutError as exc:
        raise _TransferError(f"no data for {timeout:g} s") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _TransferError(str(exc) or type(exc).__name__) from exc
    if total is not None and written < total:
        raise _TransferError(f"connection closed after {written} of {total} bytes")


def _hashes(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _verify(path: Path, f: FileSpec, delete_on_mismatch: bool, say: Callable[[str], None]) -> tuple[str, str]:
    """Check size and checksum of ``path`` against ``f``; returns (sha256, md5)."""
    size = path.stat().st_size
    what = "the downloaded file was deleted; run the fetch again" if delete_on_mismatch else \
        "delete it (or replace it with a good copy) and run the fetch again"
    # A transfer that broke off was reported by _download (and its .part kept); reaching this point means the
    # source sent everything it had, so a wrong size is a wrong file, not an unfinished one.
    if f.size_bytes is not None and size != f.size_bytes:
        if delete_on_mismatch:
            path.unlink()
        raise ChecksumError(f"size {size} bytes differs from the published {f.size_bytes} bytes of {f.filename}; "
                            f"{what}", path)
    sha256, md5 = _hashes(path)
    expected, actual, algo = (f.sha256, sha256, "sha256") if f.sha256 else (f.md5, md5, "md5")
    if expected is not None and actual.lower() != expected.lower():
        if delete_on_mismatch:
            path.unlink()
        raise ChecksumError(f"{algo} {actual} differs from the pinned {expected} of {f.filename}; {what}", path)
    if expected is None:
        say(f"[data] UNVERIFIED {f.filename}: no checksum is pinned in semkit.data.registry; it has "
            f"sha256 {sha256} ({size} bytes) - pin these values to verify future downloads")
    else:
        say(f"[data] verified {f.filename} ({algo} {actual})")
    return sha256, md5


def _safe_extract(archive: Path, out: Path, delete_on_error: bool) -> int:
    """Extract a zip or tar archive into ``out`` after checking that no member escapes it; returns member count.

    Absolute names, ``..`` components, links pointing outside ``out`` and device/FIFO members are refused before
    anything is written (zip-slip / tar-slip).
    """
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()

    def inside(name: str) -> bool:
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
            return False
        return (root / pure).resolve().is_relative_to(root)

    def refuse(member: str, why: str) -> InputError:
        if delete_on_error:
            archive.unlink(missing_ok=True)
        return InputError(f"unsafe archive member {member!r} ({why}); nothing was extracted", archive)

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
                for n in names:
                    if not inside(n):
                        raise refuse(n, "it would be written outside the dataset folder")
                zf.extractall(out)
                return len(names)
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    if not inside(m.name):
                        raise refuse(m.name, "it would be written outside the dataset folder")
                    if m.issym() or m.islnk():
                        link = PurePosixPath(m.name).parent / m.linkname if m.issym() else PurePosixPath(m.linkname)
                        if not inside(str(link)):
                            raise refuse(m.name, f"it links to {m.linkname!r} outside the dataset folder")
                    elif not (m.isfile() or m.isdir()):
                        raise refuse(m.name, "device, FIFO or other special file")
                # The "data" filter (Python >= 3.11.4) repeats these checks inside tarfile and drops
                # permissions/ownership that make no sense for data files.
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tf.extractall(out, **kwargs)
                return len(members)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        if delete_on_error:
            archive.unlink(missing_ok=True)
        raise InputError(f"corrupt archive ({exc})", archive) from exc
    if delete_on_error:
        archive.unlink(missing_ok=True)
    raise InputError("not a zip or tar archive (an HTML error page instead of the file?)", archive)


def _marker_matches(marker: dict, spec: DatasetSpec) -> bool:
    """Does a marker describe a fetch of the current spec (same file names and pinned checksums)?"""
    want = [[f.filename, f.sha256, f.md5] for f in spec.files]
    have = [[f.get("filename"), f.get("sha256"), f.get("md5")] for f in marker.get("spec", {}).get("files", [])]
    return marker.get("name") == spec.name and want == have


def _write_marker(target: Path, spec: DatasetSpec, records: list[dict], mirror: str | None, manual: bool) -> None:
    from semkit import __version__

    payload = {
        "name": spec.name,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "semkit_version": __version__,
        "mirror": mirror,
        "manual": manual,
        "files": records,
        "spec": spec.to_dict(),
    }
    tmp = target / (MARKER + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=list) + "\n")
    tmp.replace(target / MARKER)


__all__ = [
    "ADAPTERS",
    "DATASETS",
    "MARKER",
    "MIRROR_ENV",
    "ChecksumError",
    "DatasetSpec",
    "FetchError",
    "FileSpec",
    "UnknownDatasetError",
    "fetch",
    "format_size",
    "get_dataset",
    "is_fetched",
    "list_datasets",
    "read_marker",
]
