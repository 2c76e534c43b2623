"""The single entry point assembles every command group."""

import json

from click.testing import CliRunner

from semkit.cli import main


def test_every_command_is_registered():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for name in ("data", "curate", "evaluate", "stem-box", "bench", "demo", "predict", "pretrain", "finetune",
                 "finetune-semantic", "compare", "install-minkowski"):
        assert f"  {name} " in result.output


def test_bench_metrics_reports_a_valid_aji():
    result = CliRunner().invoke(
        main, ["bench", "metrics", "--height", "256", "--width", "256", "--instances", "30", "--repeats", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert payload["n_gt"] == 30
    assert 0.0 < payload["aji_plus"] < 1.0
    assert payload["median_s"] > 0


def test_demo_rejects_an_unknown_notebook_selection():
    result = CliRunner().invoke(main, ["demo", "--only", "99"])
    assert result.exit_code != 0
    assert "no notebooks selected" in result.output
