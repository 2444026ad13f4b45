"""Domain XML as libvirt writes it: single-quoted attributes, no declaration.

:func:`element_to_xml` takes lxml's own serialisation (C, fast) and turns its
double-quoted attributes into single-quoted ones. Where lxml's text would differ from
libvirt's in anything but the quotes (comments, processing instructions, namespaces,
a carriage return, an element with an empty text) it writes the element itself, one
node at a time (:func:`write_nodes`). Both give the same text for any element.
"""

from __future__ import annotations

import re

from lxml import etree

__all__ = ["element_to_xml", "write_nodes"]

#: where lxml's text differs from libvirt's by more than the attribute quotes: comments,
#: processing instructions and CDATA (written as lxml writes them inside a tag that the
#: quote swap must not touch), namespaces (lxml's own form), a carriage return (escaped
#: by lxml in text, not by libvirt)
_NOT_PLAIN = ("<!", "<?", "xmlns", "xml:", "&#13;")
#: ... and an empty text (``<a></a>`` for libvirt's ``<a/>``)
_EMPTY_TEXT = re.compile(r"[^/]></")
#: a tag in lxml's output: ``<`` and ``>`` are escaped everywhere else
_TAG = re.compile(r"<[^>]*>")
#: a double quote in a text, between two tags (lxml leaves quotes in text as they are)
_QUOTE_IN_TEXT = re.compile(r'>[^<]*"')


def _single_quoted(match: re.Match[str]) -> str:
    # an apostrophe in a value must be escaped once the value's quotes are '
    return match.group(0).replace("'", "&apos;").replace('"', "'")


def _plain(text: str) -> bool:
    """No :data:`_NOT_PLAIN` text and no empty text in lxml's ``text`` (substring tests
    in C: a regular expression of these alternatives takes four times as long)."""
    if any(part in text for part in _NOT_PLAIN):
        return False
    return "></" not in text or _EMPTY_TEXT.search(text) is None


def element_to_xml(element: etree._Element) -> str:
    """Serialise ``element`` (without its tail) as libvirt does, ending in a newline."""
    text = etree.tostring(element, encoding="unicode", with_tail=False)
    if not _plain(text):
        return write_nodes(element)
    if "'" not in text and not _QUOTE_IN_TEXT.search(text):
        return text.replace('"', "'") + "\n"  # every quote is an attribute's: swap them all
    return _TAG.sub(_single_quoted, text) + "\n"


def write_nodes(element: etree._Element) -> str:
    """:func:`element_to_xml`, written node by node (the general case)."""
    out: list[str] = []
    tail = element.tail
    element.tail = None
    try:
        _write(element, {}, out)
    finally:
        element.tail = tail
    return "".join(out) + "\n"


def _escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attr(value: str) -> str:
    return (
        _escape_text(value)
        .replace("'", "&apos;")
        .replace('"', "&quot;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
        .replace("\t", "&#9;")
    )


def _write(element: etree._Element, parent_ns: dict[str | None, str], out: list[str]) -> None:
    tag = element.tag
    nsmap = dict(element.nsmap) if isinstance(tag, str) else parent_ns
    plain = (
        isinstance(tag, str)
        and not tag.startswith("{")
        and not any(str(k).startswith("{") for k in element.attrib)
    )
    if not plain:
        # comments, processing instructions and namespaced elements: lxml's own form
        out.append(str(etree.tostring(element, with_tail=False, encoding="unicode")))
    else:
        tag_name = str(tag)
        parts = [f"<{tag_name}"]
        for prefix, uri in nsmap.items():
            if parent_ns.get(prefix) != uri:
                name = f"xmlns:{prefix}" if prefix else "xmlns"
                parts.append(f" {name}='{_escape_attr(uri)}'")
        for key, value in element.attrib.items():
            parts.append(f" {key!s}='{_escape_attr(str(value))}'")
        if len(element) == 0 and not element.text:
            parts.append("/>")
            out.append("".join(parts))
        else:
            parts.append(">")
            out.append("".join(parts))
            if element.text:
                out.append(_escape_text(element.text))
            for child in element:
                _write(child, nsmap, out)
            out.append(f"</{tag_name}>")
    if element.tail:
        out.append(_escape_text(element.tail))
