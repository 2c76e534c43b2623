"""Comparing fine-tuning folders: mean ± std over seeds, ERR, the confidence table, the command, partial runs."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from semkit.cli.train import compare
from semkit.errors import InputError
from semkit.train import FinetuneConfig, finetune
from semkit.train.compare import confidence_table, load_runs, markdown_table, summary_table

# the module, not the function semkit.train re-exports under the same name
finetune_module = importlib.import_module("semkit.train.finetune")


def _fake_run(folder: Path, seeds: dict[int, float], particles: pd.DataFrame | None = None) -> Path:
    """A fine-tuning folder as semkit finetune writes it, with the given test AJI+ per seed."""
    repeats = []
    for seed, aji in seeds.items():
        run_dir = folder / f"seed_{seed}"
        run_dir.mkdir(parents=True)
        pd.DataFrame({"image": ["a", "b"], "aji_plus": [aji - 0.1, aji + 0.1]}).to_csv(
            run_dir / "test_per_image.csv", index=False)
        if particles is not None:
            particles.to_csv(run_dir / "test_particles.csv", index=False)
        repeats.append({"seed": seed, "run_dir": str(run_dir), "train_seconds": 60.0 * (seed + 1),
                        "test": {"aji_plus": aji, "correct": 10 + seed, "missed": 5, "false_positive": 2,
                                 "ap": 0.1, "ap50": 0.2}})
    (folder / "results.json").write_text(json.dumps({"repeats": repeats}))
    return folder


def test_summary_is_mean_and_std_over_seeds_with_err_against_the_reference(tmp_path):
    runs = {"random": _fake_run(tmp_path / "r", {0: 0.4, 1: 0.5}), "ssl": _fake_run(tmp_path / "s", {0: 0.6})}
    summary = summary_table(load_runs(runs), reference="random")
    assert summary.index.tolist() == ["random", "ssl"]
    assert summary.loc["random", "aji_plus_mean"] == pytest.approx(0.45)
    assert summary.loc["random", "aji_plus_std"] == pytest.approx(np.std([0.4, 0.5], ddof=1))
    assert np.isnan(summary.loc["ssl", "aji_plus_std"])  # one seed: no spread
    # ERR = (e_ref - e) / e_ref with e = 1 - AJI+: (0.55 - 0.40) / 0.55
    assert summary.loc["ssl", "err_percent"] == pytest.approx(100 * 0.15 / 0.55)
    assert summary.loc["random", "correct_mean"] == pytest.approx(10.5)
    assert summary.loc["random", "train_minutes"] == "1–2"
    table = markdown_table(summary)
    assert "| random | 0.450 ± 0.071 | 0.400, 0.500 | 10 / 5 / 2 | 0.100 (0.200) | 2 | 1–2 | — |" in table
    assert "| ssl | 0.600 | 0.600 |" in table and "+27.3 %" in table
    with pytest.raises(InputError, match="reference 'none' is not one of the compared runs: random, ssl"):
        summary_table(load_runs(runs), reference="none")


def test_confidence_table_on_a_hand_computed_case(tmp_path):
    # matched (correct) particles: certain 0.9, 0.8; uncertain 0.3, 0.85 -> 3 of 4 certain/uncertain pairs
    # ordered right: AUROC 0.75; the false positive (0.2) is below every correct one: AUROC 1
    particles = pd.DataFrame({"status": ["correct"] * 4 + ["false_positive"],
                              "certain": [True, True, False, False, np.nan],
                              "confidence": [0.9, 0.8, 0.3, 0.85, 0.2]})
    table = confidence_table(load_runs({"head": _fake_run(tmp_path / "h", {0: 0.5}, particles)}))
    row = table.iloc[0]
    assert (row["matched"], row["certain"], row["uncertain"]) == (4, 2, 2)
    assert row["auroc_certain"] == pytest.approx(0.75)
    assert row["auroc_correct"] == pytest.approx(1.0)
    assert row["mean_conf_certain"] == pytest.approx(0.85) and row["mean_conf_uncertain"] == pytest.approx(0.575)
    # 10 right-closed bins: 0.9 and 0.85 share (0.8, 0.9] (rate 1/2, mean 0.875: gap 0.375 for 2 particles),
    # 0.8 alone (gap 0.2), 0.3 alone (gap 0.3): ECE = (2 x 0.375 + 0.2 + 0.3) / 4
    assert row["ece_certain"] == pytest.approx((2 * 0.375 + 0.2 + 0.3) / 4)
    plain = confidence_table(load_runs({"plain": _fake_run(tmp_path / "p", {0: 0.5})}))
    assert plain.empty


def test_compare_command_prints_the_table_and_draws_figures(tmp_path):
    particles = pd.DataFrame({"status": ["correct", "correct", "false_positive"], "certain": [True, False, np.nan],
                              "confidence": [0.9, 0.4, 0.1]})
    a = _fake_run(tmp_path / "a", {0: 0.3, 1: 0.35}, particles)
    b = _fake_run(tmp_path / "b", {0: 0.5, 1: 0.45})
    result = CliRunner().invoke(compare, [f"base={a}", f"new={b}", "--figures", str(tmp_path / "fig")])
    assert result.exit_code == 0, result.output
    assert "| base | 0.325 ± 0.035 |" in result.output and "| new | 0.475 ± 0.035 |" in result.output
    assert "auroc_certain" in result.output
    for name in ("aji_by_seed.png", "aji_per_image.png", "confidence_histograms.png"):
        assert (tmp_path / "fig" / name).stat().st_size > 1000, name
    bad = CliRunner().invoke(compare, ["justafolder"])
    assert bad.exit_code != 0 and "expected NAME=FOLDER" in bad.output
    missing = CliRunner().invoke(compare, [f"x={tmp_path / 'nothing'}"])
    assert missing.exit_code != 0 and "no results.json and no finished seed" in missing.output
    # a name given twice pools the seeds of both folders; the same seed twice is an error
    c = _fake_run(tmp_path / "c", {2: 0.4})
    pooled = CliRunner().invoke(compare, [f"base={a}", f"base={c}"])
    assert pooled.exit_code == 0 and "| base | 0.350 ± 0.050 | 0.300, 0.350, 0.400 |" in pooled.output
    twice = CliRunner().invoke(compare, [f"base={a}", f"base={a}"])
    assert twice.exit_code != 0 and "seed 0 of 'base' appears in two folders" in twice.output


def test_folders_without_results_json_are_read_from_their_seed_tables(tmp_path):
    run_dir = tmp_path / "killed" / "seed_1"
    run_dir.mkdir(parents=True)
    pd.DataFrame({"image": ["a", "b"], "aji_plus": [0.2, 0.4], "correct": [3, 4], "missed": [1, 2],
                  "false_positive": [0, 5]}).to_csv(run_dir / "test_per_image.csv", index=False)
    seeds = load_runs({"killed": tmp_path / "killed"}).seeds
    row = seeds.iloc[0]
    assert (row["seed"], row["aji_plus"], row["correct"], row["missed"], row["false_positive"]) == (
        1, pytest.approx(0.3), 7, 3, 5)
    assert np.isnan(row["ap"])


def test_a_notebook_run_folder_stands_for_its_finetune_subfolder(tmp_path):
    # batch runs of notebook 03 write <run>/finetune/results.json; the run folder itself is accepted
    for seed, aji in ((0, 0.4), (1, 0.5)):
        _fake_run(tmp_path / f"03_finetuning-{seed}" / "finetune", {seed: aji})
    seeds = load_runs({"fcmae": [tmp_path / "03_finetuning-0", tmp_path / "03_finetuning-1"]}).seeds
    assert seeds["seed"].tolist() == [0, 1]
    assert seeds["aji_plus"].tolist() == [0.4, 0.5]
    assert seeds["run_dir"].tolist() == [str(tmp_path / f"03_finetuning-{s}" / "finetune" / f"seed_{s}")
                                         for s in (0, 1)]
    with pytest.raises(InputError, match="has the run finished"):
        load_runs({"empty": tmp_path / "03_finetuning-empty"})


def test_an_interrupted_multi_seed_run_keeps_its_finished_seeds(tmp_path, monkeypatch):
    # the second seed fails: results.json still holds the first one, marked 1 of 2
    runner = finetune_module.RUNNERS["unet"]

    def second_seed_fails(config, splits, seed, run_dir):
        if seed == 1:
            raise RuntimeError("killed")
        return runner(config, splits, seed, run_dir)

    monkeypatch.setitem(finetune_module.RUNNERS, "unet", second_seed_fails)
    torch.set_num_threads(1)
    cfg = FinetuneConfig(synthetic_images=5, synthetic_size=64, crop_size=64, crops_per_image=2, batch_size=2,
                         threshold_grid="quick", enable_progress_bar=False, accelerator="cpu", num_threads=1,
                         model="unet", epochs=1, repeats=2, seed=0, save_predictions=False,
                         output_dir=str(tmp_path / "u"))
    with pytest.raises(RuntimeError, match="killed"):
        finetune(cfg)
    results = json.loads((tmp_path / "u" / "results.json").read_text())
    assert (results["repeats_done"], results["repeats_planned"]) == (1, 2)
    assert [r["seed"] for r in results["repeats"]] == [0]
    comparison = load_runs({"unet": tmp_path / "u"})
    assert comparison.seeds["aji_plus"].tolist() == [pytest.approx(results["repeats"][0]["test"]["aji_plus"])]


def _semantic_result(folder: Path, split: str, miou: float, seed: int = 0, encoder: str = "random") -> Path:
    """A split folder as finetune_semantic writes it (results.json holds the split and its test scores)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({
        "split": split, "encoder": encoder, "best_val_miou": miou + 0.05, "test_miou_dataset_level": miou,
        "test_miou_image_averaged": miou - 0.01, "test_iou_class_0": 2 * miou, "test_iou_class_1": 0.0,
        "config": {"seed": seed, "backbone": "resnet50"}}))
    return folder


