"""PciAddress parsing, formatting and CHV validation (libvirt's and CHV's rules)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from harness.errors import AddressError, HarnessError
from harness.model.address import PciAddress, parse_uint, validate_for_chv

addresses = st.builds(
    PciAddress,
    domain=st.integers(0, 0xFFFF),
    bus=st.integers(0, 0xFF),
    slot=st.integers(0, 0x1F),
    function=st.integers(0, 7),
    multifunction=st.booleans(),
)


def attrs(**kw: str) -> dict[str, str]:
    return {"type": "pci", **kw}


# ----------------------------------------------------------- libvirt numbers
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", 5),
        ("31", 31),
        ("0x1f", 31),
        ("0X1F", 31),
        ("010", 8),
        ("0", 0),
        ("00", 0),
        (" 7", 7),
        ("\t7", 7),
        ("+3", 3),
        (" +0x10", 16),
        ("4294967295", 0xFFFFFFFF),
    ],
)
def test_parse_uint_accepts_libvirt_base0_numbers(text: str, expected: int) -> None:
    assert parse_uint(text) == expected


@pytest.mark.parametrize(
    "text", ["", " ", "-1", "-0", "1a", "5 ", "08", "0x", "0xg", "4294967296", "+", "x1", "1.0"]
)
def test_parse_uint_rejects(text: str) -> None:
    assert parse_uint(text) is None


def test_from_xml_attrs_number_forms() -> None:
    assert PciAddress.from_xml_attrs(attrs(slot="010")) == PciAddress(0, 0, 8)
    assert PciAddress.from_xml_attrs(attrs(slot=" 5")) == PciAddress(0, 0, 5)
    assert PciAddress.from_xml_attrs(attrs(slot="+5")) == PciAddress(0, 0, 5)
    assert PciAddress.from_xml_attrs(attrs(slot="0x1f", bus="2")) == PciAddress(0, 2, 31)
    assert PciAddress.from_xml_attrs(attrs(domain="1")) == PciAddress(1, 0, 0)


@pytest.mark.parametrize("value", ["-1", "5x", "0x", "", "4294967296", "08", "five"])
def test_from_xml_attrs_rejects_bad_numbers_with_libvirt_message(value: str) -> None:
    with pytest.raises(AddressError) as err:
        PciAddress.from_xml_attrs(attrs(slot=value))
    assert str(err.value) == (
        f"Invalid value for attribute 'slot' in element 'address': '{value}'. "
        "Expected non-negative integer value"
    )


def test_missing_numbers_default_to_zero() -> None:
    assert PciAddress.from_xml_attrs(attrs(slot="3")) == PciAddress(0, 0, 3, 0)


@pytest.mark.parametrize("function", ["0", "3", "9", "0x1f"])
def test_all_zero_is_no_address_whatever_the_function(function: str) -> None:
    assert (
        PciAddress.from_xml_attrs(attrs(domain="0", bus="0", slot="0", function=function)) is None
    )
    assert PciAddress.from_xml_attrs({"type": "pci"}) is None


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"bus": "0x100", "slot": "1"}, "Invalid PCI address bus='0x100', must be <= 0xFF"),
        ({"slot": "32"}, "Invalid PCI address slot='0x20', must be <= 0x1F"),
        ({"slot": "1", "function": "8"}, "Invalid PCI address function=0x8, must be <= 7"),
    ],
)
def test_range_errors_use_libvirt_messages(kw: dict[str, str], message: str) -> None:
    with pytest.raises(AddressError) as err:
        PciAddress.from_xml_attrs(attrs(**kw))
    assert str(err.value) == message


def test_context_prefixes_the_message() -> None:
    with pytest.raises(AddressError, match=r"^device 'disk vdb': Invalid PCI address slot"):
        PciAddress.from_xml_attrs(attrs(slot="0x40"), context="device 'disk vdb'")


def test_type_rules() -> None:
    with pytest.raises(AddressError, match="No type specified"):
        PciAddress.from_xml_attrs({"slot": "1"})
    with pytest.raises(AddressError, match="address type 'drive' is not supported"):
        PciAddress.from_xml_attrs({"type": "drive", "unit": "0"})
    with pytest.raises(AddressError, match="unknown address type 'bogus'"):
        PciAddress.from_xml_attrs({"type": "bogus"})


def test_multifunction_on_off_only() -> None:
    assert PciAddress.from_xml_attrs(attrs(slot="3", multifunction="on")) == PciAddress(
        0, 0, 3, 0, True
    )
    assert PciAddress.from_xml_attrs(attrs(slot="3", multifunction="off")) == PciAddress(0, 0, 3)
    with pytest.raises(AddressError) as err:
        PciAddress.from_xml_attrs(attrs(slot="3", multifunction="yes"))
    assert str(err.value) == (
        "Invalid value for attribute 'multifunction' in element 'address': 'yes'."
    )


def test_from_xml_element() -> None:
    element = etree.fromstring(
        "<address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>"
    )
    assert PciAddress.from_xml(element) == PciAddress(0, 0, 4)


# --------------------------------------------------------------------- virsh
def test_from_virsh_catalogue_forms() -> None:
    assert PciAddress.from_virsh("pci:0.0.1f.5") == PciAddress(0, 0, 0x1F, 5)
    assert PciAddress.from_virsh("pci:0.0.17.0") == PciAddress(0, 0, 0x17)
    assert PciAddress.from_virsh("pci:0.0.04.0") == PciAddress(0, 0, 4)
    # any one-character separator, 0x prefixes, trailing junk ignored (virsh's parser)
    assert PciAddress.from_virsh("pci:0000:00:0x0a/0zz") == PciAddress(0, 0, 10)


@pytest.mark.parametrize(
    "text", ["pci:0.0", "pci:0.0.1", "pci:0.0.1.", "ide:0.0.0", "0.0.1.0", "pci:0.-1.1.0", "pci:"]
)
def test_from_virsh_invalid(text: str) -> None:
    with pytest.raises(AddressError) as err:
        PciAddress.from_virsh(text)
    assert str(err.value).startswith("Invalid address.")
    assert text in str(err.value)


def test_from_virsh_out_of_range_slot_is_libvirt_range_error() -> None:
    with pytest.raises(AddressError, match=r"slot='0x20', must be <= 0x1F.*pci:0\.0\.20\.0"):
        PciAddress.from_virsh("pci:0.0.20.0")


# ----------------------------------------------------------------------- CHV
def test_chv_bdf() -> None:
    assert PciAddress.from_chv_bdf("0000:00:05.0") == PciAddress(0, 0, 5)
    assert PciAddress.from_chv_bdf("0002:00:1f.0") == PciAddress(2, 0, 31)
    assert PciAddress(2, 0, 31).to_chv_bdf() == "0002:00:1f.0"
    for bad in ("0000:00:05", "00:05.0", "0000:00:20.0", "0000:00:05.8", "zzzz:00:05.0", " "):
        with pytest.raises(AddressError, match="Invalid CHV PCI BDF"):
            PciAddress.from_chv_bdf(bad)


def test_from_chv_fields() -> None:
    assert PciAddress.from_chv(1, 7) == PciAddress(1, 0, 7)
    assert PciAddress.from_chv(1, 7).chv_fields() == (1, 7)
    with pytest.raises(AddressError, match="pci_device_id 32"):
        PciAddress.from_chv(0, 32)
    with pytest.raises(AddressError, match="pci_segment -1"):
        PciAddress.from_chv(-1, 3)


def test_constructor_enforces_ranges() -> None:
    with pytest.raises(AddressError):
        PciAddress(0, 0, 32)
    with pytest.raises(AddressError):
        PciAddress(0, -1, 3)
    with pytest.raises(AddressError):
        PciAddress(0, 0, 3, 8)


# ---------------------------------------------------------------- formatting
def test_formatting() -> None:
    addr = PciAddress(0, 0, 0x1F, 5)
    assert str(addr) == "0000:00:1f.5"
    assert addr.to_virsh() == "pci:0000.00.1f.5"
    assert addr.to_xml_attrs() == {
        "type": "pci",
        "domain": "0x0000",
        "bus": "0x00",
        "slot": "0x1f",
        "function": "0x5",
    }
    assert PciAddress(0, 0, 3, 0, True).to_xml_attrs()["multifunction"] == "on"


def test_ordering_is_by_domain_bus_slot() -> None:
    assert sorted([PciAddress(1, 0, 1), PciAddress(0, 0, 9), PciAddress(0, 0, 2)]) == [
        PciAddress(0, 0, 2),
        PciAddress(0, 0, 9),
        PciAddress(1, 0, 1),
    ]


@given(addresses)
def test_round_trip_xml(addr: PciAddress) -> None:
    parsed = PciAddress.from_xml_attrs(addr.to_xml_attrs())
    if addr.domain == addr.bus == addr.slot == 0:
        assert parsed is None
    else:
        assert parsed == addr


@given(addresses)
def test_round_trip_virsh_and_chv(addr: PciAddress) -> None:
    plain = PciAddress(addr.domain, addr.bus, addr.slot, addr.function)
    assert PciAddress.from_virsh(addr.to_virsh()) == plain
    assert PciAddress.from_chv_bdf(addr.to_chv_bdf()) == plain


@given(st.integers(0, 2**40))
def test_parse_uint_matches_python_for_decimal_hex_octal(n: int) -> None:
    expected = n if n <= 0xFFFFFFFF else None
    assert parse_uint(str(n)) == expected
    assert parse_uint(hex(n)) == expected
    assert parse_uint("0" + oct(n)[2:]) == expected


# --------------------------------------------------------- validate_for_chv
def test_validate_for_chv_accepts_slots_1_to_31() -> None:
    for slot in range(1, 32):
        validate_for_chv(PciAddress(0, 0, slot), segments=1, device="disk vdb")
    validate_for_chv(PciAddress(2, 0, 1), segments=3, device="disk vdb")


@pytest.mark.parametrize(
    ("addr", "segments", "rule"),
    [
        (PciAddress(1, 0, 3), 1, "only PCI domain 0 is available"),
        (PciAddress(3, 0, 3), 3, r"only PCI domains 0\.\.2 are available"),
        (PciAddress(0, 1, 3), 1, "only PCI bus 0 is available"),
        (PciAddress(0, 0, 0, 0), 1, "slot must be >= 1"),
        (PciAddress(0, 0, 0x1F, 5), 1, "function must be 0"),
        (PciAddress(0, 0, 3, 0, True), 1, "multifunction='on' is not supported"),
    ],
)
def test_validate_for_chv_rejects(addr: PciAddress, segments: int, rule: str) -> None:
    with pytest.raises(AddressError, match=rule) as err:
        validate_for_chv(addr, segments=segments, device="disk vdb")
    assert str(err.value).startswith(f"device 'disk vdb': PCI address {addr}")
    assert isinstance(err.value, HarnessError)


@pytest.mark.parametrize(
    ("release", "usable"), [("v52", False), ("v53", False), ("cyberus", False), ("head", True)]
)
def test_slot_0_of_a_second_segment_follows_the_release(release: str, usable: bool) -> None:
    """The host bridge is on every segment up to v53 and on segment 0 only at HEAD
    (chv-pci-rules.md sections 1 and 4): the driver's check takes the release's rule."""
    from harness.chv.capabilities import capabilities
    from harness.model.address import AddressError, PciAddress, validate_for_chv

    caps = capabilities(release)
    rule = {
        "segments": 2,
        "device": "vdb",
        "host_bridge_all_segments": caps.host_bridge_all_segments,
    }
    second = PciAddress.from_virsh("pci:1.0.00.0")
    if usable:
        validate_for_chv(second, **rule)
    else:
        with pytest.raises(AddressError, match="slot 0 is the host bridge"):
            validate_for_chv(second, **rule)
    with pytest.raises(AddressError, match="slot 0 is the host bridge"):
        validate_for_chv(PciAddress.from_virsh("pci:0.0.00.0"), **rule)
