"""The technical report: the executed notebooks' prose, tables and figures as one HTML and one PDF.

nbconvert turns each executed notebook of this run (code hidden, training logs dropped, HTML from
the data sanitized) into a chapter of the main body; the cells a notebook tags ``appendix`` (layer
tables, per-label tables, grid details) go to that notebook's part of the appendix instead.
WeasyPrint lays the page out as an A4 PDF, may fetch nothing outside the report's folder, and says
on which page the appendix starts. :func:`prose_words` counts the words of prose, tables excluded.
"""

from __future__ import annotations

import copy
import html as html_lib
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import nbformat

from contest_study.files import atomic_output, write_text_atomic

# The notebook-metadata key under which the export records the run that made an executed copy
# (profile, data folder, seed, ...): the report never mixes notebooks of two runs.
RUN_METADATA_KEY = "contest_study_run"
# The cell tag (jupytext: ``# %% tags=["appendix"]``) that sends a cell to the report's appendix.
APPENDIX_TAG = "appendix"

REPORT_TITLE = "Multi-label classification of 64×64 grayscale images"
REPORT_SUBTITLE = "Technical report"
HTML_NAME = "report.html"
PDF_NAME = "report.pdf"

# Printed lines that are training logs, not findings: Keras' "Epoch 3/15" and its per-epoch summary.
_LOG_LINE = re.compile(r"^\s*(Epoch \d+/\d+\s*$|\d+/\d+ .*\bstep\b|\d+/\d+ \[=*>?\.*\])")
# A result whose only form is a repr like PosixPath('...') or <Figure ...>: what a cell returned, not a finding.
_BARE_REPR = re.compile(r"^(\w*Path\(|<)")
# A word of prose: letters, possibly joined by an apostrophe or a hyphen (numbers are not words).
_WORD = re.compile(r"[A-Za-z]+(?:['’-][A-Za-z]+)*")
# Elements whose words are not prose: tables, printed output, the title page and the contents.
_NOT_PROSE_TAGS = {"table", "pre", "style", "script", "head", "title"}
_NOT_PROSE_ATTRIBUTE = ("data-prose", "no")
_HEADING = re.compile(
    r'<h([1-6]) id="[^"]*">(.*?)(?:<a class="anchor-link" href="#[^"]*">[^<]*</a>)?</h\1>', re.DOTALL
)
_CELL_ID = re.compile(r'\sid="cell-id=[^"]*"')
_TABLE = re.compile(r"<table\b([^>]*)>(.*?)</table>", re.DOTALL)
_HEADER_ROW = re.compile(r"<tr\b[^>]*>(.*?)</tr>", re.DOTALL)
# A table with more columns than this does not fit the width of a portrait A4 page: it gets landscape pages.
WIDE_TABLE_COLUMNS = 11
_TAG = re.compile(r"<[^>]+>")


class ReportError(RuntimeError):
    """The report (or one of its files) cannot be built; the message says why and what to do."""


@dataclass(frozen=True)
class Heading:
    level: int
    anchor: str
    text: str


@dataclass
class NotebookSection:
    """One executed notebook as a part of the report."""

    name: str  # "01_data_analysis"
    title: str  # its first level-1 heading
    body: str  # HTML, headings renumbered under the section's own anchor
    headings: list[Heading]
    appendix: str = ""  # HTML of the cells tagged ``appendix``, under their own heading
    appendix_headings: list[Heading] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return f"nb-{self.name}"

    @property
    def appendix_anchor(self) -> str:
        return f"appendix-{self.name}"


@dataclass
class ReportResult:
    """What :func:`build_report` wrote and what it had to leave out."""

    html: Path | None = None
    pdf: Path | None = None
    included: list[str] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (notebook, why)
    pdf_error: str | None = None
    prose_words: int = 0
    pages: int = 0  # of the PDF
    main_pages: int = 0  # title page, contents and main body: the pages before the appendix
    seconds: float = 0.0

    @property
    def files(self) -> list[Path]:
        return [path for path in (self.pdf, self.html) if path is not None]


# --------------------------------------------------------------------------- notebooks


def _keep_stream_text(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not _LOG_LINE.match(line))


# Markup the outputs may use: tables and text formatting. Anything else (an <img> or a <script> in
# a label name, say) is shown as text, since outputs carry strings from the data.
OUTPUT_TAGS = [
    "table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption", "colgroup", "col", "style",
    "p", "br", "hr", "div", "span", "b", "strong", "i", "em", "code", "pre", "sub", "sup",
    "ul", "ol", "li", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6",
]
OUTPUT_ATTRIBUTES = {"*": ["class", "colspan", "rowspan", "align", "style"], "table": ["border"]}


