"""The evaluation entry points: tables from hand-computed images, files on disk (label maps, COCO), saving."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from semkit.data.io import save_labels
from semkit.errors import InputError
from semkit.metrics import (
    EvaluationSettings,
    InstanceSet,
    evaluate,
    evaluate_methods,
    load_evaluation_inputs,
    load_or_simulate_study,
)
from semkit.metrics.evaluate import evaluate_paths


def hand_case() -> tuple[np.ndarray, np.ndarray]:
    """GT A (8 px) split in two, B and C (6 px) merged into one 14-px prediction, D (4 px) missed, spurious E
    (6 px): AJI+ = 10 / 42 (worked out in test_aji.py)."""
    gt = np.zeros((10, 12), dtype=np.int32)
    gt[0:2, 0:4], gt[4:6, 0:3], gt[4:6, 4:7], gt[8:10, 0:2] = 1, 2, 3, 4
    pred = np.zeros_like(gt)
    pred[0:2, 0:2], pred[0:2, 2:4], pred[4:6, 0:7], pred[8:10, 8:11] = 1, 2, 3, 4
    return gt, pred


def perfect_case() -> np.ndarray:
    gt = np.zeros((10, 12), dtype=np.int32)
    gt[1:4, 1:4], gt[6:9, 6:10] = 1, 2  # 9 + 12 px
    return gt


def test_per_image_summary_and_particles_by_hand():
    gt, pred = hand_case()
    ev = evaluate({"hand": gt, "perfect": perfect_case()}, {"hand": pred, "perfect": perfect_case()},
                  method="m", pixel_size_nm=2.0)
    row = ev.per_image.set_index("image").loc["hand"]
    assert row["aji_plus"] == pytest.approx(10 / 42)
    assert (row["aji_intersection"], row["aji_union"]) == (10, 42)
    assert (row["correct"], row["missed"], row["false_positive"]) == (2, 2, 2)
    assert (row["pq_tp"], row["pq"]) == (0, 0.0)  # A-A1 has IoU exactly 0.5: no PQ match
    s = ev.summary.iloc[0]
    assert s["method"] == "m" and s["n_images"] == 2 and s["n_gt"] == 6 and s["n_pred"] == 6
    assert s["aji_plus_image_averaged"] == pytest.approx((10 / 42 + 1.0) / 2)
    assert s["aji_plus_dataset_level"] == pytest.approx((10 + 21) / (42 + 21))
    assert s["aji_plus_sem"] == pytest.approx(np.std([10 / 42, 1.0], ddof=1) / np.sqrt(2))
    assert (s["correct"], s["missed"], s["false_positive"]) == (4, 2, 2)
    assert s["precision"] == pytest.approx(4 / 6) and s["f1"] == pytest.approx(8 / 12)
    # PQ from summed counts: TP 2 (perfect image, IoU 1 each), FP 4 and FN 4 from the hand image.
    assert s["pq"] == pytest.approx(1.0 * 2 / (2 + 2 + 2)) and s["sq"] == 1.0
    assert s["ap_scores"] == "constant" and s["ap50"] < 1.0
    pp = ev.per_particle
    hand_gt = pp[(pp.image == "hand") & (pp.side == "gt")].set_index("id")
    assert hand_gt["status"].to_dict() == {1: "correct", 2: "correct", 3: "missed", 4: "missed"}
    assert hand_gt.loc[1, "iou"] == 0.5 and hand_gt.loc[2, "matched_id"] == 3
    assert hand_gt.loc[3, "best_iou"] == pytest.approx(6 / 14) and np.isnan(hand_gt.loc[3, "iou"])
    hand_pred = pp[(pp.image == "hand") & (pp.side == "pred")].set_index("id")
    assert hand_pred["status"].to_dict() == {1: "correct", 2: "false_positive", 3: "correct", 4: "false_positive"}
    assert hand_pred.loc[3, "area_px"] == 14 and hand_pred.loc[3, "area_nm2"] == 14 * 4.0
    assert pd.isna(hand_pred.loc[4, "matched_id"])


def test_several_methods_and_ground_truth_sizes_repeated():
    gt, pred = hand_case()
    ev = evaluate_methods({"hand": gt}, {"good": {"hand": gt}, "bad": {"hand": pred}},
                          settings=EvaluationSettings(coco_ap=False))
    assert ev.methods == ["good", "bad"]
    assert ev.per_image.set_index("method")["aji_plus"].to_dict() == pytest.approx({"good": 1.0, "bad": 10 / 42})
    gt_rows = ev.per_particle[ev.per_particle.side == "gt"]
    assert gt_rows.groupby("method").size().to_dict() == {"bad": 4, "good": 4}
    assert "ap" not in ev.summary.columns and "area_nm2" not in ev.per_particle.columns
    assert ev.scalar_results()["bad"]["correct"] == 2.0


def test_lists_pair_by_position_and_records_give_flags(tmp_path):
    gt, pred = hand_case()
    ev = evaluate([gt, perfect_case()], [pred, perfect_case()])
    assert ev.per_image["image"].tolist() == ["image_0000", "image_0001"]
    named = InstanceSet({"a": gt, "b": perfect_case()})
    assert evaluate(named, [pred, perfect_case()]).per_image["image"].tolist() == ["a", "b"]


def test_save_writes_parquet_and_csv(tmp_path):
    gt, pred = hand_case()
    ev = evaluate({"hand": gt}, {"hand": pred})
    paths = ev.save(tmp_path / "out")
    for key in ("per_image", "per_particle", "summary"):
        back = pd.read_parquet(paths[key])
        assert len(back) == len(getattr(ev, key))
        assert pd.read_csv(paths[f"{key}_csv"]).shape == back.shape
    assert pd.read_parquet(paths["per_image"])["aji_plus"].iloc[0] == pytest.approx(10 / 42)
    assert json.loads(paths["settings"].read_text())["iou_threshold"] == 0.4


def _write_coco(path, stacks: dict[str, np.ndarray], scores: dict[str, list[float]] | None = None,
                results_only: bool = False):
    images, anns = [], []
    for i, (name, stack) in enumerate(stacks.items(), start=1):
        images.append({"id": i, "file_name": f"{name}.png", "height": stack.shape[1], "width": stack.shape[2]})
        for j, m in enumerate(stack):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            ann = {"id": len(anns) + 1, "image_id": i, "category_id": 1, "iscrowd": 0, "segmentation": rle,
                   "area": int(m.sum()), "bbox": [0, 0, 1, 1]}
            if scores:
                ann["score"] = scores[name][j]
            anns.append(ann)
    data = anns if results_only else {"images": images, "annotations": anns, "categories": [{"id": 1}]}
    path.write_text(json.dumps(data))
    return path


def _stack(labels: np.ndarray) -> np.ndarray:
    return np.stack([labels == v for v in range(1, labels.max() + 1)])


def test_label_map_folders_and_coco_files_give_the_same_result(tmp_path):
    gt, pred = hand_case()
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    save_labels(tmp_path / "gt" / "hand.tif", gt)
    Image.fromarray(pred.astype(np.uint8)).save(tmp_path / "pred" / "hand.png")
    from_folders = evaluate_paths(tmp_path / "gt", {"m": tmp_path / "pred"}, tmp_path / "out")
    assert from_folders.per_image["aji_plus"].iloc[0] == pytest.approx(10 / 42)
    assert (tmp_path / "out" / "per_particle.parquet").exists()
    gt_json = _write_coco(tmp_path / "gt.json", {"hand": _stack(gt)})
    pred_json = _write_coco(tmp_path / "pred.json", {"hand": _stack(pred)}, {"hand": [0.9, 0.2, 0.8, 0.1]})
    from_coco = evaluate_paths(gt_json, {"m": pred_json}, tmp_path / "out2")
    cols = ["aji_plus", "correct", "missed", "false_positive", "pq"]
    pd.testing.assert_frame_equal(from_coco.per_image[cols], from_folders.per_image[cols])
    assert from_coco.summary["ap_scores"].iloc[0] == "given"
    # A COCO results list (no image entries) resolves its image ids against the COCO ground truth.
    results = _write_coco(tmp_path / "results.json", {"hand": _stack(pred)}, {"hand": [0.9, 0.2, 0.8, 0.1]},
                          results_only=True)
    from_results = evaluate_paths(gt_json, {"m": results}, tmp_path / "out3")
    assert from_results.summary["ap"].iloc[0] == pytest.approx(from_coco.summary["ap"].iloc[0])
    # Label-map ground truth and COCO predictions mix freely.
    mixed = evaluate_paths(tmp_path / "gt", {"m": pred_json}, tmp_path / "out4")
    assert mixed.per_image["aji_plus"].iloc[0] == pytest.approx(10 / 42)
    with pytest.raises(InputError, match="results list needs a COCO ground truth"):
        evaluate_paths(tmp_path / "gt", {"m": results}, tmp_path / "out5")


def test_missing_and_extra_predictions_name_the_image():
    gt, pred = hand_case()
    with pytest.raises(InputError, match="no prediction") as err:
        evaluate({"a": gt, "b": gt}, {"a": pred})
    assert err.value.path == "b"
    with pytest.raises(InputError, match="without ground truth") as err:
        evaluate({"a": gt}, {"a": pred, "zz": pred})
    assert err.value.path == "zz"
    with pytest.raises(InputError, match="no predictions"):
        evaluate_methods({"a": gt}, {})
    with pytest.raises(InputError, match="no images"):
        evaluate({}, {})
    with pytest.raises(InputError, match="does not exist"):
        InstanceSet.load("no/such/folder")


def test_synthetic_inputs_and_study_table(tmp_path):
    from semkit.data.synthetic import SyntheticConfig

    gt, preds = load_evaluation_inputs(n_synthetic=1, seed=0, synthetic_config=SyntheticConfig(height=64, width=64,
                                       n_particles=(4, 6), radius_px=(4.0, 8.0)))
    assert len(gt) == 1 and list(preds) == ["mild", "moderate", "severe"]
    assert gt.certain and gt.pixel_size_nm  # synthetic records carry flags and a pixel size
    table = pd.DataFrame({"pretraining": ["a"], "backbone": ["x"], "backbone_params_m": [3.0],
                          "pretrain_images": [10], "aji_plus": [0.5]})
    table.to_csv(tmp_path / "runs.csv", index=False)
    assert load_or_simulate_study(tmp_path / "runs.csv").equals(table)
    table.drop(columns="backbone").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="lacks columns"):
        load_or_simulate_study(tmp_path / "bad.csv")
    with pytest.raises(InputError, match="without ground truth"):
        load_evaluation_inputs("", {"m": "x"})
