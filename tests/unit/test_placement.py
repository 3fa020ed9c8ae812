"""The placement spec: defaults per preset, the spec file, overrides, and every rule the validator knows."""

from __future__ import annotations

import dataclasses
import re
from importlib import resources
from pathlib import Path

import pytest

import movr.store.actions
from movr.geo import Region, load_preset, parse_preset
from movr.placement import PlacementSpec, SpecError, TablePlacement, load_spec, validate
from movr.placement.spec import (
    DEFAULT_COCKROACH_VERSION,
    DEFAULT_COCKROACH_VERSION_AS_OF,
    REHOMING_REFUSED_BECAUSE,
    REHOMING_TABLES,
    default_tables,
    settle_small_super_regions,
)

EXAMPLE = Path(str(resources.files("movr.placement") / "specs" / "example.toml"))


def two_region_preset():
    return parse_preset(
        {
            "name": "two",
            "primary_region": "a",
            "regions": {"a": {"location": [0, 0], "cities": ["x"]}, "b": {"location": [0, 1], "cities": ["y"]}},
            "rtt_ms": {"a|b": 10},
            "cities": {"x": [0, 0], "y": [0, 1]},
        },
        "two",
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


# --- defaults ------------------------------------------------------------------------------------------


def test_defaults_come_from_the_preset():
    spec = load_spec()
    assert spec.preset.name == "gcp-3"
    assert spec.primary_region == "us-east1"
    assert spec.survival == "zone"
    assert spec.super_regions == {}
    assert spec.placement_restricted is False
    assert spec.regions == ["us-east1", "us-west1", "europe-west1"]
    assert spec.tables == {
        "users": TablePlacement("users", "regional_by_row", "computed"),
        "vehicles": TablePlacement("vehicles", "regional_by_row", "computed"),
        "rides": TablePlacement("rides", "regional_by_row", "computed"),
        "idempotency_keys": TablePlacement("idempotency_keys", "regional_by_row", "computed"),
        "promo_codes": TablePlacement("promo_codes", "global"),
    }


@pytest.mark.parametrize(
    ("preset", "template"),
    [
        ("gcp-3", "gcp-{region}"),
        ("crdb-demo", "{region}"),  # the names `cockroach demo --global` gives its regions
        ("ycsb-3", "gcp-{region}"),
        ("aws-eu-us", "aws-{region}"),
    ],
)
def test_region_name_rule_per_preset(preset, template):
    spec = load_spec(preset)
    assert spec.region_name_template == template
    region = spec.regions[0]
    assert spec.cloud_region(region) == template.format(region=region)
    assert spec.preset_region(spec.cloud_region(region)) == region
    assert spec.preset_region(region) == region


def test_region_of_city_and_cloud_names():
    spec = load_spec("aws-eu-us")
    assert spec.region_of("rome") == "eu-west-3"
    assert spec.region_of("stockholm") == "eu-central-1"
    assert spec.region_of("boston") == "us-east-2"
    assert spec.cloud_region("eu-west-3") == "aws-eu-west-3"
    with pytest.raises(SpecError):
        spec.preset_region("gcp-eu-west-3")


def test_allowed_regions_follow_super_regions_and_placement():
    spec = load_spec("aws-eu-us")
    assert spec.allowed_regions("eu-west-3") == ("eu-central-1", "eu-west-3")
    assert spec.allowed_regions("us-east-2") == ("eu-central-1", "eu-west-3", "us-east-2")
    assert spec.super_region_of("eu-central-1") == "europe"
    assert spec.super_region_of("us-east-2") is None
    restricted = load_spec("aws-eu-us", placement_restricted=True)
    assert restricted.allowed_regions("eu-west-3") == ("eu-west-3",)
    assert load_spec("aws-eu-us", super_regions=False).allowed_regions("eu-west-3") == tuple(spec.regions)


# --- the super region rule -----------------------------------------------------------------------------


def test_region_survival_gives_a_small_super_region_an_explicit_zone_goal():
    spec = load_spec("aws-eu-us", survival="region")
    assert spec.survival == "region"
    assert spec.super_region_survival == {"europe": "zone"}
    assert spec.survival_of("eu-west-3") == "zone"
    assert spec.survival_of("us-east-2") == "region"


def test_zone_survival_needs_no_explicit_goal():
    spec = load_spec("aws-eu-us")
    assert spec.super_region_survival == {}
    assert spec.survival_of("eu-west-3") == "zone"


def test_the_explicit_zone_goal_does_not_depend_on_the_cockroach_version():
    # The lab realizes it on any version; the CockroachDB renderer refuses it for a target before v26.3
    # (tests/unit/test_cockroach_render.py), before any statement.
    spec = load_spec("aws-eu-us", survival="region", cockroach_version="25.4")
    assert spec.super_region_survival == {"europe": "zone"} and spec.cockroach_version == "25.4"


def test_region_survival_without_super_regions_is_fine():
    spec = load_spec("aws-eu-us", survival="region", super_regions=False)
    assert spec.super_regions == {} and spec.super_region_survival == {}


def test_explicit_region_goal_on_a_small_super_region_is_refused():
    spec = load_spec("aws-eu-us")
    with pytest.raises(SpecError, match="asks survival 'region'"):
        spec.with_changes(super_region_survival={"europe": "region"})


def test_validator_refuses_a_small_super_region_that_inherits_region_survival():
    spec = load_spec("aws-eu-us")
    with pytest.raises(SpecError, match="inherits survival 'region'"):
        spec.with_changes(survival="region")
    assert settle_small_super_regions(dataclasses.replace(spec, survival="region")).super_region_survival == {
        "europe": "zone"
    }


# --- the other rules -----------------------------------------------------------------------------------


def test_region_survival_needs_three_regions():
    spec = load_spec(two_region_preset())
    assert spec.regions == ["a", "b"]
    with pytest.raises(SpecError, match="at least 3 regions"):
        spec.with_changes(survival="region")


def test_placement_restricted_needs_zone_survival():
    with pytest.raises(SpecError, match="PLACEMENT RESTRICTED is only available with the zone survival goal"):
        load_spec("gcp-3", survival="region", placement_restricted=True)
    assert load_spec("gcp-3", placement_restricted=True).placement_restricted


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"primary_region": "mars-1"}, "unknown primary region 'mars-1'"),
        ({"super_regions": {"x": ("us-east1", "mars-1")}}, "super region x names unknown region 'mars-1'"),
        ({"super_regions": {"x": ("us-east1",), "y": ("us-east1",)}}, "in both x and y"),
        ({"super_regions": {"x": ("us-east1", "us-east1")}}, "twice"),
        ({"super_regions": {"x": ()}}, "super region x has no regions"),
        ({"super_region_survival": {"nope": "zone"}}, "unknown super region 'nope'"),
        ({"survival": "planet"}, "survival must be one of"),
        ({"region_name_template": "gcp-"}, "must contain {region}"),
        ({"region_name_template": "{region}-{zone}"}, "must contain {region}"),
        ({"region_name_template": 'x"{region}'}, "not a valid region name"),
        ({"database": "Movr-DB"}, "lower-case SQL identifier"),
        ({"cockroach_version": "latest"}, "not MAJOR.MINOR"),
    ],
)
def test_validator_rules(changes, message):
    with pytest.raises(SpecError, match=message.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")):
        load_spec().with_changes(**changes)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (TablePlacement("users", "sharded"), "unknown locality 'sharded'"),  # type: ignore[arg-type]
        (TablePlacement("users", "regional_by_row", "random"), "unknown region_source 'random'"),  # type: ignore[arg-type]
        (TablePlacement("users", "regional_by_table", region="mars-1"), "names unknown region 'mars-1'"),
        (TablePlacement("users", "global", region="us-east1"), "applies to regional_by_table only"),
        (TablePlacement("promo_codes", "regional_by_row", "computed"), "needs a city column"),
    ],
)
def test_table_rules(table, message):
    spec = load_spec()
    with pytest.raises(SpecError, match=message):
        spec.with_changes(tables={**spec.tables, table.table: table})