def test_semantic_folders_give_miou_per_split_over_seeds(tmp_path):
    from semkit.train.compare import load_semantic_runs, semantic_markdown_table, semantic_summary

    # an encoder's downstream folder: one subfolder per split, two seeds on EBC1 in separate folders
    for split, miou in (("EBC1", 0.4), ("EBC2", 0.2)):
        _semantic_result(tmp_path / "matssl" / split, split, miou, encoder="matssl.pt")
    _semantic_result(tmp_path / "matssl_seed1" / "EBC1", "EBC1", 0.5, seed=1)
    # a baseline whose splits ran in two places, pooled under one name; a lone split folder works too
    _semantic_result(tmp_path / "random_a" / "EBC1", "EBC1", 0.3)
    _semantic_result(tmp_path / "random_b", "EBC2", 0.1)
    table = load_semantic_runs({"matssl": [tmp_path / "matssl", tmp_path / "matssl_seed1"],
                                "random": [tmp_path / "random_a", tmp_path / "random_b"]})
    assert len(table) == 5 and set(table["split"]) == {"EBC1", "EBC2"}
    assert table.loc[table["name"] == "matssl", "encoder"].iloc[0] == "matssl.pt"
    summary = semantic_summary(table)
    assert summary.index.tolist() == ["matssl", "random"]
    assert summary.loc["matssl", "EBC1_mean"] == pytest.approx(0.45)
    assert summary.loc["matssl", "EBC1_std"] == pytest.approx(np.std([0.4, 0.5], ddof=1))
    assert np.isnan(summary.loc["matssl", "EBC2_std"]) and summary.loc["matssl", "EBC2_n"] == 1
    assert summary.loc["matssl", "mean_over_splits"] == pytest.approx((0.45 + 0.2) / 2)
    assert summary.loc["random", "mean_over_splits"] == pytest.approx(0.2)
    markdown = semantic_markdown_table(summary)
    assert "| configuration | EBC1 test mIoU | EBC2 test mIoU | mean over splits | seeds |" in markdown
    assert "| matssl | 0.450 ± 0.071 | 0.200 | 0.325 | 2/1 |" in markdown
    assert "| random | 0.300 | 0.100 | 0.200 | 1/1 |" in markdown
    # a missing split shows as a dash and leaves the mean over splits undefined
    partial = semantic_summary(load_semantic_runs({"matssl": tmp_path / "matssl", "one": tmp_path / "random_b"}))
    assert "| one | — | 0.100 | — | 0/1 |" in semantic_markdown_table(partial)


