"""``semkit finetune``: train a particle segmenter, tune its thresholds on validation, evaluate on test."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click


def _parse_value(text: str):
    """JSON when it parses (numbers, booleans, null, lists, dicts), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@click.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="A finetune_config.json (e.g. from an earlier run); --set values override it.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="A FinetuneConfig field, e.g. --set model=unet --set epochs=10 "
                   "--set 'maskrcnn={\"detections_per_img\": 200}'. Values are read as JSON when possible.")
@click.option("--out", "output_dir", type=click.Path(file_okay=False), help="Run folder (FinetuneConfig.output_dir).")
def finetune(config_file: str | None, settings: tuple[str, ...], output_dir: str | None) -> None:
    """Fine-tune Mask R-CNN / U-Net (or tune the classical pipeline) and write results.json.

    Without --config the FinetuneConfig defaults apply (synthetic data, convnextv2_atto Mask R-CNN with the
    uncertainty head). The fields and their meaning are those of semkit.train.FinetuneConfig.
    """
    from semkit.errors import InputError
    from semkit.train.finetune import FinetuneConfig
    from semkit.train.finetune import finetune as run_finetune

    values = json.loads(Path(config_file).read_text()) if config_file else {}
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    for item in settings:
        if "=" not in item:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        key, value = item.split("=", 1)
        if key not in known:
            raise click.BadParameter(f"unknown field {key!r}; fields: {', '.join(sorted(known))}",
                                     param_hint="--set")
        values[key] = _parse_value(value)
    if output_dir is not None:
        values["output_dir"] = output_dir
    try:
        config = FinetuneConfig(**values)
        results = run_finetune(config)
    except (InputError, KeyError, TypeError) as err:
        raise click.ClickException(str(err)) from err
    test = results.get("test", {})
    click.echo(f"{results.get('method')}: test AJI+ {test.get('aji_plus')} "
               f"(results in {Path(config.output_dir) / 'results.json'})")


commands = [finetune]

if __name__ == "__main__":  # pragma: no cover
    finetune()