def _sanitizer():
    from nbconvert.preprocessors.sanitize import SanitizeHTML

    # Figures (PNG/JPEG) and plain text are safe as they are; HTML and Markdown are cleaned;
    # every other kind of output (SVG, JavaScript, widgets) is dropped.
    return SanitizeHTML(tags=OUTPUT_TAGS, attributes=OUTPUT_ATTRIBUTES)


def report_notebook(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``notebook`` with only what belongs in a report among its outputs, made safe.

    stderr (warnings, progress lines) and Keras' epoch lines on stdout are training
    logs, and a bare object repr (``PosixPath(...)``, ``<Figure ...>``) is what a
    cell happened to return; the rest (tables, figures, Markdown sentences, short
    printed facts) stays, its HTML and Markdown cleaned of any markup but
    :data:`OUTPUT_TAGS` (which shows as text instead).
    """
    notebook = copy.deepcopy(notebook)
    sanitizer = _sanitizer()
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                if output.get("name") != "stdout":
                    continue
                output["text"] = _keep_stream_text(output.get("text", ""))
                if not output["text"].strip():
                    continue
            elif output.get("output_type") == "execute_result":
                data = output.get("data", {})
                if set(data) == {"text/plain"} and _BARE_REPR.match(data["text/plain"]):
                    continue
            kept.append(output)
        cell["outputs"] = sanitizer.sanitize_code_outputs(kept)
    return notebook


def _exporter():
    from nbconvert import HTMLExporter

    return HTMLExporter(
        template_name="basic",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        anchor_link_text="",
    )


def _plain(fragment: str) -> str:
    return html_lib.unescape(_TAG.sub("", fragment)).strip()


def _columns(table_html: str) -> int:
    first_row = _HEADER_ROW.search(table_html)
    return len(re.findall(r"<t[hd]\b", first_row.group(1))) if first_row else 0


def _mark_wide_tables(body: str) -> str:
    """Give every table too wide for a portrait page the class ``wide`` (laid out on landscape pages)."""

    def mark(match: re.Match) -> str:
        attributes, inner = match.group(1), match.group(2)
        if _columns(inner) <= WIDE_TABLE_COLUMNS:
            return match.group(0)
        if 'class="' in attributes:
            attributes = attributes.replace('class="', 'class="wide ', 1)
        else:
            attributes += ' class="wide"'
        return f"<table{attributes}>{inner}</table>"

    return _TABLE.sub(mark, body)


def _has_tag(cell, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


def _anchored(body: str, prefix: str, headings: list[Heading]) -> str:
    """``body`` with every heading given the anchor ``prefix-N``, the headings appended to ``headings``."""

    def renumber(match: re.Match) -> str:
        level, inner = int(match.group(1)), match.group(2)
        heading = Heading(level, f"{prefix}-{len(headings) + 1}", _plain(inner))
        headings.append(heading)
        return f'<h{level} id="{heading.anchor}">{inner}</h{level}>'

    return _mark_wide_tables(_CELL_ID.sub("", _HEADING.sub(renumber, body)))


def notebook_section(path: Path, exporter=None) -> NotebookSection:
    """Convert one executed notebook into a chapter (code hidden, headings anchored) and its appendix part."""
    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as error:  # nbformat raises several unrelated types for bad JSON / schema
        raise ReportError(f"{path}: not a readable notebook ({error})") from error
    exporter = exporter or _exporter()
    notebook = report_notebook(notebook)
    main, appendix = copy.copy(notebook), copy.copy(notebook)
    main.cells = [cell for cell in notebook.cells if not _has_tag(cell, APPENDIX_TAG)]
    appendix.cells = [cell for cell in notebook.cells if _has_tag(cell, APPENDIX_TAG)]
    name = path.stem
    headings: list[Heading] = []
    body = _anchored(exporter.from_notebook_node(main)[0], f"nb-{name}", headings)
    title = next((heading.text for heading in headings if heading.level == 1), name)
    section = NotebookSection(name=name, title=title, body=body, headings=headings)
    if appendix.cells:
        appendix_title = f"{title}: details"
        appendix_body = f"<h1>{html_lib.escape(appendix_title)}</h1>\n" + exporter.from_notebook_node(appendix)[0]
        section.appendix_headings = []
        section.appendix = _anchored(appendix_body, section.appendix_anchor, section.appendix_headings)
    return section


# --------------------------------------------------------------------------- assembling


REPORT_CSS = """
@page { size: A4; margin: 18mm 15mm 18mm 15mm;
        @bottom-center { content: counter(page); font-size: 8pt; color: #666; } }
@page :first { @bottom-center { content: none; } }
html { font-family: "DejaVu Serif", Georgia, serif; font-size: 10.5pt; line-height: 1.45; color: #111; }
body { max-width: 190mm; margin: 0 auto; }
h1, h2, h3, h4 { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; line-height: 1.2;
                 break-after: avoid; }
h1 { font-size: 17pt; margin: 0 0 8pt 0; }
h2 { font-size: 13pt; margin: 14pt 0 5pt 0; }
h3 { font-size: 11pt; }
p, li { text-align: justify; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 0.85em; }
pre { font-family: "DejaVu Sans Mono", monospace; font-size: 7.5pt; white-space: pre-wrap;
      background: #f5f5f5; padding: 3pt 5pt; margin: 4pt 0; }
img { max-width: 100%; height: auto; display: block; margin: 4pt auto; break-inside: avoid; }
table { border-collapse: collapse; font-size: 6.8pt; margin: 6pt 0; max-width: 100%; }
th, td { border: 0.4pt solid #bbb; padding: 1pt 3pt; text-align: right; vertical-align: top; }
thead th { background: #eee; }
tr { break-inside: avoid; }
.title-page { break-after: page; padding-top: 60mm; text-align: center; }
.title-page h1 { font-size: 24pt; }
.title-page .subtitle { font-size: 15pt; margin-top: 4pt; }
.title-page .author { font-size: 13pt; margin-top: 30pt; }
.title-page .run { font-size: 9.5pt; color: #444; margin-top: 30pt; text-align: center; }
nav.contents { break-after: page; }
nav.contents > ol { list-style: none; padding-left: 0; columns: 2; column-gap: 14pt; font-size: 9.5pt; }
nav.contents ol ol { list-style: none; padding-left: 10pt; font-size: 8pt; }
nav.contents li { text-align: left; margin: 1pt 0; break-inside: avoid; }
nav.contents > ol > li { margin-top: 4pt; }
nav.contents a { color: #111; text-decoration: none; }
nav.contents .missing { font-size: 9.5pt; color: #8a1f11; }
@media print { nav.contents a::after { content: leader('.') target-counter(attr(href), page); } }
section.notebook + section.notebook { margin-top: 22pt; }
section.appendix { break-before: page; }
section.appendix section.notebook-appendix + section.notebook-appendix { margin-top: 22pt; }
.appendix-title { font-size: 20pt; }
@page landscape { size: A4 landscape; }
table.wide { page: landscape; font-size: 6.5pt; }
"""


def _contents_entry(anchor: str, title: str, headings: Sequence[Heading]) -> str:
    sub = "".join(
        f'<li><a href="#{heading.anchor}">{html_lib.escape(heading.text)}</a></li>'
        for heading in headings
        if heading.level == 2
    )
    return f'<li><a href="#{anchor}">{html_lib.escape(title)}</a>' + (f"<ol>{sub}</ol>" if sub else "") + "</li>"


def _contents(sections: Sequence[NotebookSection], missing: Sequence[tuple[str, str]]) -> str:
    items = [_contents_entry(section.anchor, section.title, section.headings) for section in sections]
    with_appendix = [section for section in sections if section.appendix]
    if with_appendix:
        parts = "".join(
            _contents_entry(section.appendix_anchor, section.appendix_headings[0].text, [])
            for section in with_appendix
        )
        items.append(f'<li><a href="#appendix">Appendix</a><ol>{parts}</ol></li>')
    parts = ['<nav class="contents" data-prose="no"><h1>Contents</h1>', f"<ol>{''.join(items)}</ol>"]
    if missing:
        rows = "".join(f"<li><strong>{html_lib.escape(name)}</strong>: {html_lib.escape(why)}</li>" for name, why in missing)
        parts.append(f'<div class="missing"><p>Not in this report:</p><ul>{rows}</ul></div>')
    parts.append("</nav>")
    return "\n".join(parts)


def assemble_html(
    sections: Sequence[NotebookSection],
    missing: Sequence[tuple[str, str]] = (),
    *,
    title: str = REPORT_TITLE,
    author: str = "",
    run_description: str = "",
) -> str:
    """One HTML page: title page, contents (with page numbers in the PDF), every chapter, then the appendix."""
    title_page = (
        '<section class="title-page" data-prose="no">'
        f"<h1>{html_lib.escape(title)}</h1>"
        f'<p class="subtitle">{html_lib.escape(REPORT_SUBTITLE)}</p>'
        + (f'<p class="author">{html_lib.escape(author)}</p>' if author else "")
        + (f'<p class="run">{html_lib.escape(run_description)}</p>' if run_description else "")
        + "</section>"
    )
    body = "\n".join(
        f'<section class="notebook" id="{section.anchor}">\n{section.body}\n</section>' for section in sections
    )
    appendix_parts = "\n".join(
        f'<section class="notebook-appendix" id="{section.appendix_anchor}">\n{section.appendix}\n</section>'
        for section in sections
        if section.appendix
    )
    if appendix_parts:
        body += (
            '\n<section class="appendix" id="appendix">\n<h1 class="appendix-title">Appendix</h1>\n'
            "<p>The details the chapters stand on: the layer table of every network, per-label and per-seed "
            f"tables, and the full search grids.</p>\n{appendix_parts}\n</section>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html_lib.escape(title)} — {html_lib.escape(REPORT_SUBTITLE)}</title>\n"
        f"<style>{REPORT_CSS}</style>\n</head>\n<body>\n"
        f"{title_page}\n{_contents(sections, missing)}\n{body}\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------- PDF


PANGO_HINT = (
    "WeasyPrint needs the Pango system library: `make install` installs it on Debian "
    "(as root: apt-get install -y libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0)"
)


def write_pdf(html: str, pdf_path: Path, *, base_url: Path | None = None) -> tuple[int, int]:
    """Lay ``html`` out as a PDF with WeasyPrint, atomically; :class:`ReportError` if it cannot.

    Returns the number of pages and the number before the appendix (all of them without one).

    WeasyPrint reads only ``data:`` URLs and files under ``base_url`` (the report's folder):
    a URL anywhere else, e.g. in a label name that slipped through, is refused, not fetched.
    """
    try:
        import weasyprint
        from weasyprint.urls import URLFetcher
    except (ImportError, OSError) as error:  # OSError: cffi could not load Pango
        raise ReportError(f"no PDF: WeasyPrint cannot start ({error}); {PANGO_HINT}") from error
    folder = Path(base_url or pdf_path.parent).resolve()

    class BuildFolderFetcher(URLFetcher):
        def fetch(self, url, headers=None):
            if not url_inside(url, folder):
                raise ValueError(f"the report may only read files under {folder}, not {url}")
            return super().fetch(url, headers)

    document = weasyprint.HTML(string=html, base_url=str(folder), url_fetcher=BuildFolderFetcher()).render()
    with atomic_output(pdf_path) as tmp:
        document.write_pdf(tmp)
    appendix_page = next((number for number, page in enumerate(document.pages) if "appendix" in page.anchors), None)
    return len(document.pages), len(document.pages) if appendix_page is None else appendix_page


def url_inside(url: str, folder: Path) -> bool:
    """Whether the report may read ``url``: a ``data:`` URL, or a ``file:`` URL of a file under ``folder``."""
    scheme, _, rest = url.partition(":")
    if scheme.lower() == "data":
        return True
    if scheme.lower() != "file":
        return False
    path = Path(url2pathname(urlsplit(url).path)).resolve()
    return path.is_relative_to(folder)


# --------------------------------------------------------------------------- words


class _ProseSplitter(HTMLParser):
    """Splits the text of an HTML page into prose and the rest (tables, printed output, title pages)."""

    _VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []  # (tag, opens a non-prose region)
        self.prose: list[str] = []
        self.other: list[str] = []

    def _inside_other(self) -> bool:
        return any(flag for _, flag in self.stack)

    def handle_starttag(self, tag, attrs):
        if tag in self._VOID:
            return
        self.stack.append((tag, tag in _NOT_PROSE_TAGS or _NOT_PROSE_ATTRIBUTE in attrs))

    def handle_endtag(self, tag):
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index][0] == tag:
                del self.stack[index:]
                return

    def handle_data(self, data):
        (self.other if self._inside_other() else self.prose).append(data)


def _words(text: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(text)]


def split_prose(html: str) -> tuple[list[str], list[str]]:
    """``(prose words, other words)`` of an HTML page (see :class:`_ProseSplitter`)."""
    splitter = _ProseSplitter()
    splitter.feed(html)
    splitter.close()
    return _words(" ".join(splitter.prose)), _words(" ".join(splitter.other))


def prose_words(html: str) -> int:
    """How many words of prose the page has, outside tables, printed output, title page and contents."""
    return len(split_prose(html)[0])


def pdf_text(pdf_path: Path) -> str:
    """The text of every page of a PDF (pypdf, a test dependency)."""
    from pypdf import PdfReader

    return "\n".join(page.extract_text() or "" for page in PdfReader(str(pdf_path)).pages)


def pdf_prose_words(pdf_path: Path, html: str) -> int:
    """Words of the PDF's text that are prose: every word, minus the words of the HTML's non-prose parts.

    The PDF does not say which of its words sat in a table; the HTML it was laid out
    from does, so those words (counted with repetition) are taken away from the PDF's.
    """
    _, other = split_prose(html)
    remaining = Counter(_words(pdf_text(pdf_path))) - Counter(other)
    return sum(remaining.values())


# --------------------------------------------------------------------------- building


def _run_mismatch(notebook: nbformat.NotebookNode, run: dict) -> str | None:
    """Why an executed copy does not belong to the run described by ``run``, or None when it does."""
    recorded = notebook.metadata.get(RUN_METADATA_KEY)
    if not recorded:
        return "its executed copy does not say which run made it (executed by an older export)"
    differences = [
        f"{key} {recorded.get(key)!r} instead of {value!r}" for key, value in run.items() if recorded.get(key) != value
    ]
    return "executed with " + ", ".join(differences) if differences else None


def build_report(
    executed_dir: Path,
    notebook_names: Sequence[str],
    report_dir: Path,
    *,
    run: dict | None = None,
    author: str = "",
    run_description: str = "",
    pdf: bool = True,
    say: Callable[[str], None] = print,
) -> ReportResult:
    """Build ``report_dir/report.html`` (and ``report.pdf``) from the executed notebooks.

    ``notebook_names`` are the study's notebooks in order ("01_data_analysis", ...);
    the executed copy of each is looked up in ``executed_dir``. ``run`` (e.g.
    ``{"profile": "smoke", "data_dir": "...", "seed": "42"}``), when given, must match
    what the export recorded in a copy for it to be included. A notebook without a
    usable copy is listed in ``missing`` and in the report. Without any, nothing is
    written and :class:`ReportError` says why. A PDF that cannot be made (WeasyPrint
    or Pango missing) leaves ``pdf`` None, ``pdf_error`` set and no stale PDF behind.
    """
    started = time.monotonic()
    result = ReportResult()
    exporter = _exporter()
    sections = []
    for name in notebook_names:
        path = Path(executed_dir) / f"{name}.ipynb"
        if not path.is_file():
            result.missing.append((name, "not executed yet (no executed copy in build/notebooks)"))
            continue
        if run is not None:
            why = _run_mismatch(nbformat.read(path, as_version=4), run)
            if why:
                result.missing.append((name, f"{why}; run it again with the others"))
                continue
        say(f"report: adding {name}")
        sections.append(notebook_section(path, exporter))
        result.included.append(name)
    if not sections:
        raise ReportError(
            "no executed notebook of this run to build the report from: "
            + "; ".join(f"{name}: {why}" for name, why in result.missing)
        )
    html = assemble_html(sections, result.missing, author=author, run_description=run_description)
    report_dir = Path(report_dir)
    result.html = report_dir / HTML_NAME
    write_text_atomic(result.html, html)
    result.prose_words = prose_words(html)
    pdf_path = report_dir / PDF_NAME
    if pdf:
        say(f"report: laying out the PDF ({len(sections)} notebooks, {result.prose_words} words of prose) ...")
        pdf_started = time.monotonic()
        try:
            result.pages, result.main_pages = write_pdf(html, pdf_path, base_url=report_dir)
        except ReportError as error:
            result.pdf_error = str(error)
        else:
            result.pdf = pdf_path
            say(
                f"report: PDF written in {time.monotonic() - pdf_started:.1f} s: {result.pages} pages, "
                f"{result.main_pages} before the appendix"
            )
    if result.pdf is None:
        pdf_path.unlink(missing_ok=True)  # a PDF of an earlier run would contradict the new HTML
    result.seconds = time.monotonic() - started
    return result


def describe_run(*, profile: str, data_dir: Path | str, seed: int | str) -> str:
    """The line of the title page that says which run the report shows."""
    built = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")
    return f"profile {profile} · data {Path(data_dir).name or data_dir} · seed {seed} · built {built}"

