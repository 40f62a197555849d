"""``beam-etl report``: one self-contained page that holds the manifest's numbers, pictures that
decode, and renders in a real browser."""

from __future__ import annotations

import base64
import html.parser
import io
import os
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest
from PIL import Image

from beam_etl.loader import report, report_page
from beam_etl.tools import sample_data
from tests.support.jobs import run_job

pytestmark = pytest.mark.slow


class _Page(html.parser.HTMLParser):
    """The page's images, tables (rows of cell texts, by class) and tagged attributes."""

    def __init__(self):
        super().__init__()
        self.images, self.tables, self.attributes, self.svgs, self.rects = [], {}, {}, 0, 0
        self._table, self._row = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "table":
            self._table = self.tables.setdefault(attrs.get("class"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag == "svg":
            self.svgs += 1
        elif tag == "rect":
            self.rects += 1
        if "id" in attrs:
            self.attributes[attrs["id"]] = attrs

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._row is not None and data.strip():
            self._row.append(data.strip())


@pytest.fixture(scope="module")
def page(pets_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    manifest = run_job(pets_dir, out)
    path = out.parent / "report.html"
    assert report.main([str(out), "--html", str(path), "--examples", "6"]) == 0
    parsed = _Page()
    parsed.feed(path.read_text())
    return manifest, parsed, path


def _decoded(source: str) -> np.ndarray:
    assert source.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))))


def test_the_page_holds_the_manifests_numbers(page):
    manifest, parsed, _ = page
    totals = parsed.attributes["totals"]
    assert [int(totals[f"data-{k}"]) for k in ("inputs", "written", "rejected", "examples")] == [
        manifest["num_inputs"], manifest["num_written"], manifest["num_rejected"], manifest["num_examples"]]
    splits = {row[0]: [int(cell) for cell in row[1:4]] + [row[4]] for row in parsed.tables["splits"][1:]}
    assert splits == {split: [info["num_examples"], info["num_source_examples"], len(info["files"]),
                              f"{info['bytes'] / (1 << 20):.1f}"]  # (MB as --shard_size_mb and the job's summary count)
                      for split, info in manifest["splits"].items()}
    rejected = {row[0]: int(row[2]) for row in parsed.tables["rejected"][1:]}
    assert rejected == manifest["rejected"]["by_reason"] and sum(rejected.values()) == manifest["num_rejected"]
    stats = manifest["statistics"]
    assert parsed.svgs == 4 and parsed.rects == 2 * len(stats["class_values"]) + 2 * len(stats["pixel_mean"])


def test_its_pictures_decode(page, defects):
    _, parsed, _ = page
    grid = [image for image in parsed.images if "masks overlaid" in image.get("alt", "")]
    assert len(grid) == 1 and _decoded(grid[0]["src"]).std() > 10  # examples, not a blank
    thumbnails = {image["alt"]: _decoded(image["src"]) for image in parsed.images if image not in grid}
    # An input refused for its mask's size still decodes; a truncated or empty file does not.
    mismatched = [d["name"] for d in defects if d["expect"] == "rejected:size_mismatch"]
    assert mismatched and all(key in thumbnails and thumbnails[key].shape[2] == 3 for key in mismatched)
    empty = [d["name"] for d in defects if d["expect"] == "rejected:empty_file"]
    assert empty and not set(empty) & thumbnails.keys()


