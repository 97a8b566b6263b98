"""The technical report: executed notebooks to one HTML and one PDF, the run check, the word count."""

from __future__ import annotations

import base64
import http.server
import io
import sys
import threading

import nbformat
import pandas as pd
import pytest
from PIL import Image

from contest_study.report import (
    RUN_METADATA_KEY,
    ReportError,
    build_report,
    pdf_prose_words,
    pdf_text,
    prose_words,
    report_notebook,
    split_prose,
    url_inside,
    write_pdf,
)

RUN = {"profile": "smoke", "data_dir": "/data/contest", "seed": "42"}
PROSE = (
    "Convolutional filters recognise a ring wherever it is drawn, which is why the smallest network "
    "already separates rings from squares. "
)


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("L", (40, 30), 128).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def executed_notebook(title: str, *, run: dict | None = RUN, paragraphs: int = 3) -> nbformat.NotebookNode:
    """A notebook as the export leaves it: prose, a table, a figure, printed lines, logs, a stray repr."""
    code = nbformat.v4.new_code_cell("secret_source_line = print('kept fact')")
    code.outputs = [
        nbformat.v4.new_output("stream", name="stdout",
                               text="Epoch 1/3\n12/12 - 1s - 10ms/step - loss: 0.5\nkept fact: 42 images\n"),
        nbformat.v4.new_output("stream", name="stderr", text="WARNING: noisy tensorflow log\n"),
        nbformat.v4.new_output("execute_result", data={
            "text/html": "<table><tr><th>zebrafish</th></tr><tr><td>tablewordonly</td></tr></table>",
            "text/plain": "table"}, execution_count=1),
        nbformat.v4.new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"}),
        nbformat.v4.new_output("display_data", data={"text/markdown": "The best model is **cnn_1e**.",
                                                     "text/plain": "<Markdown>"}),
    ]
    stray = nbformat.v4.new_code_cell("plots.save_figure(fig)")
    stray.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "PosixPath('/x/fig.png')"},
                                            execution_count=2)]
    cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\n" + PROSE * paragraphs),
        code,
        nbformat.v4.new_markdown_cell("## Results\n\n" + PROSE),
        stray,
    ]
    notebook = nbformat.v4.new_notebook(cells=cells)
    if run is not None:
        notebook.metadata[RUN_METADATA_KEY] = dict(run)
    return notebook


@pytest.fixture
def executed(tmp_path):
    folder = tmp_path / "build" / "notebooks"
    folder.mkdir(parents=True)
    nbformat.write(executed_notebook("01 — First"), folder / "01_first.ipynb")
    nbformat.write(executed_notebook("02 — Second"), folder / "02_second.ipynb")
    return folder


NAMES = ["01_first", "02_second", "03_never_run"]


def test_report_keeps_findings_and_drops_logs():
    notebook = report_notebook(executed_notebook("01 — First"))
    outputs = notebook.cells[1].outputs
    assert [output.output_type for output in outputs] == ["stream", "execute_result", "display_data", "display_data"]
    assert outputs[0].text == "kept fact: 42 images\n"
    assert notebook.cells[3].outputs == []  # the bare PosixPath repr


def test_build_report_writes_html_and_pdf_in_notebook_order(executed, tmp_path):
    report_dir = tmp_path / "build" / "report"
    messages = []
    result = build_report(executed, NAMES, report_dir, run=RUN, author="DOE JANE", run_description="profile smoke",
                          say=messages.append)

    assert result.included == ["01_first", "02_second"]
    assert [name for name, _ in result.missing] == ["03_never_run"]
    assert "not executed yet" in result.missing[0][1]
    html = result.html.read_text()
    assert html.index("01 — First") < html.index("02 — Second")
    assert "secret_source_line" not in html  # code is hidden
    assert "kept fact: 42 images" in html and "Epoch 1/3" not in html and "noisy tensorflow" not in html
    assert "PosixPath" not in html and "data:image/png;base64," in html
    assert "<strong>cnn_1e</strong>" in html
    assert "03_never_run" in html and "DOE JANE" in html  # the contents say what is missing
    # Heading anchors are unique across notebooks ("Results" appears in both).
    assert 'id="nb-01_first-2"' in html and 'id="nb-02_second-2"' in html
    assert result.pdf.read_bytes().startswith(b"%PDF")
    assert "secret_source_line" not in pdf_text(result.pdf)
    assert sorted(path.name for path in report_dir.iterdir()) == ["report.html", "report.pdf"]  # no temp files
    assert any("PDF" in message for message in messages)
    assert result.files == [result.pdf, result.html]


