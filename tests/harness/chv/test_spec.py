"""The spec checker itself: it must accept what CHV sends and reject what it must not."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.chv import spec

PROFILES = ["v51", "v52", "v53", "head"]


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_spec_loads_with_vm_info(profile: str) -> None:
    doc = spec.load_spec(profile)
    assert "/vm.info" in doc["paths"]
    assert "get" in doc["paths"]["/vm.info"]


def test_add_disk_exchange_accepted() -> None:
    spec.check_exchange(
        "v53",
        "PUT",
        "/api/v1/vm.add-disk",
        {"path": "/img", "pci_segment": 0, "pci_device_id": 5, "id": "vdb"},
        200,
        {"id": "vdb", "bdf": "0000:00:05.0"},
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"path": "/img", "pci_device_id": 256}, "uint8"),
        ({"path": "/img", "pci_device_id": -1}, "uint8"),
        ({"path": 7}, "not of type 'string'"),
        ({"path": "/img", "readonly": "yes"}, "not of type 'boolean'"),
    ],
)
def test_bad_request_body_is_a_violation(body: dict[str, object], fragment: str) -> None:
    with pytest.raises(spec.SpecViolation, match=fragment):
        spec.validate_request("v53", "PUT", "/api/v1/vm.add-disk", body)


def test_strict_mode_rejects_fields_the_release_does_not_know() -> None:
    body = {"path": "/img", "pci_device_id": 3}
    spec.validate_request("v51", "PUT", "vm.add-disk", body)  # CHV ignores unknown fields
    with pytest.raises(spec.SpecViolation, match="pci_device_id"):
        spec.validate_request("v51", "PUT", "vm.add-disk", body, strict=True)
    spec.validate_request("v52", "PUT", "vm.add-disk", body, strict=True)


def test_undocumented_success_status_is_a_violation() -> None:
    with pytest.raises(spec.SpecViolation, match="status not documented"):
        spec.validate_response("v53", "PUT", "/api/v1/vm.boot", 200, None)


def test_body_on_204_is_a_violation() -> None:
    with pytest.raises(spec.SpecViolation, match="no body"):
        spec.validate_response("v53", "PUT", "/api/v1/vm.boot", 204, {"x": 1})


def test_error_bodies_must_be_chv_arrays() -> None:
    spec.validate_response("v53", "PUT", "/api/v1/vm.boot", 500, ["Error from API", "x"])
    with pytest.raises(spec.SpecViolation, match="JSON array"):
        spec.validate_response("v53", "PUT", "/api/v1/vm.boot", 500, {"error": "x"})


def test_unknown_path_or_method_only_as_error() -> None:
    spec.check_exchange("v53", "GET", "/api/v1/vm.nothing", None, 404, ["Not Found"])
    with pytest.raises(spec.SpecViolation, match="path not in"):
        spec.check_exchange("v53", "GET", "/api/v1/vm.nothing", None, 200, {})
    with pytest.raises(spec.SpecViolation, match="method not in"):
        spec.check_exchange("v53", "GET", "/api/v1/vm.boot", None, 204, None)


def test_path_differences_between_releases() -> None:
    # every release routes /vm.nmi (the v51/v52 specs say /vmm.nmi; the source wins)
    for profile in PROFILES:
        spec.validate_request(profile, "PUT", "vm.nmi", None)
        with pytest.raises(spec.SpecViolation):
            spec.validate_request(profile, "PUT", "vmm.nmi", None)
    with pytest.raises(spec.SpecViolation):
        spec.validate_request("v51", "PUT", "vm.add-generic-vhost-user", {"socket": "s"})


def test_responses_may_carry_null_for_unset_optional_fields() -> None:
    info = {
        "config": {"payload": {"kernel": "k"}, "rng": {"src": "/dev/urandom", "id": None}},
        "state": "Running",
        "device_tree": {"__rng": {"id": "__rng", "pci_bdf": None, "children": []}},
    }
    spec.validate_response("v52", "GET", "vm.info", 200, info)
    info["state"] = "Exploded"
    with pytest.raises(spec.SpecViolation, match="state"):
        spec.validate_response("v52", "GET", "vm.info", 200, info)


def test_unknown_profile_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown CHV profile 'v9'"):
        spec.load_spec("v9")


def test_v51_malformed_image_type_enum_is_read_as_string_enum() -> None:
    # chv-openapi-v51.0.yaml declares `type: enum ["FixedVhd", "Qcow2", "Raw", "Vhdx"]`
    spec.validate_request("v51", "PUT", "vm.add-disk", {"path": "/a", "image_type": "Raw"})
    with pytest.raises(spec.SpecViolation, match="image_type"):
        spec.validate_request("v51", "PUT", "vm.add-disk", {"path": "/a", "image_type": "Zip"})


def test_vm_create_without_payload_is_a_valid_request() -> None:
    # VmConfig.payload is an Option in CHV's source; vm.boot is what fails
    spec.validate_request("v53", "PUT", "vm.create", {"cpus": {"boot_vcpus": 1, "max_vcpus": 1}})


def test_empty_400_is_a_chv_answer_but_empty_500_is_not() -> None:
    spec.validate_response("v53", "PUT", "vm.create", 400, None)
    with pytest.raises(spec.SpecViolation):
        spec.validate_response("v53", "PUT", "vm.create", 500, None)


def test_reference_dir_is_found_beside_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed copy (tox, pip) finds ../shared/reference from the checkout it runs in."""
    import fakechv.openapi as openapi

    ref = tmp_path / "shared" / "reference"
    ref.mkdir(parents=True)
    (ref / "chv-openapi-v53.0.yaml").write_text("openapi: 3.0.1\npaths: {}\n")
    (tmp_path / "main" / "sub").mkdir(parents=True)
    monkeypatch.delenv("CHV_REFERENCE_DIR", raising=False)
    monkeypatch.setattr(openapi, "__file__", str(tmp_path / "site" / "fakechv" / "openapi.py"))
    monkeypatch.chdir(tmp_path / "main" / "sub")
    assert openapi.reference_dir() == ref
    monkeypatch.setenv("CHV_REFERENCE_DIR", str(tmp_path / "elsewhere"))
    assert openapi.reference_dir() == tmp_path / "elsewhere"


def test_a_parsed_spec_is_kept_by_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spec is parsed once per content: a second read of the same bytes comes from the
    cache, an edited file is parsed afresh, a damaged cache entry is parsed again."""
    import yaml

    from fakechv import openapi

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = openapi._spec_file("v53")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_bytes(source.read_bytes())
    fresh = yaml.safe_load(source.read_text(encoding="utf-8"))
    assert openapi._parse(spec_file) == fresh
    (entry,) = (tmp_path / "cache" / "bdf-harness" / "specs").iterdir()
    first, second = openapi._parse(spec_file), openapi._parse(spec_file)
    assert first == second == fresh and first is not second  # each caller its own
    load = yaml.load
    monkeypatch.setattr(yaml, "load", lambda *a, **k: pytest.fail("parsed again"))
    assert openapi._parse(spec_file) == fresh
    monkeypatch.setattr(yaml, "load", load)
    spec_file.write_text(source.read_text(encoding="utf-8") + "\nx-edited: true\n")
    assert openapi._parse(spec_file) == {**fresh, "x-edited": True}
    entry.write_bytes(b"\x00damaged")
    spec_file.write_bytes(source.read_bytes())
    assert openapi._parse(spec_file) == fresh