def test_a_browser_renders_it(page, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "Chromium is needed: scripts/setup.sh installs it (apt-get install chromium)"
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1100,1400", page[2].as_uri()], capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1400, 1100)
    assert (pixels < 200).any(axis=-1).mean() > 0.02  # text, tables, pictures: not a blank page


def _grid(path) -> np.ndarray:
    parsed = _Page()
    parsed.feed(path.read_text())
    return _decoded(next(image["src"] for image in parsed.images if "masks overlaid" in image.get("alt", "")))


def test_more_examples_than_the_split_holds_shows_them_all(page, tmp_path):
    """``--examples`` past what TensorFlow's ``take`` holds (an int64) is every example of the
    split, as any count past the split's size is: the same grid."""
    manifest, _, path = page
    out = path.parent / "out"
    every, huge = tmp_path / "every.html", tmp_path / "huge.html"
    assert report.main([str(out), "--html", str(every), "--examples", str(manifest["splits"]["train"]["num_examples"])]) == 0
    assert report.main([str(out), "--html", str(huge), "--examples", "9" * 22]) == 0
    assert np.array_equal(_grid(every), _grid(huge)) and _grid(huge).shape[0] > _grid(path).shape[0]


def test_the_report_is_never_written_into_the_output(page, capsys):
    manifest, _, path = page
    out = path.parent / "out"
    assert report.main([str(out), "--html", str(out / "report.html")]) == 2
    assert "inside OUT" in capsys.readouterr().err and not (out / "report.html").exists()


@pytest.mark.parametrize("html, named", [
    ("", "--html '': must name a file"),
    ("FOLDER/missing/report.html", "--html 'FOLDER/missing/report.html': folder 'FOLDER/missing' does not exist"),
    ("FOLDER", "--html 'FOLDER' is a folder"),
])
def test_a_report_it_could_not_write_is_refused_before_the_output_is_read(page, tmp_path, monkeypatch, capsys,
                                                                         html, named):
    _, _, path = page
    out = path.parent / "out"
    monkeypatch.setattr(report_page, "build_report", lambda *args: pytest.fail("the output was read"))
    html, named = html.replace("FOLDER", str(tmp_path)), named.replace("FOLDER", str(tmp_path))
    assert report.main([str(out), "--html", html]) == 2
    assert named in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["a shard cut short", "the rejected list gone"])
def test_a_damaged_output_is_reported_naming_the_file_not_with_a_traceback(page, tmp_path, capsys, damage):
    manifest, _, path = page
    copy = tmp_path / "out"
    shutil.copytree(path.parent / "out", copy)
    if damage == "a shard cut short":
        name = manifest["splits"]["train"]["files"][0]
        (copy / name).write_bytes((copy / name).read_bytes()[:-100])
        said = f"{name}: {manifest['files'][name]['bytes'] - 100} bytes"
    else:
        name = manifest["rejected"]["file"]
        (copy / name).unlink()
        said = f"{name}: missing"
    assert report.main([str(copy), "--html", str(tmp_path / "report.html"), "--examples", "40"]) == 1
    assert said in capsys.readouterr().err and not (tmp_path / "report.html").exists()


def test_a_rejected_input_that_is_no_regular_file_is_not_opened_for_its_thumbnail(tmp_path):
    fifo = tmp_path / "fifo.jpg"  # (the job rejects it as not_a_file, unopened; opening it blocks)
    os.mkfifo(fifo)

    def unblock():  # a reader that opened it (and would wait for ever) is let go after 3 s
        time.sleep(3)
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader: nothing to let go
            pass

    threading.Thread(target=unblock, daemon=True).start()
    started = time.monotonic()
    assert report_page.thumbnail(str(fifo)) is None and report_page.thumbnail(str(tmp_path)) is None
    assert time.monotonic() - started < 2


def test_an_output_with_no_rejected_input_says_so_without_an_empty_table(tmp_path):
    sample_data.generate(str(tmp_path / "data"), num_images=6, seed=1)
    out = tmp_path / "out"
    manifest = run_job(tmp_path / "data", out)
    assert manifest["num_rejected"] == 0
    path = tmp_path / "report.html"
    assert report.main([str(out), "--html", str(path)]) == 0
    text = path.read_text()
    parsed = _Page()
    parsed.feed(text)
    assert "<h2>Rejected inputs</h2><p>None.</p>" in text
    assert "rejected" not in parsed.tables and parsed.tables["splits"]
