"""Batch specs: validation with clear errors, grid/zip expansion, references to earlier stages, run ids."""

from __future__ import annotations

import collections
import json

import nbformat
import pytest
import yaml
from batch_helpers import make_notebook, study_spec, toy_spec, write_spec
from click.testing import CliRunner

from semkit.batch import NOTEBOOK_DIR, SPEC_DIR, load_spec, notebook_parameters, plan_batch
from semkit.batch.spec import stage_combinations
from semkit.cli.batch import batch
from semkit.errors import InputError


def _edit(path, change):
    spec = yaml.safe_load(path.read_text())
    change(spec)
    return write_spec(path, spec)


def test_grid_and_zip_expand_in_spec_order(tmp_path):
    path = toy_spec(tmp_path, grid={"x": [1, 2], "y": ["a", "bb"]}, zip={"fail_dir": ["p", "q", "r"],
                                                                            "hold_file": ["", "h", ""]})
    path = _edit(path, lambda s: s.pop("parameters"))
    stage = load_spec(path).stages[0]
    combos = stage_combinations(stage)
    assert len(combos) == 2 * 2 * 3
    assert combos[0] == {"x": 1, "y": "a", "fail_dir": "p", "hold_file": ""}
    assert combos[1] == {"x": 1, "y": "a", "fail_dir": "q", "hold_file": "h"}
    assert combos[3] == {"x": 1, "y": "bb", "fail_dir": "p", "hold_file": ""}
    assert combos[-1] == {"x": 2, "y": "bb", "fail_dir": "r", "hold_file": ""}
    assert stage.name == "toy"  # a one-notebook spec has one stage named after the notebook


def test_run_ids_depend_on_code_and_parameters_only(tmp_path):
    path = toy_spec(tmp_path)
    spec = load_spec(path)
    ids = [r.run_id for r in plan_batch(spec, tmp_path / "a")]
    assert len(set(ids)) == 4 and all(i.startswith("toy-") and len(i) == len("toy-") + 10 for i in ids)
    # same spec, other folder: same ids (ids never contain paths)
    assert [r.run_id for r in plan_batch(load_spec(path), tmp_path / "elsewhere")] == ids
    # a markdown edit and saved outputs do not change the ids, a code edit does
    nb = nbformat.read(tmp_path / "toy.ipynb", as_version=4)
    nb.cells[0].source = "# retitled"
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="old output")]
    nbformat.write(nb, tmp_path / "toy.ipynb")
    assert [r.run_id for r in plan_batch(load_spec(path), tmp_path / "a")] == ids
    nb.cells[2].source += "\nprint('changed')"
    nbformat.write(nb, tmp_path / "toy.ipynb")
    changed = [r.run_id for r in plan_batch(load_spec(path), tmp_path / "a")]
    assert not set(changed) & set(ids)
    # one parameter changed: only the runs it touches get new ids
    nb.cells[2].source = nb.cells[2].source.replace("\nprint('changed')", "")
    nbformat.write(nb, tmp_path / "toy.ipynb")
    _edit(path, lambda s: s["grid"].update(y=["a", "ccc"]))
    new = [r.run_id for r in plan_batch(load_spec(path), tmp_path / "a")]
    assert new[0] == ids[0] and new[2] == ids[2] and new[1] != ids[1] and new[3] != ids[3]


def test_references_pair_runs_on_shared_grid_keys(tmp_path):
    spec = load_spec(study_spec(tmp_path))
    runs = plan_batch(spec, tmp_path / "runs")
    by_stage = collections.defaultdict(list)
    for r in runs:
        by_stage[r.stage].append(r)
    assert {k: len(v) for k, v in by_stage.items()} == {"pretrain": 4, "finetune": 4, "baseline": 8}
    pretrain = {r.run_id: r for r in by_stage["pretrain"]}
    for r in by_stage["finetune"]:
        (up,) = r.dependencies.values()
        assert r.parameters["init"] == str(tmp_path / "runs" / up / "encoder.pt")
        assert pretrain[up].parameters["seed"] == r.parameters["seed"]  # paired on seed
    # each pretraining run is used exactly once
    assert sorted(d for r in by_stage["finetune"] for d in r.dependencies.values()) == sorted(pretrain)
    assert all(not r.dependencies for r in by_stage["baseline"])


