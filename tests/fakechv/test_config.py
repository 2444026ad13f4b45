"""VmConfig parsing (serde-style errors, defaults, unknown fields) and serialization."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fakechv.config import ConfigError, deserialize_bytes, serialize_config, validate
from fakechv.errors import ApiError
from fakechv.profiles import get_profile
from fakechv.snapshot import SnapshotError, read_snapshot, url_to_path, write_snapshot


def _de(profile: str, schema: str, text: str) -> dict[str, Any]:
    return deserialize_bytes(get_profile(profile), schema, text.encode())


#: flattened fields (PciDeviceCommonConfig) are checked after the closing brace
_BRACE = object()


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        (
            '{"path": "/a", "pci_device_id": 300}',
            "invalid value: integer `300`, expected u8",
            _BRACE,
        ),
        ('{"path": "/a", "pci_device_id": -1}', "invalid value: integer `-1`, expected u8", _BRACE),
        (
            '{"path": "/a", "pci_segment": 70000}',
            "invalid value: integer `70000`, expected u16",
            _BRACE,
        ),
        ('{"path": "/a", "pci_segment": null}', "invalid type: null, expected u16", _BRACE),
        (
            '{"path": "/a", "id": 1.5}',
            "invalid type: floating point `1.5`, expected a string",
            _BRACE,
        ),
        ('{"path": 5}', "invalid type: integer `5`, expected path string", 10),
        ('{"path": "/a", "serial": 5}', "invalid type: integer `5`, expected a string", 26),
        ('{"path": "/a", "readonly": "yes"}', 'invalid type: string "yes", expected a boolean', 32),
        ('{"path": "/a", "path": "/b"}', "duplicate field `path`", 21),
    ],
)
def test_serde_type_errors_with_position(text: str, message: str, column: object) -> None:
    with pytest.raises(ConfigError) as exc:
        _de("v53", "DiskConfig", text)
    col = len(text) if column is _BRACE else column
    assert str(exc.value) == f"{message} at line 1 column {col}"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "EOF while parsing a value at line 1 column 0"),
        (b"{} x", "trailing characters at line 1 column 4"),
        (b"x", "expected value at line 1 column 1"),
        (b'{"payload":{"kernel":"\\ud800"}}', "unexpected end of hex escape at line 1 column 29"),
        (
            b'{"payload":{"kernel":"\\udc00"}}',
            "lone leading surrogate in hex escape at line 1 column 28",
        ),
        (
            b'{"cpus":{"boot_vcpus":' + b"9" * 5000 + b"}}",
            "number out of range at line 1 column 5022",
        ),
        (
            b'{"cpus":{"boot_vcpus":99999999999999999999}}',
            "invalid type: floating point `1e+20`, expected u32 at line 1 column 42",
        ),
        (
            b'{"memory":{"size":-0}}',
            "invalid type: floating point `-0.0`, expected u64 at line 1 column 20",
        ),
        (b"[" * 200 + b"]" * 200, "invalid type: sequence, expected u32 at line 1 column 2"),
        (b'{"x":' + b"[" * 10000 + b"]" * 10000 + b"}", None),  # unknown keys: no depth limit
        (b'{"a":' * 200 + b"1" + b"}" * 200, None),
        (
            b'{"payload":' + b"[" * 130 + b"]" * 130 + b"}",
            "invalid type: sequence, expected path string at line 1 column 12",
        ),
        (b'{"a":1,}', "trailing comma at line 1 column 8"),
        (b'{"cpus":{"boot_vcpus":01}}', "invalid number at line 1 column 24"),
        (b'{"payload":{"kernel":"\xff"}}', "invalid unicode code point at line 1 column 24"),
    ],
)
def test_bad_json_gets_serdes_message(body: bytes, message: str | None) -> None:
    """Messages and columns as CHV v53.0 answers them (seen on the real binary)."""
    if message is None:
        _de_bytes(body)
        return
    with pytest.raises(ConfigError) as exc:
        _de_bytes(body)
    assert str(exc.value) == message


def _de_bytes(body: bytes) -> dict[str, Any]:
    return deserialize_bytes(get_profile("v53"), "VmConfig", body)


def test_unknown_fields_ignored_and_defaults_filled() -> None:
    disk = _de("v53", "DiskConfig", '{"path": "/a", "bogus": 1}')
    assert "bogus" not in disk
    assert disk["pci_segment"] == 0 and disk["num_queues"] == 1 and disk["readonly"] is False
    v51 = _de("v51", "DiskConfig", '{"path": "/a", "pci_device_id": 4}')
    assert "pci_device_id" not in v51


def test_enum_and_missing_field() -> None:
    with pytest.raises(ConfigError, match=r"unknown variant `Loud`, expected one of `Off`"):
        _de("v53", "VmConfig", '{"console": {"mode": "Loud"}}')
    with pytest.raises(ConfigError, match="missing field `src`"):
        _de("v53", "VmConfig", '{"rng": {}}')
    cfg = _de("v53", "VmConfig", "{}")  # payload is Option<PayloadConfig> in the source
    assert "payload" not in cfg
    assert cfg["rng"] == {"src": "/dev/urandom", "pci_segment": 0, "iommu": False}


def test_serialization_null_vs_omitted() -> None:
    for name, nulls in [("v52", True), ("v53", False)]:
        p = get_profile(name)
        cfg = _de(name, "VmConfig", '{"payload": {"kernel": "/k"}, "disks": [{"path": "/a"}]}')
        out = serialize_config(p, cfg)
        assert ("devices" in out) is nulls and out.get("devices") is None
        assert "iommu" not in out["disks"][0]  # skip_serializing_if false, v52+
        assert out["disks"][0]["pci_segment"] == 0
    out = serialize_config(
        get_profile("v51"), _de("v51", "VmConfig", '{"disks": [{"path": "/a"}]}')
    )
    assert out["disks"][0]["iommu"] is False


def test_validate_order_and_messages() -> None:
    p = get_profile("v53")
    cfg = _de(
        "v53",
        "VmConfig",
        json.dumps(
            {
                "payload": {"kernel": "/k"},
                "disks": [{"path": "/a", "id": "x"}],
                "net": [{"id": "x", "pci_device_id": 40}],
            }
        ),
    )
    with pytest.raises(ApiError) as exc:
        validate(p, cfg)
    # net's pci_common is checked before its identifier
    assert exc.value.messages == [
        "Failed to validate config",
        "Given PCI device ID (40) is out of the supported range of 0..32",
    ]
    cfg["net"][0]["pci_device_id"] = 5
    with pytest.raises(ApiError) as exc:
        validate(p, cfg)
    assert exc.value.messages[-1] == "Identifier x is not unique"
    cfg["net"][0]["id"] = "y"
    assert validate(p, cfg) == {"x", "y"}


def test_snapshot_files_round_trip(tmp_path: Path) -> None:
    url = f"file://{tmp_path}"
    write_snapshot(url, {"a": 1}, {"device_id_cnt": 3})
    assert read_snapshot(url) == ({"a": 1}, {"device_id_cnt": 3})
    assert url_to_path(url) == tmp_path
    (tmp_path / "state.json").write_text("[1]")
    with pytest.raises(SnapshotError, match="expected a JSON object"):
        read_snapshot(url)
    with pytest.raises(SnapshotError, match="Could not extract path from URL: /x"):
        url_to_path("/x")


def test_writing_vm_info_again_and_again_keeps_no_more_state() -> None:
    """Each vm.info writes the config: the writers are made once, however many are asked."""
    from fakechv.configtypes import model

    types = model("v53")
    config = {"cpus": {"boot_vcpus": 1}, "disks": [{"path": "/a"}], "payload": {"kernel": "/k"}}
    first = types.write("VmConfig", config)
    made = len(types._writers)
    for _ in range(50):
        assert types.write("VmConfig", config) == first
    assert len(types._writers) == made


def test_a_body_read_again_gives_an_equal_value_of_its_own() -> None:
    """A body read before is not read again: the caller gets a copy it may change."""
    body = '{"path": "/a", "pci_segment": 1, "rate_limiter_config": null}'
    first = _de("v53", "DiskConfig", body)
    first["path"] = "/changed"
    first["pci_segment"] = 7
    second = _de("v53", "DiskConfig", body)
    assert second == _de("v53", "DiskConfig", body)
    assert second["path"] == "/a" and second["pci_segment"] == 1
    # the same bytes for another release are read by that release's rules
    explicit = '{"path": "/a", "pci_device_id": 5}'
    assert _de("v53", "DiskConfig", explicit)["pci_device_id"] == 5
    assert "pci_device_id" not in _de("v51", "DiskConfig", explicit)  # v51 drops it


def test_a_refused_body_read_again_is_refused_again() -> None:
    body = '{"path": "/a", "pci_device_id": 300}'
    for _ in range(3):
        with pytest.raises(ConfigError, match="expected u8"):
            _de("v53", "DiskConfig", body)


def test_a_default_drawn_at_random_is_drawn_again_for_each_request() -> None:
    """CHV draws a net's MAC when the body has none (``default_netconfig_mac``): the
    same body twice gives two MACs, as it does on the real binary."""
    macs = {_de("v53", "NetConfig", '{"tap": "t"}')["mac"] for _ in range(4)}
    assert len(macs) == 4


def test_a_stale_kept_reading_is_caught_in_verify_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    import fakechv.config as config

    body = b'{"path": "/stale"}'
    deserialize_bytes(get_profile("v53"), "DiskConfig", body)
    key = (get_profile("v53").config_types, "DiskConfig", body)
    kept = config._READ[key]
    assert isinstance(kept, dict)
    monkeypatch.setitem(config._READ, key, {**kept, "path": "/other"})
    monkeypatch.setenv("FAKECHV_VERIFY_CACHES", "1")
    with pytest.raises(AssertionError, match="stale"):
        deserialize_bytes(get_profile("v53"), "DiskConfig", body)
    monkeypatch.setenv("FAKECHV_VERIFY_CACHES", "0")
    assert deserialize_bytes(get_profile("v53"), "DiskConfig", body)["path"] == "/other"


def test_a_config_written_again_gives_an_equal_value_of_its_own() -> None:
    """vm.info's config is written once per content and release: each caller its own."""
    from fakechv.config import serialize_config

    config = {"cpus": {"boot_vcpus": 1}, "disks": [{"path": "/w", "id": "d0"}]}
    first = serialize_config(get_profile("v53"), config)
    first["disks"][0]["path"] = "/changed"
    second = serialize_config(get_profile("v53"), config)
    assert second["disks"][0]["path"] == "/w" and second is not first
    assert second == serialize_config(get_profile("v53"), dict(config))
    # the same values for another release are written by that release's rules
    v52 = serialize_config(get_profile("v52"), config)
    assert None in v52["disks"][0].values() and None not in second["disks"][0].values()


def test_a_stale_kept_config_writing_is_caught_in_verify_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import marshal

    import fakechv.config as config

    value = {"cpus": {"boot_vcpus": 2}, "disks": [{"path": "/stale-w"}]}
    config.serialize_config(get_profile("v53"), value)
    key = (get_profile("v53").config_types, marshal.dumps(value))
    kept = config._WRITTEN[key]
    monkeypatch.setitem(config._WRITTEN, key, {**kept, "cpus": {"boot_vcpus": 9}})
    monkeypatch.setenv("FAKECHV_VERIFY_CACHES", "1")
    with pytest.raises(AssertionError, match="stale"):
        config.serialize_config(get_profile("v53"), value)
    monkeypatch.setenv("FAKECHV_VERIFY_CACHES", "0")
    assert config.serialize_config(get_profile("v53"), value)["cpus"] == {"boot_vcpus": 9}
