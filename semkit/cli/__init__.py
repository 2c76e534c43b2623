"""The single command-line entry point: ``semkit <command>``.

Commands live in one module per area (``semkit/cli/<area>.py``), each exposing a ``commands`` list; this
module only assembles them.
"""

from __future__ import annotations

import click

from semkit import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="semkit")
def main() -> None:
    """semkit: self-supervised learning and particle segmentation for electron-microscopy images."""


def _register() -> None:
    from semkit.cli import batch, bench, curate, data, demo, evaluate, predict, ssl, stem, train

    for module in (data, curate, ssl, train, evaluate, predict, stem, batch, bench, demo):
        for command in module.commands:
            main.add_command(command)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