def test_semantic_folders_refuse_duplicates_and_say_where_notebook_runs_keep_results(tmp_path):
    from semkit.train.compare import load_semantic_runs

    _semantic_result(tmp_path / "a" / "EBC1", "EBC1", 0.4)
    _semantic_result(tmp_path / "b" / "EBC1", "EBC1", 0.5)
    with pytest.raises(InputError, match="split EBC1 seed 0 of 'x' appears twice"):
        load_semantic_runs({"x": [tmp_path / "a", tmp_path / "b"]})
    run = tmp_path / "02_pretraining-abc"
    _semantic_result(run / "downstream" / "matssl" / "EBC1", "EBC1", 0.4)
    with pytest.raises(InputError, match="downstream/<encoder>"):
        load_semantic_runs({"x": run})


def test_compare_command_on_semantic_folders_prints_miou_and_draws_the_split_figure(tmp_path):
    _semantic_result(tmp_path / "matssl" / "EBC1", "EBC1", 0.4)
    _semantic_result(tmp_path / "random" / "EBC1", "EBC1", 0.3)
    figures = tmp_path / "figs"
    result = CliRunner().invoke(compare, [f"matssl={tmp_path / 'matssl'}", f"random={tmp_path / 'random'}",
                                          "--published", "MatSSL (paper)=EBC1:0.968", "--figures", str(figures)])
    assert result.exit_code == 0, result.output
    assert "| matssl | 0.400 | 0.400 | 1 |" in result.output
    assert "published MatSSL (paper): EBC1 0.968" in result.output
    assert "test_iou_class_0" in result.output and "0.8" in result.output  # per-class IoU, 2 × 0.4
    assert (figures / "miou_by_split.png").stat().st_size > 0
    # semantic and instance folders do not mix; published figures need semantic runs; malformed ones are refused
    instance = _fake_run(tmp_path / "inst", {0: 0.5})
    mixed = CliRunner().invoke(compare, [f"matssl={tmp_path / 'matssl'}", f"maskrcnn={instance}"])
    assert mixed.exit_code != 0 and "cannot compare semantic" in mixed.output and str(instance) in mixed.output
    alone = CliRunner().invoke(compare, [f"maskrcnn={instance}", "--published", "x=EBC1:0.9"])
    assert alone.exit_code != 0 and "only semantic runs" in alone.output
    bad = CliRunner().invoke(compare, [f"matssl={tmp_path / 'matssl'}", "--published", "x=EBC1"])
    assert bad.exit_code != 0 and "expected LABEL=SPLIT:VALUE" in bad.output