def test_words_are_counted_outside_tables_and_printed_output(executed, tmp_path):
    result = build_report(executed, NAMES, tmp_path / "report", run=RUN, say=lambda _: None)
    html = result.html.read_text()
    prose, other = split_prose(html)
    assert "zebrafish" in other and "zebrafish" not in prose
    assert "kept" in other and "images" in other  # printed output is not prose
    assert "contents" in other  # neither is the table of contents
    expected = 2 * (len(PROSE.split()) * 4 + 1 + 1 + 5)  # paragraphs, both headings' words, the Markdown output
    assert prose_words(html) == result.prose_words
    # Headings: "First"/"Second" (the numbers and the dash are not words) and "Results".
    assert abs(result.prose_words - expected) <= 4
    assert abs(pdf_prose_words(result.pdf, html) - result.prose_words) <= 0.05 * result.prose_words


def test_notebooks_of_another_run_are_left_out(executed, tmp_path):
    nbformat.write(executed_notebook("02 — Second", run={**RUN, "profile": "default"}), executed / "02_second.ipynb")
    nbformat.write(executed_notebook("03 — Third", run=None), executed / "03_never_run.ipynb")
    result = build_report(executed, NAMES, tmp_path / "report", run=RUN, say=lambda _: None)
    reasons = dict(result.missing)
    assert result.included == ["01_first"]
    assert "profile 'default' instead of 'smoke'" in reasons["02_second"]
    assert "does not say which run" in reasons["03_never_run"]
    assert "02 — Second" not in result.html.read_text()


def test_nothing_to_report_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(ReportError, match="no executed notebook of this run.*01_first: not executed yet"):
        build_report(tmp_path, ["01_first"], tmp_path / "report", say=lambda _: None)
    assert not (tmp_path / "report").exists()


def test_missing_pdf_engine_keeps_the_html_and_removes_a_stale_pdf(executed, tmp_path, monkeypatch):
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "report.pdf").write_bytes(b"%PDF of an earlier run")
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # import weasyprint now raises ImportError

    result = build_report(executed, NAMES, report_dir, run=RUN, say=lambda _: None)

    assert result.pdf is None and "Pango" in result.pdf_error and "apt-get install" in result.pdf_error
    assert result.html.is_file() and not (report_dir / "report.pdf").exists()
    assert result.files == [result.html]


def test_tables_too_wide_for_a_portrait_page_get_landscape_pages(executed, tmp_path):
    from pypdf import PdfReader

    notebook = executed_notebook("01 — First")
    wide = "<table><tr>" + "".join(f"<th>c{i}</th>" for i in range(16)) + "</tr><tr>" + "<td>1</td>" * 16 + "</tr></table>"
    notebook.cells[1].outputs.append(nbformat.v4.new_output("display_data", data={"text/html": wide, "text/plain": "t"}))
    nbformat.write(notebook, executed / "01_first.ipynb")

    result = build_report(executed, NAMES, tmp_path / "report", run=RUN, say=lambda _: None)

    html = result.html.read_text()
    assert html.count('<table class="wide">') == 1  # the narrow table stays on portrait pages
    sizes = [(float(page.mediabox.width), float(page.mediabox.height)) for page in PdfReader(str(result.pdf)).pages]
    assert any(width > height for width, height in sizes) and any(width < height for width, height in sizes)


