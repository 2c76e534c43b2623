"""Review criteria CSV, success rate, auto review against ground truth and the ipywidgets gallery."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from semkit.errors import InputError
from semkit.stem import REVIEW_CRITERIA, ReviewLog, auto_review, box_image, make_haadf_image, success_rate
from semkit.stem.review import review_gallery

ALL_TRUE = dict.fromkeys(REVIEW_CRITERIA, True)


def test_review_log_writes_after_every_answer_and_resumes(tmp_path):
    path = tmp_path / "reviews" / "review.csv"
    log = ReviewLog(path)
    log.record("img_a", reviewer="ana", **ALL_TRUE)
    log.record("img_b", **{**ALL_TRUE, "regions_separated": False})
    log.record("img_c", **ALL_TRUE)
    log.record("img_d", **ALL_TRUE)
    log.record("img_d", **{**ALL_TRUE, "bbox_encloses_particle": False})  # a changed answer replaces the row
    frame = pd.read_csv(path)
    assert frame.columns.tolist() == ["image", *REVIEW_CRITERIA, "reviewer"]
    assert frame["image"].tolist() == ["img_a", "img_b", "img_c", "img_d"]
    assert success_rate(log) == pytest.approx(0.5)
    resumed = ReviewLog(path)
    assert len(resumed) == 4 and resumed.get("img_a")["reviewer"] == "ana"
    assert resumed.get("img_b")["regions_separated"] is False
    assert success_rate(path) == pytest.approx(0.5)
    assert resumed.frame()["success"].tolist() == [True, False, True, False]


def test_success_rate_edge_cases_and_bad_answers(tmp_path):
    assert np.isnan(success_rate(ReviewLog(tmp_path / "none.csv")))
    log = ReviewLog(tmp_path / "r.csv")
    with pytest.raises(InputError, match="missing"):
        log.record("x", bbox_encloses_particle=True)
    with pytest.raises(InputError, match="unknown"):
        log.record("x", looks_nice=True, **ALL_TRUE)
    bad = tmp_path / "bad.csv"
    bad.write_text("image,ok\nx,1\n")
    with pytest.raises(InputError, match="lacks columns") as info:
        ReviewLog(bad)
    assert "bad.csv" in str(info.value)
    yes_no = tmp_path / "yn.csv"
    yes_no.write_text("image,bbox_encloses_particle,regions_separated,boxes_reflect_regions,reviewer\n"
                      "a,yes,1,True,\nb,no,0,False,\n")
    assert success_rate(yes_no) == 0.5


def test_auto_review_against_ground_truth():
    rec = make_haadf_image(512, 2, layout="janus", seed=6)
    res = box_image(rec)
    review = auto_review(res, rec)
    assert review["bbox_encloses_particle"] and review["boxes_reflect_regions"] and review["regions_separated"]
    assert 0.85 <= review["iou"] <= 1 and 0.85 <= review["purity"] <= 1
    # A crop that cuts the particle fails the first criterion.
    seg = res.segmentation
    cut = replace(seg, bbox=(seg.bbox[0] + 5, *seg.bbox[1:]), labels=seg.labels[5:])
    assert not auto_review(replace(res, segmentation=cut), rec)["bbox_encloses_particle"]
    # An empty result fails everything; a record without ground truth is an error naming it.
    empty = box_image(np.zeros((128, 128), np.float32), 2)
    assert not any(auto_review(empty, rec)[c] for c in REVIEW_CRITERIA)
    rec.semantic = None
    with pytest.raises(InputError, match="ground truth|mask"):
        auto_review(res, rec)


def test_gallery_records_answers_through_its_buttons(tmp_path):
    pytest.importorskip("ipywidgets")
    recs = [make_haadf_image(256, n, seed=n) for n in (1, 2)]
    results = [box_image(r) for r in recs]
    log = ReviewLog(tmp_path / "g.csv")
    gallery = review_gallery(results, [r.image for r in recs], log, reviewer="t")
    title, picture, *checks, buttons, status = gallery.children
    assert picture.value[:4] == b"\x89PNG" and "1/2" in title.value
    back, save = buttons.children
    checks[1].value = False  # regions not separated on the first image
    save.click()
    assert "2/2" in title.value and "50.0 %" not in status.value
    save.click()
    assert log.get(recs[0].source)["regions_separated"] is False
    assert log.get(recs[1].source) == {"image": recs[1].source, **ALL_TRUE, "reviewer": "t"}
    assert "success rate 50.0 %" in status.value
    back.click()
    assert "1/2" in title.value and checks[1].value is False  # stored answers are shown again
    with pytest.raises(InputError):
        review_gallery(results, [], log)
