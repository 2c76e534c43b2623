"""Compare finished fine-tuning runs: the tables of BENCHMARKS.md from the folders ``semkit finetune`` writes.

A fine-tuning folder (``semkit finetune --out DIR`` or ``<notebook 03 run>/finetune``) holds ``results.json`` with
one entry per seed and, per seed, ``seed_<s>/test_per_image.csv`` and ``seed_<s>/test_particles.csv``.
:func:`load_runs` reads several such folders under names of your choice; :func:`summary_table` gives mean ± std
over seeds with the error reduction rate (ERR) against a reference configuration, :func:`confidence_table` the
uncertainty-head quality per seed (AUROC and calibration, certain vs uncertain and correct vs false particles),
and :func:`markdown_table` the result as a Markdown table. ``semkit compare`` is the command-line front end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from semkit.errors import InputError
from semkit.metrics.confidence import confidence_analysis, confidence_auroc
from semkit.metrics.err import error_reduction_rate

RESULTS_FILE = "results.json"
#: The subfolder where notebook 03 (and so every batch run of it) lets ``finetune`` write.
NOTEBOOK_FINETUNE_DIR = "finetune"
#: Test metrics summarised per configuration (mean and std over seeds), in table order.
METRICS = ("aji_plus", "correct", "missed", "false_positive", "ap", "ap50")


@dataclass(frozen=True)
class RunComparison:
    """Test results of several fine-tuning folders.

    Attributes:
        seeds: one row per configuration and seed: ``name``, ``seed``, ``train_minutes``, the test metrics of
            ``results.json`` (``aji_plus``, ``correct``, ``missed``, ``false_positive``, ``ap``, ``ap50``, ...)
            and ``run_dir``.
        per_image: the seeds' ``test_per_image.csv`` rows with ``name`` and ``seed``.
        particles: the seeds' ``test_particles.csv`` rows (one per predicted particle: ``status``, ``certain``,
            ``confidence``, ...) with ``name`` and ``seed``; empty when no seed wrote one.
    """

    seeds: pd.DataFrame
    per_image: pd.DataFrame
    particles: pd.DataFrame

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(self.seeds["name"]))


def load_runs(runs: Mapping[str, str | os.PathLike | Sequence[str | os.PathLike]]) -> RunComparison:
    """Read fine-tuning folders.

    Args:
        runs: configuration name -> folder with ``results.json`` (several seeds are the ``repeats`` of one
            folder), or a list of folders whose seeds are pooled (seeds trained in separate runs); names keep
            their order. A folder without ``results.json`` (a run from before it was written per seed, killed
            mid-way) is read from its ``seed_<s>/test_per_image.csv`` tables: AJI+ and the matching counts are
            recomputed from them, mask AP and the training time are then missing. A notebook 03 run folder
            (``papermill_runs/<batch>/03_finetuning-<id>``) stands for its ``finetune`` subfolder.

    Raises:
        InputError: a folder with neither ``results.json`` nor a finished seed, an unreadable one, or a seed
            that appears twice under one name.
    """
    if not runs:
        raise InputError("no runs to compare: give at least one NAME=FOLDER")
    seed_rows, images, particles = [], [], []
    for name, folders in runs.items():
        folders = [folders] if isinstance(folders, str | os.PathLike) else list(folders)
        for folder in map(_finetune_folder, folders):
            for rep in _repeats(name, folder):
                if any(r["name"] == name and r["seed"] == rep.get("seed") for r in seed_rows):
                    raise InputError(f"seed {rep.get('seed')} of {name!r} appears in two folders", folder)
                run_dir = _run_dir(rep, folder)
                seed_rows.append({"name": name, "seed": rep.get("seed"),
                                  "train_minutes": (rep.get("train_seconds") or np.nan) / 60.0,
                                  **{k: v for k, v in rep["test"].items()}, "run_dir": str(run_dir)})
                for table, rows in (("test_per_image.csv", images), ("test_particles.csv", particles)):
                    if (run_dir / table).is_file():
                        rows.append(pd.read_csv(run_dir / table).assign(name=name, seed=rep.get("seed")))
    seeds = pd.DataFrame(seed_rows)
    for column in METRICS:
        seeds[column] = pd.to_numeric(seeds.get(column), errors="coerce")
    return RunComparison(seeds=seeds,
                         per_image=pd.concat(images, ignore_index=True) if images else pd.DataFrame(),
                         particles=pd.concat(particles, ignore_index=True) if particles else pd.DataFrame())


def _finetune_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    inner = folder / NOTEBOOK_FINETUNE_DIR
    if not (folder / RESULTS_FILE).is_file() and not any(folder.glob("seed_*")) and inner.is_dir():
        return inner
    return folder


def _repeats(name: str, folder: Path) -> list[dict]:
    """The seeds of one fine-tuning folder as ``results.json`` lists them (or rebuilt from the seed tables)."""
    path = folder / RESULTS_FILE
    if path.is_file():
        try:
            results = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"cannot read the results of {name!r}: {err}", path) from err
        repeats = [r for r in results.get("repeats", []) if r.get("test")]
        if not repeats:
            raise InputError(f"{name!r} has no seed with test results", path)
        return repeats
    repeats = []
    for table in sorted(folder.glob("seed_*/test_per_image.csv")):
        per_image = pd.read_csv(table)
        seed = table.parent.name.removeprefix("seed_")
        test = {"aji_plus": float(per_image["aji_plus"].mean())}
        for column in ("correct", "missed", "false_positive", "n_gt", "n_pred"):
            if column in per_image:
                test[column] = float(per_image[column].sum())
        repeats.append({"seed": int(seed) if seed.isdigit() else seed, "run_dir": str(table.parent), "test": test})
    if not repeats:
        raise InputError(f"no {RESULTS_FILE} and no finished seed (seed_<s>/test_per_image.csv) in the "
                         f"fine-tuning folder of {name!r} (has the run finished?)", folder)
    return repeats


def _run_dir(rep: dict, folder: Path) -> Path:
    # results.json stores the seed folder as it was at training time; fall back to <folder>/seed_<s> when the
    # runs were moved or copied
    recorded = Path(rep.get("run_dir", ""))
    if recorded.is_dir():
        return recorded
    return folder / f"seed_{rep.get('seed')}"


def summary_table(comparison: RunComparison, reference: str | None = None) -> pd.DataFrame:
    """Mean and sample standard deviation over seeds per configuration, and ERR against ``reference``.

    Returns:
        One row per configuration (in input order): ``n_seeds``, ``<metric>_mean`` and ``<metric>_std`` for
        :data:`METRICS`, ``aji_plus_seeds`` (the per-seed AJI+ as a list), ``train_minutes`` (min and max as a
        string ``"a–b"``) and, with a reference, ``err_percent``: ERR of the mean AJI+ over the reference's mean
        AJI+ (the study's definition, :func:`semkit.metrics.err.error_reduction_rate`).

    Raises:
        InputError: ``reference`` is not one of the names.
    """
    seeds = comparison.seeds
    if reference is not None and reference not in comparison.names:
        raise InputError(f"reference {reference!r} is not one of the compared runs: {', '.join(comparison.names)}")
    rows = []
    for name, part in seeds.groupby("name", sort=False):
        row = {"name": name, "n_seeds": len(part)}
        for metric in METRICS:
            values = part[metric].dropna()
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
        row["aji_plus_seeds"] = [round(float(v), 3) for v in part.sort_values("seed")["aji_plus"]]
        minutes = part["train_minutes"].dropna()
        low, high = (f"{minutes.min():.0f}", f"{minutes.max():.0f}") if len(minutes) else ("", "")
        row["train_minutes"] = low if low == high else f"{low}–{high}"
        rows.append(row)
    table = pd.DataFrame(rows).set_index("name")
    if reference is not None:
        table.attrs["reference"] = reference
        table["err_percent"] = error_reduction_rate(table["aji_plus_mean"].to_numpy(),
                                                    table.loc[reference, "aji_plus_mean"])
    return table


def confidence_table(comparison: RunComparison, n_bins: int = 10) -> pd.DataFrame:
    """Quality of the per-particle confidence of every seed that has one (uncertainty-head models).

    Per configuration and seed: ``matched`` (predictions matched to a ground-truth particle), ``certain`` /
    ``uncertain`` (their flags), ``auroc_certain`` (the confidence separating matched particles of certain from
    uncertain ground truth), ``ece_certain`` (calibration with "certain" as the event), ``mean_conf_certain`` /
    ``mean_conf_uncertain``, ``auroc_correct`` (correct vs false-positive predictions, all of them) and
    ``ece_correct``. Empty when no seed has confidences.
    """
    parts = comparison.particles
    if parts.empty or "confidence" not in parts or parts["confidence"].notna().sum() == 0:
        return pd.DataFrame()
    rows = []
    for (name, seed), p in parts[parts["confidence"].notna()].groupby(["name", "seed"], sort=False):
        # the metrics module's analysis, on the seed's predictions (only matched ones carry the certain flag)
        pred = p.rename(columns={"confidence": "score"}).assign(side="pred", method=name)
        certain = confidence_analysis(pred, "certain", n_bins).summary.iloc[0]
        correct = confidence_analysis(pred, "correct", n_bins).summary.iloc[0]
        scored = pred[pred["status"].isin(["correct", "false_positive"])]
        rows.append({
            "name": name, "seed": seed, "matched": int(certain["n"]), "certain": int(certain["n_certain"]),
            "uncertain": int(certain["n_uncertain"]), "auroc_certain": certain["auroc"],
            "ece_certain": certain["ece"], "mean_conf_certain": certain["mean_confidence_certain"],
            "mean_conf_uncertain": certain["mean_confidence_uncertain"],
            "auroc_correct": confidence_auroc(scored["score"].to_numpy(float),
                                              (scored["status"] == "correct").to_numpy()),
            "ece_correct": correct["ece"],
        })
    return pd.DataFrame(rows)


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as the Markdown table of BENCHMARKS.md (AJI+ mean ± std and per seed, counts, AP, ERR)."""
    has_err = "err_percent" in summary.columns
    head = ["configuration", "test AJI+ (mean ± std)", "per seed", "correct / missed / false pos. (mean)",
            "mask AP (AP50)", "seeds", "train min"] + (["ERR vs reference"] if has_err else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in summary.iterrows():
        std = f" ± {r['aji_plus_std']:.3f}" if np.isfinite(r["aji_plus_std"]) else ""
        cells = [str(name), f"{r['aji_plus_mean']:.3f}{std}", ", ".join(f"{v:.3f}" for v in r["aji_plus_seeds"]),
                 f"{r['correct_mean']:.0f} / {r['missed_mean']:.0f} / {r['false_positive_mean']:.0f}",
                 f"{r['ap_mean']:.3f} ({r['ap50_mean']:.3f})" if np.isfinite(r["ap_mean"]) else "—",
                 str(int(r["n_seeds"])), r["train_minutes"]]
        if has_err:
            reference = name == summary.attrs.get("reference") or not np.isfinite(r["err_percent"])
            cells.append("—" if reference else f"{r['err_percent']:+.1f} %")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Semantic segmentation (U-Net++ on NASA EBC and the like): the folders `finetune_semantic` writes, one
# results.json per split, e.g. <notebook 02 run>/downstream/<encoder>/<split>/results.json.

#: The score of a semantic split (mIoU over the whole test set's pixels, as the MatSSL study reports it).
SEMANTIC_METRIC = "test_miou_dataset_level"


def _read_semantic(folder: Path) -> list[tuple[Path, dict]]:
    """``(path, parsed results)`` of the semantic ``results.json`` of ``folder`` and of its split subfolders."""
    found = []
    for path in [folder / RESULTS_FILE, *sorted(folder.glob(f"*/{RESULTS_FILE}"))]:
        try:
            results = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(results, dict) and "split" in results and SEMANTIC_METRIC in results:
            found.append((path, results))
    return found


def semantic_results_files(folder: str | os.PathLike) -> list[Path]:
    """The semantic ``results.json`` of ``folder``: its own (one split) or those of its split subfolders.

    Empty when the folder holds none (an instance fine-tuning folder, for example).
    """
    return [path for path, _ in _read_semantic(Path(folder))]


def load_semantic_runs(runs: Mapping[str, str | os.PathLike | Sequence[str | os.PathLike]]) -> pd.DataFrame:
    """Read semantic fine-tuning folders into one row per configuration, split and seed.

    Args:
        runs: configuration name -> a folder of one split (``results.json`` with ``split``) or of several split
            subfolders (``downstream/<encoder>`` of a notebook 02 run), or a list of such folders whose splits
            and seeds are pooled (e.g. a baseline whose splits were trained in separate runs).

    Returns:
        Columns ``name``, ``split``, ``seed``, ``encoder``, the ``test_*`` scores of ``results.json``
        (``test_miou_dataset_level``, ``test_miou_image_averaged``, ``test_iou_class_<c>``, ...),
        ``best_val_miou`` and ``run_dir``.

    Raises:
        InputError: a folder without semantic results (a notebook 02 run folder holds them under
            ``downstream/<encoder>``), or a split and seed that appear twice under one name.
    """
    if not runs:
        raise InputError("no runs to compare: give at least one NAME=FOLDER")
    rows = []
    for name, folders in runs.items():
        folders = [folders] if isinstance(folders, str | os.PathLike) else list(folders)
        for folder in map(Path, folders):
            files = _read_semantic(folder)
            if not files:
                hint = (f" (a notebook 02 run keeps them per encoder: {folder / 'downstream' / '<encoder>'})"
                        if (folder / "downstream").is_dir() else "")
                raise InputError(f"no semantic {RESULTS_FILE} (with 'split' and '{SEMANTIC_METRIC}') in the "
                                 f"folder of {name!r} or its subfolders{hint}", folder)
            for path, results in files:
                seed = results.get("config", {}).get("seed")
                if any(r["name"] == name and r["split"] == results["split"] and r["seed"] == seed for r in rows):
                    raise InputError(f"split {results['split']} seed {seed} of {name!r} appears twice", path)
                rows.append({"name": name, "split": results["split"], "seed": seed,
                             "encoder": results.get("encoder"),
                             **{k: v for k, v in results.items() if k.startswith("test_") or k == "best_val_miou"},
                             "run_dir": str(path.parent)})
    return pd.DataFrame(rows)


def semantic_summary(table: pd.DataFrame, metric: str = SEMANTIC_METRIC) -> pd.DataFrame:
    """Mean and sample std over seeds of ``metric`` per configuration (rows, input order) and split (columns).

    Returns:
        Columns ``<split>_mean``, ``<split>_std`` (NaN with one seed) and ``<split>_n`` for every split in order of
        appearance, and ``mean_over_splits`` (the mean of the split means, NaN when a split is missing).
    """
    splits = list(dict.fromkeys(table["split"]))
    rows = []
    for name, part in table.groupby("name", sort=False):
        row = {"name": name}
        for split in splits:
            values = part.loc[part["split"] == split, metric].dropna()
            row[f"{split}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{split}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
            row[f"{split}_n"] = len(values)
        row["mean_over_splits"] = float(np.mean([row[f"{s}_mean"] for s in splits]))
        rows.append(row)
    summary = pd.DataFrame(rows).set_index("name")
    summary.attrs["splits"] = splits
    return summary


def semantic_markdown_table(summary: pd.DataFrame) -> str:
    """The semantic summary as the Markdown table of BENCHMARKS.md (test mIoU per split, mean ± std, seeds)."""
    splits = summary.attrs.get("splits") or [c.removesuffix("_mean") for c in summary.columns
                                              if c.endswith("_mean") and c != "mean_over_splits"]
    head = ["configuration", *(f"{s} test mIoU" for s in splits), "mean over splits", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in summary.iterrows():
        cells = [str(name)]
        for split in splits:
            mean, std = r[f"{split}_mean"], r[f"{split}_std"]
            cells.append("—" if not np.isfinite(mean) else f"{mean:.3f}" + (f" ± {std:.3f}" if np.isfinite(std) else ""))
        cells.append(f"{r['mean_over_splits']:.3f}" if np.isfinite(r["mean_over_splits"]) else "—")
        cells.append("/".join(str(int(r[f"{s}_n"])) for s in splits))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
