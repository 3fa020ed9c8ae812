"""`movr deploy`: render the deploy kit from the placement spec.

    movr deploy render --target k8s [--preset P | --spec FILE] --image IMAGE --out DIR

The spec options are `movr db`'s own, so the database and the deployment come from the same spec. Bad
input (an unknown preset, an empty or invalid image name, an --out that is a file) exits with status 2
and one line, before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from movr.cli_support import CliError, cli_errors
from movr.deploy.image import ImageError
from movr.deploy.render import GATEWAY_DIR, DeployError, render_kit, write_kit
from movr.placement.cli import spec_from_options, spec_options

TARGETS = ("k8s",)


@click.group("deploy")
def deploy_group() -> None:
    """Render what production needs: the app image, per-region manifests, the global load balancer."""


@deploy_group.command("render")
@click.option("--target", type=click.Choice(TARGETS), default="k8s", show_default=True, help="Kubernetes (GKE).")
@spec_options
@click.option("--image", help="The app image the clusters pull, e.g. us-docker.pkg.dev/PROJECT/movr/movr:0.1.0.")
@click.option("--out", type=click.Path(path_type=Path), help="Directory to write (created if missing).")
def render_command(target: str, image: str | None, out: Path | None, **options: Any) -> None:
    """Write a Containerfile, Kubernetes manifests per region and the global load balancer for the spec."""
    spec = spec_from_options(**options)  # `movr db`'s own reading of the spec options (exit 2 with the reason)
    if out is None:
        raise CliError("--out is required: the directory to write the kit to")
    with cli_errors(ImageError, DeployError):
        files = render_kit(spec, image)
        write_kit(files, out)
    regions = ", ".join(spec.regions)
    click.echo(
        f"wrote {len(files)} files to {out}: Containerfile, manifests for {regions}, "
        f"and the global load balancer in {GATEWAY_DIR}/ (see docs/deploy.md)"
    )