def test_auto_rehoming_is_not_offered_on_users():
    spec = load_spec()
    with pytest.raises(SpecError, match=r"table users: auto-rehoming is not offered here: no action changes a user's"):
        spec.with_changes(tables={**spec.tables, "users": TablePlacement("users", "regional_by_row", "rehoming")})
    for table in ("vehicles", "rides"):
        placement = TablePlacement(table, "regional_by_row", "rehoming")
        assert spec.with_changes(tables={**spec.tables, table: placement}).tables[table] == placement


def test_rehoming_is_offered_where_actions_update_and_no_action_moves_a_user():
    """Read from the actions' SQL: rehoming fires only on updated tables, and no UPDATE of users changes
    its home (city); an action that did would be the time to offer rehoming on users again."""
    source = "\n".join(path.read_text() for path in sorted(Path(movr.store.actions.__file__).parent.glob("*.py")))
    updated = set(re.findall(r"\bUPDATE\s+(\w+)\s+SET\b", source))
    assert updated >= REHOMING_TABLES
    users_updates = re.findall(r"\bUPDATE\s+users\s+SET\b(.*?)\bWHERE\b", source, re.DOTALL)
    assigned = {column for body in users_updates for column in re.findall(r"(\w+)\s*=(?!=)", body)}
    assert "city" not in assigned and "id" not in assigned
    assert "users" in REHOMING_REFUSED_BECAUSE