def test_match_where_and_consistent_ancestors(tmp_path):
    path = study_spec(tmp_path)
    # match: [] pairs every run with every upstream run
    spec = load_spec(_edit(path, lambda s: s["stages"][1].update(match=[])))
    assert sum(r.stage == "finetune" for r in plan_batch(spec, tmp_path / "r")) == 2 * 4

    def add_stage(s):
        s["stages"][1].pop("match")
        s["stages"].append({"name": "probe", "notebook": "./toy.ipynb",
                            "where": {"pretrain": {"subset_fraction": 0.8}},
                            "parameters": {"y": "${finetune.output_dir}|${pretrain.run_id}", "x": "${pretrain.seed}"}})

    make_notebook(tmp_path / "toy.ipynb")
    runs = plan_batch(load_spec(_edit(path, add_stage)), tmp_path / "r")
    probes = [r for r in runs if r.stage == "probe"]
    finetune = {r.run_id: r for r in runs if r.stage == "finetune"}
    # 2 pretraining runs pass 'where'; each pairs only with the fine-tuning run made from it (same ancestor)
    assert len(probes) == 2
    for p in probes:
        ft = finetune[p.dependencies["finetune"]]
        assert ft.dependencies["pretrain"] == p.dependencies["pretrain"]
        assert p.parameters["y"] == f"{ft.run_dir}|{p.dependencies['pretrain']}"
        assert isinstance(p.parameters["x"], int)  # a whole-value reference keeps its type


def test_unmatched_reference_is_an_error(tmp_path):
    path = _edit(study_spec(tmp_path), lambda s: s["stages"][1]["grid"].update(seed=[0, 5]))
    with pytest.raises(InputError, match=r"no run of stage 'pretrain' matches \{'seed': 5\}"):
        plan_batch(load_spec(path), tmp_path / "r")


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(colour="red"), r"unknown key\(s\) 'colour' in the spec; valid keys: name, description"),
    (lambda s: s.update(name="a b"), r"'name' must be a folder-safe name"),
    (lambda s: s.update(notebook="./missing.ipynb"), r"notebook './missing.ipynb' not found"),
    (lambda s: s.update(notebook="07_nothing"), r"notebook '07_nothing' not found .* shipped notebooks: 01_dataset"),
    (lambda s: s["grid"].update(z=[1]), r"grid key 'z' is not a parameter of toy.ipynb; its parameters: x, y, "
                                        r"fail_dir, hold_file, output_dir, figures_dir"),
    (lambda s: s["parameters"].update(output_dir="x"), r"'output_dir' is set by the batch"),
    (lambda s: s["grid"].update(x=3), r"grid key 'x' must be a non-empty list"),
    (lambda s: s.update(zip={"hold_file": ["a", "b"], "fail_dir": ["c"]}), r"zip lists must be .* one length"),
    (lambda s: s["parameters"].update(x=1), r"'x' appears in both parameters and grid"),
    (lambda s: s.update(timeout_s=0), r"timeout_s must be a positive integer"),
    (lambda s: s["parameters"].update(hold_file="${later.output_dir}"), r"refers to stage 'later' in \$\{later.output_dir\}, "
                                                                  r"which is not an earlier stage"),
])
def test_spec_errors_name_the_file_and_key(tmp_path, change, message):
    path = _edit(toy_spec(tmp_path), change)
    with pytest.raises(InputError, match=message) as info:
        load_spec(path)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize("change, message", [
    (lambda s: s["stages"][1].update(name="pretrain"), r"two stages are named 'pretrain'"),
    (lambda s: s["stages"][1]["parameters"].update(init="${pretrain.epochs}"),
     r"stage 'pretrain' sets no parameter 'epochs'; use output_dir, run_id or one of: seed, subset_fraction"),
    (lambda s: s["stages"][1].update(where={"baseline": {"seed": 0}}), r"'where' names stage 'baseline', which this"),
    (lambda s: s["stages"][1].update(where={"pretrain": {"lr": 0}}), r"'where' for stage 'pretrain' names \['lr'\]"),
    (lambda s: s["stages"][1].update(match=["backbone"]), r"match keys \['backbone'\] are not set by both"),
    (lambda s: s["stages"][2].pop("notebook"), r"stages\[2\] needs a 'notebook'"),
    (lambda s: s.update(notebook="./pretrain.ipynb"), r"unknown key\(s\) 'notebook' in the spec"),
])
def test_stage_errors(tmp_path, change, message):
    path = _edit(study_spec(tmp_path), change)
    with pytest.raises(InputError, match=message):
        load_spec(path)


