"""Text out of a document's bytes, page by page where the format has pages.

Formats: plain text and Markdown (UTF-8), HTML (its text, without scripts and styles), PDF (the text
layer of each page, with pypdfium2) and DOCX (paragraphs and table cells, with python-docx). Anything else fails,
and so does what cannot be read: a scanned
PDF without a text layer, an encrypted or corrupt file, a DOCX whose archive would unpack to far more
than it weighs (a zip bomb) or whose XML declares entities. Each failure is an `Unreadable` with a
reason a person can act on. Blocking CPU work: run it in a worker thread.
"""

import io
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Final

from ..media import DOCX, HTML, MARKDOWN, PDF, TEXT

MAX_UNPACKED_BYTES: Final = 200 * 1024 * 1024
MAX_UNPACK_RATIO: Final = 100
MAX_ARCHIVE_ENTRIES: Final = 10_000
SUPPORTED: Final = (TEXT, MARKDOWN, HTML, PDF, DOCX)


class Unreadable(Exception):
    """The document cannot be ingested; the message says why."""


@dataclass(frozen=True)
class Extracted:
    pages: list[str]
    """The text of each page; one "page" for formats without pages."""
    paged: bool


def extract(data: bytes, media_type: str) -> Extracted:
    """
    Raises:
        Unreadable: an unsupported type, or a file that cannot be read as its type.
    """
    if media_type in (TEXT, MARKDOWN):
        return _cleaned([_utf8(data)], paged=False)
    if media_type not in (HTML, PDF, DOCX):
        raise Unreadable(f"{media_type} is not a format the document store reads (it reads {', '.join(SUPPORTED)})")
    try:
        if media_type == HTML:
            return _cleaned([html_text(_utf8(data))], paged=False)
        if media_type == PDF:
            return _cleaned(_pdf_pages(data), paged=True)
        return _cleaned([_docx_text(data)], paged=False)
    except Unreadable:
        raise
    except Exception as error:  # a parser failing on a malformed file: the file's fault, and a retry would fail too
        raise Unreadable(f"the file could not be read as {media_type} ({type(error).__name__})") from None


def _cleaned(pages: list[str], *, paged: bool) -> Extracted:
    """Without NUL characters: a PDF's text layer may hold some, and PostgreSQL cannot store them."""
    return Extracted([page.replace("\x00", "") for page in pages], paged=paged)


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Unreadable("the text is not UTF-8") from None


class _TextOfHtml(HTMLParser):
    SKIPPED: Final = frozenset({"script", "style", "noscript", "template", "head"})
    BLOCKS: Final = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section",
                               "article", "header", "footer", "blockquote", "pre", "table", "ul", "ol", "hr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIPPED:
            self._skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_text(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    paragraphs = (" ".join(block.split()) for block in "".join(parser.parts).split("\n\n"))
    return "\n\n".join(paragraph for paragraph in paragraphs if paragraph)


def _pdf_pages(data: bytes) -> list[str]:
    import pypdfium2  # imported when first needed: it loads a native library

    try:
        document = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as error:
        if "password" in str(error).lower():
            raise Unreadable("the PDF is encrypted; upload it without a password") from None
        raise Unreadable("the file is not a readable PDF (corrupt or truncated)") from None
    try:
        pages = []
        for index in range(len(document)):
            page = document[index]
            text_page = page.get_textpage()
            pages.append(text_page.get_text_range().replace("\r\n", "\n").replace("\r", "\n"))
            text_page.close()
            page.close()
    finally:
        document.close()
    return _with_text(pages)


def _with_text(pages: list[str]) -> list[str]:
    if not any(page.strip() for page in pages):
        raise Unreadable("the PDF has no text layer (a scan?); text recognition is not done here")
    return pages


def _docx_text(data: bytes) -> str:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise Unreadable("the file is not a readable DOCX (not a valid archive)") from None
    with archive:
        entries = archive.infolist()
        unpacked = sum(entry.file_size for entry in entries)
        if len(entries) > MAX_ARCHIVE_ENTRIES or unpacked > MAX_UNPACKED_BYTES or \
                unpacked > MAX_UNPACK_RATIO * max(len(data), 1):
            raise Unreadable("the DOCX would unpack to far more than it weighs (a zip bomb?)")
        for entry in entries:
            if entry.filename.endswith(".xml") and b"<!ENTITY" in archive.read(entry)[:65536].upper():
                raise Unreadable("the DOCX's XML declares entities, which the store does not expand")
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile):
        raise Unreadable("the file is not a readable DOCX") from None
    paragraphs = [paragraph.text for paragraph in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            paragraphs.append(" | ".join(cell.text for cell in row.cells))
    text = "\n\n".join(paragraph.strip() for paragraph in paragraphs if paragraph.strip())
    if not text:
        raise Unreadable("the DOCX has no text")
    return text