def test_the_offline_default_target_is_a_released_version():
    # cockroachdb/docs src/current/_data/versions.csv (snapshot 2026-06-12): v26.2 released 2026-04-27,
    # v26.3 without a release date.
    assert DEFAULT_COCKROACH_VERSION == "26.2" and DEFAULT_COCKROACH_VERSION_AS_OF == "2026-06-12"
    assert load_spec().cockroach_version == "26.2"


def test_every_table_needs_a_placement_and_only_known_tables():
    spec = load_spec()
    tables = dict(spec.tables)
    del tables["rides"]
    with pytest.raises(SpecError, match="no placement for table"):
        spec.with_changes(tables=tables)
    with pytest.raises(SpecError, match="unknown table 'trips'"):
        spec.with_changes(tables={**spec.tables, "trips": TablePlacement("trips", "global")})


def test_empty_region_and_city_in_two_regions():
    spec = load_spec()
    preset = spec.preset
    empty = dataclasses.replace(preset, regions={**preset.regions, "us-west1": Region("us-west1", (0, 0), ())})
    with pytest.raises(SpecError, match="region us-west1 is empty"):
        validate(dataclasses.replace(spec, preset=empty))
    doubled = dataclasses.replace(
        preset, regions={**preset.regions, "us-west1": Region("us-west1", (0, 0), ("seattle", "rome"))}
    )
    with pytest.raises(SpecError, match="city 'rome' is in two regions"):
        validate(dataclasses.replace(spec, preset=doubled))


def test_with_changes_returns_a_validated_copy():
    spec = load_spec()
    changed = spec.with_changes(primary_region="europe-west1")
    assert changed.primary_region == "europe-west1" and spec.primary_region == "us-east1"
    assert isinstance(changed, PlacementSpec)


# --- spec files ----------------------------------------------------------------------------------------


def test_the_example_spec_loads():
    spec = load_spec(None, EXAMPLE)
    assert spec.preset.name == "aws-eu-us"
    assert spec.survival == "region"
    assert spec.super_region_survival == {"europe": "zone"}
    assert spec.tables == default_tables()
    assert spec.source == str(EXAMPLE)


def test_spec_file_sets_tables_and_overrides_win(tmp_path):
    path = write(
        tmp_path,
        """
preset = "gcp-3"
survival = "region"
[tables.users]
region_source = "default"
[tables.rides]
region_source = "rehoming"
[tables.vehicles]
locality = "regional_by_table"
region = "us-west1"
""",
    )
    spec = load_spec(None, path, survival="zone", primary_region="europe-west1")
    assert spec.survival == "zone" and spec.primary_region == "europe-west1"
    assert spec.tables["users"] == TablePlacement("users", "regional_by_row", "default")
    assert spec.tables["vehicles"] == TablePlacement("vehicles", "regional_by_table", "computed", "us-west1")
    assert spec.tables["rides"] == TablePlacement("rides", "regional_by_row", "rehoming")


def test_spec_file_super_regions_replace_the_presets(tmp_path):
    path = write(tmp_path, 'preset = "gcp-3"\n[super_regions]\nusa = ["us-east1", "us-west1"]\n')
    assert load_spec(None, path).super_regions == {"usa": ("us-east1", "us-west1")}
    assert load_spec(None, path, super_regions=False).super_regions == {}
    path = write(tmp_path, 'preset = "aws-eu-us"\nsuper_regions = {}\n')
    assert load_spec(None, path).super_regions == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("surival = 'region'", "unknown key"),
        ("survival = ", "not valid TOML"),
        ("[tables.users]\nlocalty = 'global'", r"\[tables.users\] has unknown key"),
        ("[tables.trips]\nlocality = 'global'", "unknown table 'trips'"),
        ("[tables.users]\nlocality = 'everywhere'", "unknown locality 'everywhere'"),
        ("placement_restricted = 'yes'", "must be true or false"),
        ("[super_regions]\neu = 'europe-west1'", "must be a list of regions"),
        ("preset = 'atlantis'", "no preset named 'atlantis'"),
        ("super_region_survival = 'zone'", r"\[super_region_survival\] must be a table"),
        ("tables = ['users']", r"\[tables\] must be a table"),
    ],
)
def test_bad_spec_files(tmp_path, text, message):
    with pytest.raises(SpecError, match=message):
        load_spec(None, write(tmp_path, text))


def test_preset_argument_and_file_must_agree(tmp_path):
    path = write(tmp_path, 'preset = "aws-eu-us"\n')
    assert load_spec("gcp-3", path).preset.name == "aws-eu-us"  # the default gives way to the file
    with pytest.raises(SpecError, match="names preset 'aws-eu-us' but preset 'ycsb-3' was given"):
        load_spec("ycsb-3", path)
    with pytest.raises(SpecError, match="no spec file"):
        load_spec(None, tmp_path / "missing.toml")


def test_a_preset_object_is_accepted():
    preset = load_preset("ycsb-3")
    assert load_spec(preset).preset is preset
