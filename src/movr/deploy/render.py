"""The deploy kit of a placement spec, as files: a Containerfile, one directory of manifests per region of
the spec, and one for the global load balancer. Rendering reads nothing but the preset's TOML (spec in,
{path: text} out); writing is all or nothing for a new directory, one atomic replace per file for an
existing one.

    DIR/Containerfile
    DIR/<region>/00-namespace.yaml ... 60-horizontalpodautoscaler.yaml    one per region of the spec
    DIR/gateway/00-namespace.yaml ... 40-healthcheckpolicy.yaml           the fleet's config cluster
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from movr.deploy.containerfile import render_containerfile
from movr.deploy.image import check_image
from movr.deploy.manifests import (
    CONFIG_DIR,
    PRESET_FILE,
    SPEC_FILE,
    Manifest,
    gateway_manifests,
    region_manifests,
)
from movr.geo import Preset
from movr.placement.spec import PlacementSpec

CONTAINERFILE = "Containerfile"
GATEWAY_DIR = "gateway"
# A region names a directory and a label value: at most 63 characters, alphanumeric at both ends.
_LABEL_VALUE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")


class DeployError(ValueError):
    """A kit that cannot be rendered or written; the message is one line that says why."""


def render_kit(spec: PlacementSpec, image: str | None) -> dict[str, str]:
    """Every file of the kit for `spec`, running `image`: relative POSIX path -> text."""
    image = check_image(image)
    for region in spec.regions:
        if not _LABEL_VALUE.fullmatch(region):
            raise DeployError(f"region name {region!r} cannot be a Kubernetes label value (63 characters at most)")
        if region == GATEWAY_DIR:
            raise DeployError(f"a region named {GATEWAY_DIR!r} would share its directory with the load balancer")
    config = {PRESET_FILE: preset_text(spec.preset), SPEC_FILE: spec_toml(spec)}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    source = f"preset {spec.preset.name}" + (f" and spec {spec.source}" if spec.source != "defaults" else "")
    files = {CONTAINERFILE: render_containerfile(source)}
    for region in spec.regions:
        files.update(_as_files(region, region_manifests(region, image, config, digest), source))
    files.update(_as_files(GATEWAY_DIR, gateway_manifests(), source))
    return files


def _as_files(folder: str, manifests: list[Manifest], source: str) -> dict[str, str]:
    where = "the global load balancer (apply to the config cluster)" if folder == GATEWAY_DIR else f"region {folder}"
    header = (
        f"# {where}: rendered by `movr deploy render` from {source}.\n"
        "# Change the spec or the options and render again, rather than editing this file.\n"
    )
    return {f"{folder}/{m.filename}": header + to_yaml(m.document) for m in manifests}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the TOML files in the ConfigMap) as literal blocks, readable as the files are;
    no anchors and aliases, which some tools that read manifests do not follow."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(document: Mapping[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def preset_text(preset: Preset) -> str:
    """The TOML the preset was read from (a packaged preset or the user's file), for the ConfigMap."""
    if preset.source.startswith("preset:"):
        resource = resources.files("movr.geo") / "presets" / f"{preset.source.removeprefix('preset:')}.toml"
        return resource.read_text()
    try:
        return Path(preset.source).read_text()
    except OSError as err:
        raise DeployError(f"cannot read preset {preset.name} from {preset.source!r}: {err.strerror or err}") from None


def spec_toml(spec: PlacementSpec) -> str:
    """The spec as a spec file (`movr db render --spec` reads it back to the same spec).

    A packaged preset is named; a preset file is the ConfigMap's own copy, where the pods mount it."""
    packaged = spec.preset.source.startswith("preset:")
    lines = [
        "# The placement spec this deployment was rendered from (`movr deploy render`); the database was",
        "# initialized from the same spec (`movr db init`).",
        f"preset = {_toml(spec.preset.name if packaged else f'{CONFIG_DIR}/{PRESET_FILE}')}",
        f"database = {_toml(spec.database)}",
        f"primary_region = {_toml(spec.primary_region)}",
        f"survival = {_toml(spec.survival)}",
        f"placement_restricted = {_toml(spec.placement_restricted)}",
        f"region_name_template = {_toml(spec.region_name_template)}",
        f"cockroach_version = {_toml(spec.cockroach_version)}",
    ]
    if not spec.super_regions:
        lines.append("super_regions = {}")
    else:
        lines += ["", "[super_regions]"]
        lines += [f"{_key(name)} = {_toml(list(members))}" for name, members in spec.super_regions.items()]
    if spec.super_region_survival:
        lines += ["", "[super_region_survival]"]
        lines += [f"{_key(name)} = {_toml(goal)}" for name, goal in spec.super_region_survival.items()]
    for name, table in spec.tables.items():
        lines += ["", f"[tables.{_key(name)}]", f"locality = {_toml(table.locality)}"]
        lines.append(f"region_source = {_toml(table.region_source)}")
        if table.region is not None:
            lines.append(f"region = {_toml(table.region)}")
    return "\n".join(lines) + "\n"


def _key(name: str) -> str:
    """A TOML key: bare when TOML allows it (a super region may be named `eu.west`, which must be quoted)."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _toml(name)


def _toml(value: Any) -> str:
    """A TOML value: strings as basic strings (JSON's escapes are TOML's), booleans, lists of strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


# --- writing -----------------------------------------------------------------------------------------------


def write_kit(files: Mapping[str, str], out: Path) -> None:
    """Write `files` under `out`: a new directory appears whole or not at all; in an existing one each file
    is replaced atomically (other files there are left alone). Everything is checked before the first write."""
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise DeployError(f"--out {out} is a file; give a directory (it is created if missing)")
    for relative in files:
        target = out / relative
        if target.is_dir():
            raise DeployError(f"cannot write {target}: a directory is in the way")
        for parent in target.relative_to(out).parents:
            if (out / parent).exists() and not (out / parent).is_dir():
                raise DeployError(f"cannot write {target}: {out / parent} is a file")
    staging = out.with_name(f".{out.name}.rendering-{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        if not out.exists():
            staging.rename(out)
            return
        for relative in files:
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / relative, out / relative)
    except OSError as err:
        raise DeployError(f"cannot write {out}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
