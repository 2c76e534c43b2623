"""``semkit stem-box`` through click's test runner."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import tifffile
from click.testing import CliRunner
from PIL import Image

from semkit.cli.stem import commands, stem_box
from semkit.stem import BoxSettings, box_image, make_haadf_image


def _images(tmp_path):
    a = make_haadf_image(256, 2, layout="janus", seed=1)
    b = make_haadf_image(512, 3, seed=2)
    pa, pb = tmp_path / "a.png", tmp_path / "b.tif"
    Image.fromarray(np.rint(a.image * 255).astype(np.uint8)).save(pa)
    # ImageJ-style calibration in nm so the physical columns are filled.
    tifffile.imwrite(pb, np.rint(b.image * 65535).astype(np.uint16), imagej=True,
                     resolution=(1 / 0.25, 1 / 0.25), metadata={"unit": "nm"})
    return pa, pb


def test_stem_box_writes_csv_json_and_overlay(tmp_path):
    pa, pb = _images(tmp_path)
    counts = tmp_path / "counts.csv"
    counts.write_text("file,n_elements\nb.tif,3\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(stem_box, [str(pa), str(pb), "--elements", "2", "--counts", str(counts),
                                        "--algorithm", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert commands == [stem_box]
    for stem in ("a", "b"):
        assert (out / f"{stem}_boxes.png").stat().st_size > 5_000
    csv = pd.read_csv(out / "b_boxes.csv")
    payload = json.loads((out / "b_boxes.json").read_text())
    assert payload["n_elements"] == 3 and payload["algorithm"] == 1 and payload["pixel_size_nm"] == 0.25
    np.testing.assert_allclose(csv["size_nm"], csv["size"] * 0.25)
    a_json = json.loads((out / "a_boxes.json").read_text())
    assert a_json["n_elements"] == 2 and np.isnan(pd.read_csv(out / "a_boxes.csv")["x_nm"]).all()
    # Same boxes as the API on the same (8-bit) pixels.
    img = np.asarray(Image.open(pa), dtype=np.float32) / 255
    assert a_json["n_boxes"] == box_image(img, 2, BoxSettings(algorithm=1)).n_boxes
    assert json.loads((out / "settings.json").read_text())["algorithm"] == 1
    assert "a.png:" in res.output and "boxes" in res.output


def test_stem_box_bad_input_messages(tmp_path):
    pa, _ = _images(tmp_path)
    runner = CliRunner()
    res = runner.invoke(stem_box, [str(pa), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "no element count" in res.output and "a.png" in res.output
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(wide)
    res = runner.invoke(stem_box, [str(wide), "-n", "2", "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "square" in res.output and "wide.png" in res.output
    res = runner.invoke(stem_box, [str(tmp_path / "missing.tif"), "-n", "2", "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "does not exist" in res.output
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(flat)
    res = runner.invoke(stem_box, [str(flat), "-n", "1", "--out", str(tmp_path / "o"), "--no-figure"])
    assert res.exit_code == 0 and "0 boxes" in res.output and "constant" in res.output
    assert len(pd.read_csv(tmp_path / "o" / "flat_boxes.csv")) == 0
    res = runner.invoke(stem_box, [str(pa), "-n", "2", "--algorithm", "3", "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