def test_duplicate_runs_are_an_error(tmp_path):
    path = _edit(study_spec(tmp_path), lambda s: s["stages"].append({**s["stages"][2], "name": "again"}))
    with pytest.raises(InputError, match=r"stages 'baseline' and 'again' define the same run"):
        plan_batch(load_spec(path), tmp_path / "r")


def test_parameters_read_with_ast_keep_union_annotations():
    names = notebook_parameters(NOTEBOOK_DIR / "03_finetuning.ipynb")
    # papermill's own inspector skips these three lines (union type, parentheses in comments)
    assert {"magnification_bucket", "learning_rate", "num_threads", "init", "output_dir"} <= set(names)
    assert names[0] == "quick"


SHIPPED = {"demo": {"curate": 1, "pretrain": 2, "finetune_scratch": 4, "finetune_fcmae": 4, "evaluate": 1,
                    "features": 1, "stem": 1},
           "backbone_sweep": {"pretrain": 16, "finetune_pretrained": 48, "finetune_baselines": 48},
           "pretraining_size": {"pretrain": 24, "finetune": 24, "finetune_scratch": 3},
           "pretraining_size_cpu": {"pretrain": 21, "finetune": 21, "finetune_scratch": 3},
           "bam_methods": {"learned": 15, "classical": 1},
           "bam_methods_cpu": {"maskrcnn": 12, "maskrcnn_uncertainty": 3, "unet": 3, "classical": 1},
           "matssl_ebc": {"pretrain": 6},
           "matssl_ebc_cpu": {"pretrain": 6},
           "ssl_pico_cpu": {"pretrain": 2, "finetune": 6, "finetune_scratch": 3},
           "stem_timing": {"06_stem_boxing": 6},
           "my_data": {"curate": 1, "pretrain": 1, "finetune_pretrained": 3, "finetune_scratch": 3}}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_specs_expand(name, tmp_path):
    assert (SPEC_DIR / f"{name}.yaml").is_file()
    result = CliRunner().invoke(batch, ["run", name, "--dry-run", "--runs-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    total = sum(SHIPPED[name].values())
    assert result.output.strip().endswith(f"{total} runs in batch {name} ({total} pending)")
    runs = plan_batch(load_spec(name), tmp_path / name)
    assert dict(collections.Counter(r.stage for r in runs)) == SHIPPED[name]
    for r in runs:  # every reference is resolved to an upstream run folder
        assert "${" not in json.dumps(r.parameters)
        for rid in r.dependencies.values():
            assert str(tmp_path / name / rid) in json.dumps(r.parameters)


def test_shipped_pretraining_pools_hold_no_bam_validation_or_test_image():
    # pretraining on the test images (even unlabeled) would leak them into the fine-tuning comparison;
    # the held-out stems of the fixed split (semkit.train.data.bam_split's docstring)
    held_out = {"1908258", "1908268", "1908290", "1908304", "1908312",
                "1908264", "1908272", "1908296", "1908316", "1908322"}
    for name in ("pretraining_size", "pretraining_size_cpu", "backbone_sweep", "ssl_pico_cpu"):
        pools = {tuple(r.parameters["data_folders"]) for r in plan_batch(load_spec(name), "/nowhere")
                 if r.stage == "pretrain"}
        assert len(pools) == 1, name
        bam = [p for p in pools.pop() if "bam-tio2-sem" in p]
        assert len(bam) == 20 and all(p.endswith(".tif") for p in bam), name
        assert not {p.rsplit("/", 1)[-1].removesuffix(".tif") for p in bam} & held_out, name


def test_x_keys_hold_yaml_anchors_and_are_ignored(tmp_path):
    make_notebook(tmp_path / "toy.ipynb")
    path = tmp_path / "anchors.yaml"
    path.write_text("name: anchors\nx-common: &common {x: 7, fail_dir: none}\nnotebook: ./toy.ipynb\n"
                    "parameters: *common\ngrid: {y: [a, b]}\n")
    runs = plan_batch(load_spec(path), tmp_path / "r")
    assert sorted((r.parameters["x"], r.parameters["y"]) for r in runs) == [(7, "a"), (7, "b")]


def test_shipped_spec_pairing():
    sweep = plan_batch(load_spec("backbone_sweep"), "/nowhere/backbone_sweep")
    pre = {r.run_id: r for r in sweep if r.stage == "pretrain"}
    for r in (r for r in sweep if r.stage == "finetune_pretrained"):
        assert pre[r.dependencies["pretrain"]].parameters["backbone"] == r.parameters["backbone"]
    size = plan_batch(load_spec("pretraining_size"), "/nowhere/pretraining_size")
    pre = {r.run_id: r for r in size if r.stage == "pretrain"}
    pairs = {(pre[r.dependencies["pretrain"]].parameters["subset_fraction"], r.parameters["seed"])
             for r in size if r.stage == "finetune"}
    assert pairs == {(2**s / 100 if s < 7 else 1.0, seed) for s in range(8) for seed in range(3)}
    assert all(pre[r.dependencies["pretrain"]].parameters["seed"] == r.parameters["seed"]
               for r in size if r.stage == "finetune")


def test_shipped_cpu_ssl_specs_pairing():
    # ssl_pico_cpu: both encoders fine-tuned with each of the 3 seeds (match on nothing)
    runs = plan_batch(load_spec("ssl_pico_cpu"), "/nowhere/ssl_pico_cpu")
    pre = {r.run_id: r.parameters for r in runs if r.stage == "pretrain"}
    assert {(p["method"], p["epochs"], p["lr"]) for p in pre.values()} == {("fcmae", 9, 0.001), ("densecl", 3, None)}
    pairs = sorted((pre[r.dependencies["pretrain"]]["method"], r.parameters["seed"])
                   for r in runs if r.stage == "finetune")
    assert pairs == sorted((m, s) for m in ("fcmae", "densecl") for s in range(3))
    assert sorted(r.parameters["init"] for r in runs if r.stage == "finetune_scratch") == ["random"] * 3
    # matssl_ebc_cpu: the random U-Net++ baseline is fine-tuned once per seed, in the MatSSL run
    ebc = plan_batch(load_spec("matssl_ebc_cpu"), "/nowhere/matssl_ebc_cpu")
    assert sorted((r.parameters["method"], r.parameters["downstream_baseline"], r.parameters["seed"]) for r in ebc) == [
        ("matssl", True, 0), ("matssl", True, 1), ("matssl", True, 2),
        ("mocov2", False, 0), ("mocov2", False, 1), ("mocov2", False, 2)]


def test_dry_run_lists_runs(tmp_path):
    path = toy_spec(tmp_path)
    result = CliRunner().invoke(batch, ["run", str(path), "--dry-run", "--runs-root", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    ids = [r.run_id for r in plan_batch(load_spec(path), tmp_path / "runs")]
    assert all(i in result.output for i in ids)
    assert '{"x": 2, "y": "bb"}' in result.output
    assert result.output.strip().endswith("4 runs in batch tiny (4 pending)")
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing
    bad = CliRunner().invoke(batch, ["run", str(tmp_path / "nope.yaml"), "--dry-run"])
    assert bad.exit_code != 0 and "no such spec file; shipped specs: " in bad.output
