from __future__ import annotations

import pytest

from movr.geo import PresetError, load_preset, parse_preset, preset_names


def test_every_packaged_preset_loads():
    assert {"gcp-3", "crdb-demo", "ycsb-3", "aws-eu-us"} <= set(preset_names())
    for name in preset_names():
        preset = load_preset(name)
        assert preset.primary_region in preset.regions
        for city in preset.cities:
            assert preset.region_of(city) in preset.regions


def test_aws_preset_has_48_cities_and_a_super_region():
    preset = load_preset("aws-eu-us")
    assert len(preset.cities) == 48
    assert preset.super_regions == {"europe": ("eu-central-1", "eu-west-3")}


def test_distance_model():
    preset = load_preset("gcp-3")
    assert preset.rtt_ms("us-east1", "europe-west1") == 93
    assert preset.rtt_ms("us-east1", "us-east1") == 0.5
    # Rome to Belgium is ~1,200 km: 2 * 1200 / 200 * 1.5 + 2 ~ 20 ms.
    assert 15 < preset.client_rtt_ms("rome", "europe-west1") < 25
    assert preset.nearest_regions("rome")[0] == "europe-west1"
    assert preset.nearest_regions("seattle")[0] == "us-west1"


def test_user_written_preset_file(tmp_path):
    path = tmp_path / "two.toml"
    path.write_text(
        'name = "two"\nprimary_region = "a"\n[regions.a]\nlocation = [0, 0]\ncities = ["x"]\n'
        '[regions.b]\nlocation = [0, 10]\ncities = ["y"]\n[rtt_ms]\n"a|b" = 42\n'
        '[cities]\n"x" = [0, 1]\n"y" = [0, 9]\n'
    )
    preset = load_preset(path)
    assert preset.rtt_ms("b", "a") == 42 and preset.region_of("y") == "b"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"primary_region": "a", "regions": {"a": {"location": [0, 0], "cities": []}}}, "no cities"),
        (
            {
                "primary_region": "a",
                "regions": {"a": {"location": [0, 0], "cities": ["x"]}, "b": {"location": [0, 0], "cities": ["x"]}},
            },
            "both",
        ),
        ({"primary_region": "z", "regions": {"a": {"location": [0, 0], "cities": ["x"]}}}, "primary_region"),
    ],
)
def test_bad_presets_are_refused_with_reasons(data, message):
    with pytest.raises(PresetError, match=message):
        parse_preset(data, "test")


def test_unknown_preset_name():
    with pytest.raises(PresetError, match="known"):
        load_preset("nowhere")
