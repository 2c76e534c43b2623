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


def test_commands_are_imported_only_when_they_run():
    import importlib
    import subprocess
    import sys

    from semkit.cli import COMMANDS

    for name, module in COMMANDS.items():  # every entry names a module that defines the command
        assert name in [c.name for c in importlib.import_module(f"semkit.cli.{module}").commands]
    code = ("import sys; from semkit.cli import main; main(['predict', '--help'], standalone_mode=False); "
            "print('lightning' in sys.modules, 'semkit.ssl.pretrain' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"
