"""What a file is, from its bytes: the media type the hub records and serves, never the uploader's claim.

Binary formats by their signatures (the `filetype` package: PDF, Office documents, images, archives…);
text by decoding as UTF-8, then told apart by content (HTML) or, for text only, by the name's
extension (Markdown has no signature). Anything else is `application/octet-stream`.
"""

from pathlib import PurePath
from typing import Final

import filetype

SNIFF_BYTES: Final = 8192
"""How much of the start of a file the sniffer reads."""
TEXT: Final = "text/plain"
MARKDOWN: Final = "text/markdown"
HTML: Final = "text/html"
PDF: Final = "application/pdf"
DOCX: Final = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
OCTET_STREAM: Final = "application/octet-stream"
MARKDOWN_SUFFIXES: Final = frozenset({".md", ".markdown", ".mdown", ".mkd"})


def sniff(head: bytes, name: str) -> str:
    """The media type of a file that starts with `head` (its first `SNIFF_BYTES`) and is called `name`."""
    found = filetype.guess_mime(head)
    if found is not None:
        return str(found)
    if not _is_text(head):
        return OCTET_STREAM
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith((b"<!doctype html", b"<html")) or (start.startswith(b"<") and b"<body" in head.lower()):
        return HTML
    if PurePath(name).suffix.lower() in MARKDOWN_SUFFIXES:
        return MARKDOWN
    return TEXT


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # The sniffed window may end inside a character: only an error in its last few bytes is fine.
        return error.start >= len(head) - 3 and error.reason == "unexpected end of data"
    return True
