"""The single command-line entry point: ``semkit <command>``.

Commands live in one module per area (``semkit/cli/<area>.py``), each exposing a ``commands`` list. This module
only names them: a command's module (and with it torch, Lightning and the rest) is imported when that command
runs, so ``semkit predict`` does not pay for importing the pretraining stack (``semkit --help`` imports them
all to show their help lines).
"""

from __future__ import annotations

import importlib

import click

from semkit import __version__

#: Command name → the module of ``semkit.cli`` that defines it, in the order ``semkit --help`` lists them.
COMMANDS: dict[str, str] = {
    "data": "data", "curate": "curate", "pretrain": "ssl", "install-minkowski": "ssl", "finetune": "train",
    "finetune-semantic": "train", "compare": "train", "evaluate": "evaluate", "predict": "predict",
    "stem-box": "stem", "batch": "batch", "bench": "bench", "demo": "demo",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported from :data:`COMMANDS` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        for command in importlib.import_module(f"semkit.cli.{module}").commands:
            if command.name == cmd_name:
                return command
        raise RuntimeError(f"semkit.cli.{module} defines no command {cmd_name!r}")  # a wrong COMMANDS entry


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="semkit")
def main() -> None:
    """semkit: self-supervised learning and particle segmentation for electron-microscopy images."""


if __name__ == "__main__":  # pragma: no cover
    main()
