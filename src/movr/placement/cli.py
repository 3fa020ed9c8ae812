"""`movr db`: render the placement spec to CockroachDB DDL, and create MovR's schema on a database.

    movr db render --target cockroach [--spec FILE] [--preset NAME] [--survival zone|region]
                   [--no-super-regions] [--cockroach-version X.Y] [--output FILE]
    movr db init --url cockroachdb://... [--spec FILE] [--preset NAME] [...] [--drop]
    movr db init --url postgresql://... [--drop]

Bad input (an unknown preset, a spec the target version cannot run, a server that is not CockroachDB,
a region the cluster lacks) and an unreachable server end with exit status 2 and one line that says
what to do - never a traceback, and never a half-built database (see movr.placement.apply).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from movr.cli_support import CliError, cli_errors
from movr.placement.apply import InitError, init_cockroach, init_postgres
from movr.placement.cockroach import render_cockroach
from movr.placement.spec import (
    DEFAULT_COCKROACH_VERSION,
    DEFAULT_COCKROACH_VERSION_AS_OF,
    SURVIVALS,
    PlacementSpec,
    SpecError,
    load_spec,
)

TARGETS = ("cockroach",)


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
            help="Cluster region name template, e.g. 'gcp-{region}' (default per preset; '{region}' for crdb-demo).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def spec_from_options(
    spec_file: Path | None,
    preset: str | None,
    survival: str | None,
    primary_region: str | None,
    no_super_regions: bool,
    placement_restricted: bool | None,
    region_names: str | None,
    cockroach_version: str | None = None,
) -> PlacementSpec:
    with cli_errors(SpecError):
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


@click.group("db")
def db_group() -> None:
    """Render the placement spec to database DDL and create MovR's schema."""


@db_group.command("render")
@click.option("--target", type=click.Choice(TARGETS), default="cockroach", show_default=True)
@spec_options
@click.option(
    "--cockroach-version",
    default=None,
    help=f"Target CockroachDB version, e.g. 25.4 (default: the spec's, else {DEFAULT_COCKROACH_VERSION}, the newest"
    f" release as of {DEFAULT_COCKROACH_VERSION_AS_OF}).",
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
def render(target: str, output: Path | None, **options: Any) -> None:
    """Print dbinit.sql for the spec (CockroachDB multi-region DDL)."""
    with cli_errors(SpecError):
        script = render_cockroach(spec_from_options(**options))
    if output is None:
        click.echo(script, nl=False)
        return
    try:
        output.write_text(script)
    except OSError as err:
        raise CliError(f"cannot write {output}: {err.strerror or err}") from None
    click.echo(f"wrote {output} ({script.count(';' + chr(10))} statements)", err=True)


@db_group.command("init")
@click.option(
    "--url",
    required=True,
    envvar="MOVR_DATABASE_URL",
    help="cockroachdb://USER@HOST:26257/defaultdb (multi-region) or postgresql://USER@HOST/DB (one region).",
)
@spec_options
@click.option(
    "--drop", is_flag=True, help="Replace the database (CockroachDB) or MovR's tables (PostgreSQL); data is lost."
)
def init(url: str, drop: bool, **options: Any) -> None:
    """Create MovR's schema: the spec's multi-region DDL on CockroachDB, or the tables on a plain PostgreSQL.

    On CockroachDB it first asks the cluster its version (and renders for it), its regions and whether
    the database exists; whatever cannot be done is refused before the first statement.
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    with cli_errors(InitError):
        if scheme.startswith("cockroachdb"):
            spec = spec_from_options(**options)
            applied = init_cockroach(url, spec, drop=drop)
            click.echo(
                f"applied {applied.statements} statements for CockroachDB v{applied.version} (the cluster's"
                f" version): database {spec.database} at {applied.where}"
            )
        elif scheme.startswith("postgres"):
            _refuse_spec_options(options)
            created = init_postgres(url, drop=drop)
            kept = f"; kept {', '.join(created.kept)} (they existed)" if created.kept else ""
            click.echo(f"created MovR's tables at {created.where}: {', '.join(created.created) or 'none'}{kept}")
        else:
            raise CliError(
                "expected a cockroachdb:// URL (multi-region CockroachDB) or a postgresql:// URL (plain"
                f" PostgreSQL), not {scheme + '://' if scheme else repr(url)}"
            )


def _refuse_spec_options(options: dict[str, Any]) -> None:
    """A plain PostgreSQL is one region: an option that shapes a multi-region database would be ignored."""
    params = {param.name: param for param in click.get_current_context().command.params}
    given = [params[name].opts[0] for name, value in options.items() if value not in (None, False)]
    if given:
        them = "them" if len(given) > 1 else "it"
        raise CliError(
            f"{', '.join(given)} shape{'' if len(given) > 1 else 's'} a multi-region CockroachDB database;"
            f" a plain PostgreSQL is one region and gets MovR's tables without {them}: leave {them} out"
        )
