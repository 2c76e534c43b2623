"""Collecting a batch into one table and rendering its report, on tiny fake notebooks with known results."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
from batch_helpers import study_spec, toy_spec
from click.testing import CliRunner

from semkit.batch import collect, load_spec, plan_batch, render_report, run_batch, study_table
from semkit.batch.collect import flatten
from semkit.cli.batch import batch


@pytest.fixture(scope="module")
def toy_batch(tmp_path_factory):
    """The 2 x 2 toy grid with run (2, "a") failing, executed once."""
    tmp = tmp_path_factory.mktemp("toy")
    path = toy_spec(tmp)
    (tmp / "fail").mkdir()
    (tmp / "fail" / "2-a").touch()
    run_batch(path, tmp / "runs", tmp / "figures", workers=2, progress=False)
    return tmp, path


@pytest.fixture(scope="module")
def study_batch(tmp_path_factory):
    """Fake pretraining (2 sizes x 2 seeds), fine-tuning of each encoder, and baselines on two backbones."""
    tmp = tmp_path_factory.mktemp("study")
    path = study_spec(tmp)
    summary = run_batch(path, tmp / "runs", tmp / "figures", workers=2, progress=False)
    assert summary.ok and len(summary.done) == 16
    return tmp, path


def test_flatten():
    assert flatten({"a": 1, "b": {"c": 2, "d": {"e": None}}, "f": [1, "x"], "g": {}}) == {
        "a": 1, "b.c": 2, "b.d.e": None, "f": '[1, "x"]', "g": "{}"}


def test_collect_one_row_per_run_with_parameters_and_metrics(toy_batch):
    tmp, path = toy_batch
    table = collect("tiny", tmp / "runs")
    assert len(table) == 4
    runs = {r.run_id: r for r in plan_batch(load_spec(path), tmp / "runs" / "tiny")}
    assert set(table["run_id"]) == set(runs)
    for row in table.itertuples():
        assert (row.x, row.y) == (runs[row.run_id].parameters["x"], runs[row.run_id].parameters["y"])
    assert sorted(zip(table["x"], table["y"], strict=True)) == [(1, "a"), (1, "bb"), (2, "a"), (2, "bb")]
    assert table["fail_dir"].eq(str(tmp / "fail")).all()
    assert table["hold_file"].eq("").all()  # the notebook's default, though the spec does not set it
    assert "output_dir" not in table.columns and "figures_dir" not in table.columns
    assert (table["batch"] == "tiny").all() and (table["stage"] == "toy").all()
    assert (table["notebook"] == "toy").all()
    done = table[table["state"] == "done"]
    failed = table[table["state"] == "failed"]
    assert len(done) == 3 and failed[["x", "y"]].values.tolist() == [[2, "a"]]
    assert failed["error"].item() == "RuntimeError: run x=2 y=a was made to fail"
    np.testing.assert_array_equal(done["score"], 10 * done["x"] + done["y"].str.len())
    np.testing.assert_allclose(done["nested.half"], done["x"] / 2)
    assert done["tags"].map(json.loads).tolist() == [[x, y] for x, y in zip(done["x"], done["y"], strict=True)]
    assert failed["score"].isna().all() and (done["wall_s"] > 0).all()
    # the files hold the same table
    folder = tmp / "runs" / "tiny"
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "results.parquet"), table)
    csv = pd.read_csv(folder / "results.csv")
    assert csv.shape == table.shape and csv["score"].sum() == table["score"].sum()


def test_cli_collect_and_report(toy_batch):
    tmp, _ = toy_batch
    args = ["--runs-root", str(tmp / "runs")]
    result = CliRunner().invoke(batch, ["collect", "tiny", *args])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("4 runs x ") and "results.parquet" in result.output
    result = CliRunner().invoke(batch, ["report", "tiny", *args, "--figures-root", str(tmp / "figures")])
    assert result.exit_code == 0, result.output
    page = (tmp / "figures" / "tiny" / "report.html").read_text()
    # no fine-tuning runs here: the study sections say what they need, the run tables render
    assert "Needs fine-tuning runs (test_aji_plus) of at least two backbones." in page
    assert "Needs fine-tuning runs from encoders pretrained on at least two set sizes." in page
    assert "No run reports an mIoU metric" in page
    assert "RuntimeError: run x=2 y=a was made to fail" in page
    assert "<h3>toy (toy)</h3>" in page and "nested.half" in page
    missing = CliRunner().invoke(batch, ["collect", "never-ran", *args])
    assert missing.exit_code != 0 and "run the batch first" in missing.output


def test_study_table_values(study_batch):
    tmp, _ = study_batch
    results = collect("study", tmp / "runs")
    finetune = results[results["stage"] == "finetune"]
    # each fine-tuning row carries the parameters and metrics of the pretraining run it used
    assert (finetune["pretrain.n_train_images"] == (100 * finetune["pretrain.subset_fraction"]).round()).all()
    assert (finetune["pretrain.seed"] == finetune["seed"]).all()
    assert (finetune["pretrain.method"] == "fcmae").all()
    study = study_table(results).set_index("run_id")
    assert len(study) == 12
    for _, row in results[results["stage"] != "pretrain"].iterrows():
        s = study.loc[row.run_id]
        if row.stage == "finetune":
            images = round(100 * row["pretrain.subset_fraction"])
            expected = 0.5 + 0.01 * row.seed + 0.1 + 0.001 * images
            assert (s.pretraining, s.pretrain_images, s.label) == ("fcmae", images, f"fcmae · {images} images")
        else:
            expected = 0.5 + 0.01 * row.seed + (0.05 if row.init == "imagenet" else 0)
            expected += 0.05 if row.backbone == "convnextv2_pico" else 0
            assert (s.pretraining, s.pretrain_images) == ({"random": "none", "imagenet": "imagenet"}[row.init], 0)
        assert s.aji_plus == pytest.approx(expected)
    assert study.groupby("backbone")["backbone_params_m"].first().to_dict() == {"convnextv2_atto": 3.39,
                                                                                "convnextv2_pico": 8.55}


def test_report_renders_every_section(study_batch):
    tmp, _ = study_batch
    path = render_report("study", tmp / "runs", tmp / "figures")
    assert path == tmp / "figures" / "study" / "report.html"
    page = path.read_text()
    for title in ("Runs", "AJI+ against backbone size, per pretraining method", "Error reduction rate",
                  "AJI+ against pretraining-set size", "Per-image comparison", "Semantic segmentation: mIoU",
                  "Results by stage"):
        assert f"<h2>{title}" in page
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)">', page)
    names = [alt for _, alt in images]
    assert names == ["aji_vs_backbone_size", "err_matrix_pretraining", "err_matrix_label", "aji_vs_pretraining_size",
                     "aji_per_image", "paired_comparison"]
    for data, name in images:
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG") and png == (tmp / "figures" / "study" / f"{name}.png").read_bytes()
    # ERR of fcmae over no pretraining from the mean AJI+ of each (hand-computed from the fake notebooks)
    aji = {"none": 0.5 + 0.005 + 0.025, "fcmae": 0.5 + 0.005 + 0.1 + 0.001 * 50}
    err = ((1 - aji["none"]) - (1 - aji["fcmae"])) / (1 - aji["none"]) * 100
    section = page[page.index("<h3>pretraining methods</h3>"):page.index("<h3>configurations</h3>")]
    header = re.findall(r"<th>([^<]+)</th>", section)
    rows = {cells[0]: cells[1:] for cells in (re.findall(r"<td>([^<]*)</td>", r)
                                              for r in re.findall(r"<tr>(.*?)</tr>", section, re.S)) if cells}
    assert header == ["baseline", "fcmae", "none", "imagenet"]
    assert float(rows["none"][0]) == pytest.approx(err, rel=1e-3)  # printed with 4 significant digits
    assert "No run reports an mIoU metric" in page
    per_image = pd.read_parquet(tmp / "runs" / "study" / "per_image.parquet")
    assert len(per_image) == 12 * 2 and set(per_image["source"]) == {"finetune/seed_0/test_per_image.csv",
                                                                      "finetune/seed_1/test_per_image.csv"}
