"""``semkit predict`` on a folder with good, corrupt and non-image files; PyTorch and ONNX models."""

from __future__ import annotations

import numpy as np
import pandas as pd
from click.testing import CliRunner
from inference_helpers import gray_image
from PIL import Image

from semkit.cli.predict import output_stems, predict
from semkit.data.io import load_labels


def make_folder(root):
    root.mkdir()
    for i in (1, 2):
        Image.fromarray(np.rint(gray_image((64, 80), seed=i) * 255).astype(np.uint8)).save(root / f"img{i}.png")
    (root / "broken.tif").write_bytes(b"II*\x00 this is not a TIFF")
    (root / "notes.txt").write_text("acquisition notes")
    return root


def test_corrupt_file_is_reported_and_fails_the_run(tmp_path, tiny_model_dir):
    images = make_folder(tmp_path / "images")
    out = tmp_path / "out"
    result = CliRunner().invoke(predict, ["--model", str(tiny_model_dir), "--images", str(images),
                                          "--out", str(out), "--pixel-size", "5"])
    assert result.exit_code == 1, result.output
    assert "ignored 1 non-image file(s): notes.txt" in result.output
    assert "2 of 3 images done" in result.output and "broken.tif" in result.output
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["status"]) == ["failed", "ok", "ok"]  # list_images order: broken, img1, img2
    assert "broken.tif" in summary.loc[0, "error"]
    for stem in ("img1", "img2"):
        for suffix in ("_labels.tif", "_particles.csv", "_coco.json", "_overlay.png", "_rois.zip"):
            assert (out / f"{stem}{suffix}").is_file()
        labels = load_labels(out / f"{stem}_labels.tif")
        csv = pd.read_csv(out / f"{stem}_particles.csv")
        assert len(csv) == labels.max() == summary.set_index("output").loc[stem, "particles"] > 0
        assert np.allclose(csv["area_nm2"], csv["area_px"] * 25)  # --pixel-size 5 for uncalibrated PNGs
    assert not (out / "broken_labels.tif").exists()


def test_onnx_model_gives_the_same_label_map(tmp_path, tiny_model_dir, tiny_onnx):
    image = tmp_path / "one.png"
    Image.fromarray(np.rint(gray_image((64, 80), seed=1) * 255).astype(np.uint8)).save(image)
    runner = CliRunner()
    for model, out in ((tiny_model_dir, "torch"), (tiny_onnx, "onnx")):
        result = runner.invoke(predict, ["--model", str(model), "--images", str(image),
                                         "--out", str(tmp_path / out), "--tile", "48", "--overlap", "16"])
        assert result.exit_code == 0, result.output
    a, b = (load_labels(tmp_path / o / "one_labels.tif") for o in ("torch", "onnx"))
    assert a.max() > 0 and np.mean(a != b) < 1e-3


def test_bad_model_and_options(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    result = CliRunner().invoke(predict, ["--model", str(tmp_path), "--images", str(tmp_path / "x.png"),
                                          "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "not a model" in result.output
    result = CliRunner().invoke(predict, ["--model", str(tmp_path), "--images", str(tmp_path),
                                          "--out", str(tmp_path / "o"), "--tile", "64", "--overlap", "64"])
    assert result.exit_code == 2 and "overlap 64 must be smaller than the tile 64" in result.output
    assert output_stems([tmp_path / "a" / "s.tif", tmp_path / "b" / "s.tif", tmp_path / "t.png"]) == [
        "s", "s-2", "t"]