@pytest.fixture
def request_counter():
    """A local HTTP server counting the requests it gets: ``(url_prefix, requests)``."""
    requests = []

    class Counting(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def test_label_names_from_the_data_are_shown_as_text_and_fetch_nothing(executed, tmp_path, request_counter):
    url, requests = request_counter
    label = f"<img src={url}/x.png>L1"
    notebook = executed_notebook("01 — First")
    table = pd.DataFrame({label: [0.91], "L2": [0.5]})
    notebook.cells[1].outputs += [
        nbformat.v4.new_output("display_data", data={"text/html": table.to_html(), "text/plain": "t"}),
        # A table written by hand (or a pandas Styler), which escapes nothing.
        nbformat.v4.new_output("display_data", data={"text/html": f"<table><tr><th>{label}</th></tr></table>",
                                                     "text/plain": "t"}),
        nbformat.v4.new_output("display_data", data={"text/markdown": f"The hardest label is **{label}**.",
                                                     "text/plain": "m"}),
    ]
    nbformat.write(notebook, executed / "01_first.ipynb")

    result = build_report(executed, NAMES, tmp_path / "report", run=RUN, say=lambda _: None)

    html = result.html.read_text()
    assert f"<img src={url}" not in html and f'<img src="{url}' not in html
    assert html.count(f"&lt;img src={url}/x.png&gt;L1") == 2  # both tables show the name as text
    assert html.count("&lt;img src=") == 3  # and so does the Markdown sentence
    assert f"img src={url}/x.png>L1" in pdf_text(result.pdf).replace("\n", "")
    assert requests == []


def test_the_pdf_engine_reads_nothing_outside_the_report_folder(tmp_path, request_counter):
    url, requests = request_counter
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    secret = tmp_path / "outside.css"
    secret.write_text("body { background: url(%s/from-css.png); }" % url)
    html = (f'<html><head><link rel="stylesheet" href="{secret.as_uri()}"></head><body><p>text</p>'
            f'<img src="{url}/x.png"><img src="{tmp_path.as_uri()}/outside.png"></body></html>')

    write_pdf(html, report_dir / "report.pdf", base_url=report_dir)

    assert requests == []
    assert url_inside((report_dir / "figure.png").as_uri(), report_dir.resolve())
    assert url_inside("data:image/png;base64,AAAA", report_dir)
    assert not url_inside(secret.as_uri(), report_dir.resolve())
    assert not url_inside((report_dir / ".." / "outside.png").as_uri(), report_dir.resolve())
    assert not url_inside(f"{url}/x.png", report_dir)


def test_cells_tagged_appendix_go_after_every_chapter(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name, title in (("01_first", "01 — First"), ("02_second", "02 — Second")):
        notebook = executed_notebook(title)
        detail = nbformat.v4.new_markdown_cell("### Layer table of net_a\n\nEvery layer of net_a, " + PROSE)
        detail.metadata["tags"] = ["appendix"]
        table = nbformat.v4.new_code_cell("model.summary()")
        table.metadata["tags"] = ["appendix"]
        table.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"layer table of {name}\n")]
        notebook.cells[2:2] = [detail, table]
        nbformat.write(notebook, folder / f"{name}.ipynb")

    result = build_report(folder, ["01_first", "02_second"], tmp_path / "report", run=RUN, say=lambda _: None)

    html = result.html.read_text()
    body = html[html.index("</nav>"):]
    appendix = body.index('id="appendix"')
    # Both chapters come first, whole (their untagged "Results" included), then the appendix part of each.
    assert body.index("02 — Second") < appendix and body.index('id="nb-02_second-2"') < appendix
    assert appendix < body.index("layer table of 01_first") < body.index("layer table of 02_second")
    assert body.count("layer table of 01_first") == 1
    assert "01 — First: details" in body[appendix:]
    assert 'href="#appendix"' in html and 'href="#appendix-02_second"' in html  # listed in the contents
    # The PDF says where the appendix starts: after the title page, contents and chapters.
    assert 3 <= result.main_pages < result.pages


def test_a_report_without_tagged_cells_has_no_appendix(executed, tmp_path):
    result = build_report(executed, NAMES, tmp_path / "report", run=RUN, say=lambda _: None)
    assert 'id="appendix"' not in result.html.read_text()
    assert result.main_pages == result.pages
