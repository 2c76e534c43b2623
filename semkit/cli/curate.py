"""``semkit curate FOLDER... --out DIR``: manifest, skipped table, splits, ablation subsets and optional tiles."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import pandas as pd

from semkit.data import curation as cur
from semkit.errors import InputError


def _fractions(text: str, n: int, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise click.BadParameter(
            f"expected {n} comma-separated numbers, got {text!r}", param_hint=option
        ) from exc
    if len(values) != n:
        raise click.BadParameter(f"expected {n} comma-separated numbers, got {text!r}", param_hint=option)
    return values


def _databar(text: str) -> bool | int:
    if text == "auto":
        return True
    if text == "none":
        return False
    try:
        rows = int(text)
    except ValueError as exc:
        raise click.BadParameter(
            f"use auto, none or a number of rows, got {text!r}", param_hint="--databar"
        ) from exc
    if rows < 0:
        raise click.BadParameter(f"rows must be >= 0, got {rows}", param_hint="--databar")
    return rows


@click.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder for manifest, skipped table, splits and tiles (never inside the inputs).",
)
@click.option(
    "--labels-layout",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "none", *cur.LABEL_LAYOUTS]),
    help="auto: scan FOLDERs as given, labels found where any known layout keeps them; none: treat all "
    "images as unlabeled; a layout name: each FOLDER is a dataset root whose image folder is "
    "scanned and labeled through that layout only.",
)
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Scan sub-folders.")
@click.option(
    "--databar",
    default="auto",
    show_default=True,
    help="Databar handling: auto (detect), none (keep all rows) or a number of rows to crop.",
)
@click.option(
    "--pixel-size-nm",
    type=float,
    default=None,
    help="Pixel size for every image, overriding the metadata (uncalibrated instruments).",
)
@click.option("--require-pixel-size", is_flag=True, help="Skip images without a pixel size.")
@click.option(
    "--fov-threshold-um",
    type=float,
    default=cur.FOV_THRESHOLD_UM,
    show_default=True,
    help="Field of view (µm) separating low (>=) from high (<) magnification.",
)
@click.option("--fractions", default="0.65,0.15,0.20", show_default=True, help="train,val,test fractions.")
@click.option("--ssl-fractions", default="0.8,0.2", show_default=True, help="ssl_train,ssl_eval fractions.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the hash order of all splits.")
@click.option(
    "--tile",
    type=int,
    default=0,
    show_default=True,
    help="Write SSL tiles of this size (pixels) for the pretraining pool; 0 = no tiles.",
)
@click.option("--stride", type=int, default=None, help="Tile stride (default: the tile size, no overlap).")
@click.option(
    "--edge",
    type=click.Choice(list(cur.EDGE_POLICIES)),
    default="shift",
    show_default=True,
    help="What to do with the remainder a whole tile does not fit.",
)
@click.option("--workers", type=int, default=1, show_default=True, help="Processes reading images.")
def curate(
    folders,
    out_dir,
    labels_layout,
    recursive,
    databar,
    pixel_size_nm,
    require_pixel_size,
    fov_threshold_um,
    fractions,
    ssl_fractions,
    seed,
    tile,
    stride,
    edge,
    workers,
) -> None:
    """Scan image FOLDERs into a curation manifest with splits (see notebooks/01_dataset_curation.ipynb).

    Writes to --out: settings.json (these options), manifest.parquet/.csv (one row per usable image), skipped.csv
    (files not used, with the reason), splits.csv (train/val/test for labeled images, ssl_train/ssl_eval for the pretraining pool),
    ablation_subsets.json (nested subsets of ssl_train) and, with --tile, tiles/ with tiles/tiles.parquet.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(out_dir)
    labeled_fr = _fractions(fractions, 3, "--fractions")
    ssl_fr = _fractions(ssl_fractions, 2, "--ssl-fractions")
    roots = [Path(f) for f in folders]
    for root in roots:
        if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
            raise click.BadParameter(
                f"--out {out} lies inside input folder {root}; inputs are never written to",
                param_hint="--out",
            )
    scan_dirs = roots
    if labels_layout not in ("auto", "none"):
        image_dir = cur.LABEL_LAYOUTS[labels_layout][0]
        scan_dirs = [r / image_dir for r in roots]
        missing = [str(d) for d in scan_dirs if not d.is_dir()]
        if missing:
            raise click.BadParameter(
                f"layout {labels_layout!r} expects an {image_dir}/ folder: missing {', '.join(missing)}",
                param_hint="FOLDERS",
            )
    try:
        manifest, skipped = cur.scan_folders(
            scan_dirs,
            recursive=recursive,
            crop_databar=_databar(databar),
            pixel_size_nm=pixel_size_nm,
            fov_threshold_um=fov_threshold_um,
            require_pixel_size=require_pixel_size,
            workers=workers,
        )
        if labels_layout == "none":
            manifest = manifest.assign(label_path=None, label_layout=None)
        else:
            manifest = cur.find_labels(manifest, None if labels_layout == "auto" else [labels_layout])
            if labels_layout != "auto" and len(manifest) and manifest["label_path"].isna().all():
                click.echo(
                    f"warning: layout {labels_layout!r} found no label files; all images are unlabeled",
                    err=True,
                )
        manifest = cur.assign_splits(manifest, labeled_fr, ssl_fr, seed=seed)
    except InputError as exc:
        raise click.ClickException(str(exc)) from exc
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "folders": [str(f) for f in folders],
        "labels_layout": labels_layout,
        "recursive": recursive,
        "databar": databar,
        "pixel_size_nm": pixel_size_nm,
        "require_pixel_size": require_pixel_size,
        "fov_threshold_um": fov_threshold_um,
        "fractions": labeled_fr,
        "ssl_fractions": ssl_fr,
        "seed": seed,
        "tile": tile,
        "stride": stride,
        "edge": edge,
    }
    (out / "settings.json").write_text(json.dumps(settings, indent=2))  # how these outputs were made
    cur.save_manifest(manifest, out / "manifest.parquet")
    split_cols = [
        c
        for c in ("name", "relative_path", "path", "magnification_bucket", "label_path", "split", "ssl_split")
        if c in manifest
    ]
    manifest[split_cols].to_csv(out / "splits.csv", index=False)
    in_train = manifest["ssl_split"] == "ssl_train"
    # Paths relative to their input folder identify images on any machine, unless two folders share one.
    ssl_train = manifest.loc[in_train, "relative_path"].tolist()
    if len(set(ssl_train)) != len(ssl_train):
        ssl_train = manifest.loc[in_train, "path"].tolist()
    if ssl_train:
        subsets = cur.ablation_subsets(ssl_train, seed=seed)
        (out / "ablation_subsets.json").write_text(
            json.dumps({str(k): v for k, v in subsets.items()}, indent=1)
        )
    n_tiles = 0
    if tile > 0:
        pool = manifest[manifest["ssl_split"].notna()]
        tiles, tile_skips = cur.write_tiles(pool, out / "tiles", tile=tile, stride=stride, edge=edge)
        n_tiles = len(tiles)
        if not tile_skips.empty:
            skipped = tile_skips if skipped.empty else pd.concat([skipped, tile_skips], ignore_index=True)
    skipped.to_csv(out / "skipped.csv", index=False)

    counts = manifest["split"].value_counts().to_dict()
    ssl_counts = manifest["ssl_split"].value_counts().to_dict()
    click.echo(
        f"{len(manifest)} images, {len(skipped)} skipped (see {out / 'skipped.csv'}), "
        f"{int((manifest['duplicate_group'] >= 0).sum())} in duplicate groups, "
        f"{int(manifest['near_empty'].sum())} near-empty"
    )
    click.echo(
        "labeled: "
        + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("train", "val", "test"))
        + "; pretraining pool: "
        + ", ".join(f"{k} {ssl_counts.get(k, 0)}" for k in ("ssl_train", "ssl_eval"))
        + (f"; {n_tiles} tiles" if tile > 0 else "")
    )
    if manifest.empty:
        raise click.ClickException("no usable images found; see skipped.csv for the reasons")


commands = [curate]