def test_the_split_figure_draws_one_bar_per_configuration_and_split_and_the_published_ticks():
    import matplotlib

    matplotlib.use("Agg")
    from semkit.plotting.evaluation import plot_miou_by_split

    table = pd.DataFrame({"name": ["a", "a", "b", "b", "a"], "split": ["S1", "S2", "S1", "S2", "S1"],
                          "seed": [0, 0, 0, 0, 1], "test_miou_dataset_level": [0.4, 0.2, 0.3, 0.1, 0.6]})
    fig = plot_miou_by_split(table, published={"paper": {"S1": 0.9, "S2": 0.8, "S9": 0.1}})
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches if p.get_height() > 0)
    assert heights == [0.1, 0.2, 0.3, 0.5]  # a's S1 bar is the mean of its seeds 0.4 and 0.6
    ticks = [c for c in ax.collections if c.get_label() == "paper"]
    assert len(ticks) == 1 and ticks[0].get_offsets().tolist() == [[0.0, 0.9], [1.0, 0.8]]  # S9 is not drawn


def test_the_pretraining_size_curve_is_the_mean_per_size_ticked_at_the_measured_sizes():
    import matplotlib

    matplotlib.use("Agg")
    from semkit.plotting.evaluation import plot_metric_vs_pretraining_size

    study = pd.DataFrame({"pretrain_images": [0, 0, 1, 1, 8, 8, 53, 53],
                          "pretraining": ["none", "none"] + ["fcmae"] * 6,
                          "aji_plus": [0.3, 0.4, 0.4, 0.6, 0.5, 0.5, 0.7, 0.5]})
    fig = plot_metric_vs_pretraining_size(study)
    ax = fig.axes[0]
    curve = ax.lines[0]
    assert curve.get_xdata().tolist() == [1, 8, 53] and curve.get_ydata().tolist() == pytest.approx([0.5, 0.5, 0.6])
    assert ax.get_xticks().tolist() == [1, 8, 53]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "8", "53"]
    reference = [line for line in ax.lines if line.get_label() == "none (no pretraining)"]
    assert len(reference) == 1 and reference[0].get_ydata()[0] == pytest.approx(0.35)  # mean of the scratch runs
