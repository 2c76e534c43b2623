"""``semkit data …``: list the registered public datasets and fetch them into ``data/``."""

from __future__ import annotations

import click

from semkit.data import registry as reg
from semkit.errors import InputError


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@click.group("data")
def data_group() -> None:
    """Public datasets: list them, fetch them (resumable, checksum-verified) into data/NAME/."""


@data_group.command("list")
@click.option("--dest", default="data", show_default=True, type=click.Path(file_okay=False),
              help="Folder holding the dataset folders (to tell which are fetched).")
def list_command(dest: str) -> None:
    """Table of registered datasets: name, title, download size, license, fetched?"""
    specs = reg.list_datasets()
    rows = [(s.name, _cut(s.title, 48), reg.format_size(s.size_bytes), _cut(s.license, 28),
             "yes" if reg.is_fetched(s.name, dest) else ("manual" if not s.files else "no")) for s in specs]
    header = ("NAME", "TITLE", "SIZE", "LICENSE", "FETCHED")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    click.echo(f"\nSIZE '?' = not published (the file is fetched unverified). Fetch with: semkit data fetch NAME "
               f"[--mirror PATH_OR_URL]. Data go to {dest}/NAME/.")


@data_group.command("fetch")
@click.argument("name")
@click.option("--dest", default="data", show_default=True, type=click.Path(file_okay=False),
              help="Parent folder; the dataset goes to DEST/NAME/.")
@click.option("--mirror", default=None,
              help=f"Mirror base (URL or local folder) holding MIRROR/NAME/FILENAME; default ${reg.MIRROR_ENV}.")
@click.option("--force", is_flag=True, help="Download and unpack again even if already fetched.")
@click.option("--timeout", default=reg.DEFAULT_TIMEOUT_S, show_default=True, type=float,
              help="Seconds allowed for connecting and for each read.")
@click.option("--keep-archives", is_flag=True, help="Keep verified archives after unpacking them.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def fetch_command(name: str, dest: str, mirror: str | None, force: bool, timeout: float, keep_archives: bool,
                  no_progress: bool) -> None:
    """Download, verify and unpack dataset NAME into DEST/NAME/ (see `semkit data list`)."""
    try:
        path = reg.fetch(name, dest=dest, mirror=mirror, force=force, timeout=timeout,
                         keep_archives=keep_archives, progress=not no_progress, log=lambda m: click.echo(m, err=True))
    except reg.UnknownDatasetError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    except (reg.FetchError, InputError) as exc:
        raise click.ClickException(str(exc)) from None
    spec = reg.get_dataset(name)
    click.echo(f"{path}  (read it with the '{spec.adapter}' layout; parts: "
               + ", ".join(f"{k}={v}" for k, v in spec.paths.items()) + ")")


commands = [data_group]
