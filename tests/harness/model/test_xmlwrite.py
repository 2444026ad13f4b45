"""The fast writer (lxml's text with its quotes swapped) and the node-by-node writer agree
on every element, and both read back to the same tree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from harness.model.domain import Domain
from harness.model.xmlwrite import _plain, element_to_xml, write_nodes

DATA = Path(__file__).resolve().parents[2] / "data" / "domains"

# the characters the two serialisations escape differently, if at all
TEXT = st.text(alphabet="ab '\"<>&\n\t\r]é", max_size=6)
NAMES = st.sampled_from(["disk", "target", "address", "alias", "driver"])
NAMESPACES = st.sampled_from([None, "http://example.org/ns", "urn:x"])


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> etree._Element:
    ns = draw(NAMESPACES) if depth else None
    tag = draw(NAMES)
    element = etree.Element(f"{{{ns}}}{tag}" if ns else tag, nsmap={"p": ns} if ns else None)
    for name in draw(st.lists(st.sampled_from(["type", "dev", "bus", "name"]), max_size=3)):
        element.set(name, draw(TEXT))
    if draw(st.booleans()):
        element.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    element.text = draw(st.none() | TEXT)
    if depth < 3:
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["element", "element", "comment", "pi"]))
            if kind == "comment":
                child = etree.Comment(draw(st.text(alphabet="a '\"<>", max_size=5)))
            elif kind == "pi":
                child = etree.ProcessingInstruction("target", "x='1'")
            else:
                child = draw(trees(depth + 1))
            child.tail = draw(st.none() | TEXT)
            element.append(child)
    return element


@settings(max_examples=500)
@given(trees(), st.booleans())
def test_the_fast_writer_writes_what_the_node_writer_writes(
    root: etree._Element, indent: bool
) -> None:
    if indent:
        etree.indent(root, space="  ")
    text = element_to_xml(root)
    assert text == write_nodes(root)
    assert text.endswith("\n")


def test_the_project_domains_take_the_fast_path_and_agree() -> None:
    files = sorted(DATA.rglob("*.xml"))
    assert files
    for path in files:
        root = etree.fromstring(path.read_bytes())
        etree.indent(root, space="  ")
        assert _plain(etree.tostring(root, encoding="unicode")), path
        assert element_to_xml(root) == write_nodes(root), path
    dom = Domain.from_xml((DATA / "domain-chv.xml").read_text())
    assert dom.to_xml() == write_nodes(dom.root)


def test_an_apostrophe_and_a_quote_in_values_are_escaped_for_single_quotes() -> None:
    root = etree.fromstring(
        """<disk name="it's &quot;x&quot;"><target dev='vda'/>a "b" 'c'</disk>"""
    )
    assert element_to_xml(root) == (
        "<disk name='it&apos;s &quot;x&quot;'><target dev='vda'/>a \"b\" 'c'</disk>\n"
    )


def test_a_quote_in_a_text_stays_when_no_apostrophe_is_there() -> None:
    # no apostrophe anywhere: only the quotes between the tags' own stay as they are
    root = etree.fromstring("""<a b="1"><c d="2"/>x "y"<e/>"</a>""")
    assert element_to_xml(root) == """<a b='1'><c d='2'/>x "y"<e/>"</a>\n"""
    plain = etree.fromstring("""<a b="1"><c d="2">x</c></a>""")
    assert element_to_xml(plain) == "<a b='1'><c d='2'>x</c></a>\n"


@pytest.mark.parametrize(
    "text",
    [
        '<a x="1"><b/></a>',
        "<a><!-- c --></a>",
        "<a><?pi x?></a>",
        '<a xmlns="urn:x"/>',
        '<a xml:lang="en"/>',
        "<a>x&#13;</a>",
        "<a><b></b></a>",
        "<a><b/></a></c>",
        "<a>\n  </a>",
        "<a><![CDATA[x]]></a>",
    ],
)
def test_the_plain_test_is_the_rule_it_states(text: str) -> None:
    """Plain: no comment, PI, CDATA, namespace, carriage return or empty text."""
    rule = re.compile(r"<!|<\?|xmlns|xml:|&#13;|[^/]></")
    assert _plain(text) == (rule.search(text) is None)
