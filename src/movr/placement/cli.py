"""`movr db`: render the placement spec to CockroachDB DDL, and apply it to a cluster.

    movr db render --target cockroach [--spec FILE] [--preset NAME] [--survival zone|region]
                   [--no-super-regions] [--output FILE]
    movr db init --url cockroachdb://... [--spec FILE] [--preset NAME] [...] [--drop]

Bad input (an unknown preset, a spec CockroachDB would refuse) and an unreachable cluster end with
exit status 2 and one line that says why - never a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from movr.placement.spec import SURVIVALS, PlacementSpec, SpecError, load_spec

TARGETS = ("cockroach",)


def _fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(2)


def spec_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that choose and adjust a placement spec, shared by render and init."""
    options = [
        click.option(
            "--spec", "spec_file", type=click.Path(path_type=Path), help="A placement spec TOML file (see docs)."
        ),
        click.option("--preset", default=None, help="Geo preset name or TOML file (default: the spec's, else gcp-3)."),
        click.option("--survival", type=click.Choice(SURVIVALS), default=None, help="Survival goal."),
        click.option("--primary-region", default=None, help="Primary region (a preset region name)."),
        click.option(
            "--no-super-regions", "no_super_regions", is_flag=True, help="Switch the preset's super regions off."
        ),
        click.option(
            "--placement-restricted/--placement-default",
            "placement_restricted",
            default=None,
            help="PLACEMENT RESTRICTED (zone survival only).",
        ),
        click.option(
            "--region-names",
            default=None,
            help="Cluster region name template, e.g. 'gcp-{region}', or '{region}' for `cockroach demo --global`.",
        ),
        click.option("--cockroach-version", default=None, help="Target CockroachDB version, e.g. 26.3."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _spec(
    spec_file: Path | None,
    preset: str | None,
    survival: str | None,
    primary_region: str | None,
    no_super_regions: bool,
    placement_restricted: bool | None,
    region_names: str | None,
    cockroach_version: str | None,
) -> PlacementSpec:
    try:
        return load_spec(
            preset,
            spec_file,
            survival=survival,  # type: ignore[arg-type]
            primary_region=primary_region,
            super_regions=False if no_super_regions else None,
            placement_restricted=placement_restricted,
            region_name_template=region_names,
            cockroach_version=cockroach_version,
        )
    except SpecError as err:
        _fail(str(err))


def _with_spec(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the spec options into one `spec` argument."""

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        names = (
            "spec_file",
            "preset",
            "survival",
            "primary_region",
            "no_super_regions",
            "placement_restricted",
            "region_names",
            "cockroach_version",
        )
        spec = _spec(*(kwargs.pop(name) for name in names))
        return command(spec=spec, **kwargs)

    return wrapper


@click.group("db")
def db_group() -> None:
    """Render the placement spec to database DDL and apply it."""


@db_group.command("render")
@click.option("--target", type=click.Choice(TARGETS), default="cockroach", show_default=True)
@spec_options
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
@_with_spec
def render(spec: PlacementSpec, target: str, output: Path | None) -> None:
    """Print dbinit.sql for the spec (CockroachDB multi-region DDL)."""
    from movr.placement.cockroach import render_cockroach

    try:
        script = render_cockroach(spec)
    except SpecError as err:
        _fail(str(err))
    if output is None:
        click.echo(script, nl=False)
        return
    try:
        output.write_text(script)
    except OSError as err:
        _fail(f"cannot write {output}: {err.strerror or err}")
    click.echo(f"wrote {output} ({script.count(';' + chr(10))} statements)", err=True)


@db_group.command("init")
@click.option("--url", required=True, envvar="MOVR_DATABASE_URL", help="cockroachdb://user@host:26257/...")
@spec_options
@click.option("--drop", is_flag=True, help="DROP DATABASE ... CASCADE first (all its data is lost).")
@_with_spec
def init(spec: PlacementSpec, url: str, drop: bool) -> None:
    """Apply dbinit.sql for the spec to a CockroachDB cluster."""
    from sqlalchemy.exc import SQLAlchemyError

    from movr.placement.cockroach import render_statements
    from movr.store.cockroach import apply_statements, one_line, redact
    from movr.store.factory import ConfigError

    try:
        statements = render_statements(spec)
        count = apply_statements(url, statements, drop_database=spec.database if drop else None)
    except SpecError as err:
        _fail(str(err))
    except ConfigError as err:
        _fail(str(err))
    except (SQLAlchemyError, OSError) as err:
        _fail(f"cannot initialize {spec.database} at {redact(url)}: {one_line(err)}")
    click.echo(f"applied {count} statements: database {spec.database} at {redact(url)}")
