"""``semkit pretrain`` (self-supervised pretraining) and ``semkit install-minkowski``.

``semkit pretrain`` has one option per :class:`semkit.ssl.PretrainConfig` field (``--crop-size 640``,
``--data DIR`` repeated for ``data_folders``, ``--norm-pix-loss/--no-norm-pix-loss``...), optionally on top of a
saved ``pretrain_config.json`` (``--config``). The same command runs on a laptop, one GPU or a SLURM allocation
(``srun semkit pretrain --accelerator gpu --devices 4 --num-nodes 20 ...``; see ``semkit/ssl/slurm_example.sbatch``)
and under ``torchrun``.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import click

from semkit.errors import InputError
from semkit.ssl.pretrain import BACKENDS, METHODS, SUBSET_BUDGETS, PretrainConfig

INSTALL_SCRIPT = Path(__file__).resolve().parents[1] / "ssl" / "install_minkowski.sh"

#: Help text per field (the dataclass docstring has the details).
_HELP = {
    "method": f"Pretraining method: {', '.join(METHODS)}.",
    "backbone": "Encoder (convnextv2_atto ... convnextv2_huge, resnet50).",
    "data_folders": "Folder (or image file) of unlabeled images; repeat for several. None = synthetic pool.",
    "subset_fraction": "Share of the ssl_train pool used (pretraining-size ablation: 0.01 ... 0.64, 1).",
    "subset_budget": "Subsets train for the whole pool's updates per epoch (steps) or one pass per epoch (epochs).",
    "crop_size": "Random crop side in pixels (no rescaling).",
    "mask_ratio": "FCMAE masked fraction of 32x32 patches.",
    "backend": f"FCMAE encoder backend: {', '.join(BACKENDS)}.",
    "lr": "Learning rate (default: the method's, scaled with the batch size).",
    "devices": "Devices per node: a number, 'auto' or a comma-separated list of ids.",
    "limit_train_batches": "Batches per epoch (int) or fraction (float).",
    "limit_val_batches": "Validation batches (int) or fraction (float).",
    "crop_databar": "Databar of folder images: auto (detect), none, or a number of rows.",
    "max_time": "Wall-clock budget DD:HH:MM:SS.",
}


def _number(text: str) -> int | float | None:
    if text is None or text.lower() == "none":
        return None
    return float(text) if any(c in text for c in ".eE") else int(text)


def _devices(text: str) -> int | str | list[int]:
    if "," in text:
        return [int(v) for v in text.split(",") if v]
    return int(text) if text.lstrip("-").isdigit() else text


def _databar(text: str) -> bool | int:
    if text in ("auto", "true", "True"):
        return True
    if text in ("none", "false", "False"):
        return False
    return int(text)


#: Parsers for the fields whose type click cannot express directly.
_PARSERS = {
    "devices": _devices,
    "limit_train_batches": _number,
    "limit_val_batches": _number,
    "crop_databar": _databar,
}


def _options(func):
    """Add one click option per PretrainConfig field (all default to None = keep the config's value)."""
    for f in reversed(dataclasses.fields(PretrainConfig)):
        flag = "--" + f.name.replace("_", "-")
        help_text = _HELP.get(f.name, f"PretrainConfig.{f.name}.")
        ann = str(f.type)
        if f.name == "data_folders":
            opt = click.option("--data", "data_folders", multiple=True, type=click.Path(exists=True), help=help_text)
        elif f.name in _PARSERS:
            opt = click.option(flag, f.name, type=str, default=None, help=help_text)
        elif ann == "bool":
            opt = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=help_text)
        elif f.name == "method":
            opt = click.option(flag, f.name, type=click.Choice(list(METHODS)), default=None, help=help_text)
        elif f.name == "subset_budget":
            opt = click.option(flag, f.name, type=click.Choice(list(SUBSET_BUDGETS)), default=None, help=help_text)
        elif f.name == "backend":
            opt = click.option(flag, f.name, type=click.Choice(list(BACKENDS)), default=None, help=help_text)
        else:
            kind = int if ann.startswith("int") else float if ann.startswith("float") else str
            opt = click.option(flag, f.name, type=kind, default=None, help=help_text)
        func = opt(func)
    return func


@click.command("pretrain")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start from a saved pretrain_config.json; other options override its values.")
@click.option("--print-config", is_flag=True, help="Print the resolved configuration as JSON and exit.")
@_options
def pretrain_cmd(config_path: str | None, print_config: bool, **values) -> None:
    """Self-supervised pretraining of an encoder; writes encoder.pt + encoder.json into --output-dir."""
    base = PretrainConfig.load(config_path).to_dict() if config_path else {}
    for name, value in values.items():
        if value is None or (name == "data_folders" and not value):
            continue
        if name in _PARSERS:
            try:
                value = _PARSERS[name](value)
            except ValueError as err:
                raise click.BadParameter(str(err), param_hint="--" + name.replace("_", "-")) from None
        base[name] = list(value) if name == "data_folders" else value
    try:
        config = PretrainConfig.from_dict(base)
    except (InputError, KeyError) as err:
        raise click.UsageError(str(err)) from None
    if print_config:
        click.echo(json.dumps(config.to_dict(), indent=2))
        return
    from semkit.ssl.pretrain import pretrain

    try:
        results = pretrain(config)
    except InputError as err:
        raise click.ClickException(str(err)) from None
    if results.get("encoder_path"):
        summary = {k: results[k] for k in ("method", "backbone", "n_train_images", "n_val_images", "best_val_loss",
                                           "best_epoch", "steps", "fit_seconds", "encoder_path")}
        click.echo(json.dumps(summary, indent=2))


@click.command("install-minkowski")
@click.option("--python", "python", default=sys.executable, show_default=True,
              help="Python of the environment to install into.")
def install_minkowski_cmd(python: str) -> None:
    """Build (once, cached under ~/.cache/semkit/wheels) and install MinkowskiEngine 0.5.4."""
    code = subprocess.call(["bash", str(INSTALL_SCRIPT), python])
    if code:
        raise click.ClickException(f"{INSTALL_SCRIPT.name} failed with exit code {code}")


commands = [pretrain_cmd, install_minkowski_cmd]
