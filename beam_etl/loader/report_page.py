"""One self-contained HTML page to look at an output: what ``beam-etl report OUT`` writes
(:mod:`beam_etl.loader.report`, its command line).

Counts per split, rejected inputs by reason with a few of them shown (a thumbnail where the file
still decodes, and why it was refused), the statistics as plots (class pixel frequency and image
fraction, per-channel mean and standard deviation), what changed against the output it replaced,
and a grid of examples with their masks overlaid and a legend (:mod:`beam_etl.loader.preview`).
Every picture is inline (PNG data URIs, SVG): the page is one file that opens anywhere.
"""

from __future__ import annotations

import base64
import collections
import html
import io
import json
import sys

import numpy as np
import tensorflow as tf
from PIL import Image

from beam_etl.loader import preview
from beam_etl.loader.dataset import load_manifest
from beam_etl.output_layout import IncompleteOutputError, is_local, is_regular, join

_THUMBNAIL = 96


def _png_uri(picture: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail(uri: str) -> str | None:
    """A small PNG data URI of the image at ``uri``; None when it cannot be read or decoded, or
    is not a regular file (a FIFO, as the job found it, would block the reader for ever: not opened)."""
    try:
        if is_local(uri) and not is_regular(uri):
            return None
        with tf.io.gfile.GFile(uri, "rb") as handle:
            data = handle.read(64 << 20)
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((_THUMBNAIL, _THUMBNAIL))
            return _png_uri(np.asarray(image.convert("RGB")))
    except Exception:  # pylint: disable=broad-except  # refused inputs: unreadable is expected
        return None


def _bars(values: list[float], labels: list[str], colours: list[str], title: str, fmt: str = "{:.3f}",
          maximum: float | None = None) -> str:
    """A horizontal bar chart as inline SVG."""
    row, label_w, bar_w = 22, 170, 320
    top = max(maximum or 0.0, *values, 1e-12)
    parts = [f'<svg class="plot" role="img" aria-label="{html.escape(title)}" width="{label_w + bar_w + 80}" '
             f'height="{row * len(values) + 28}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="0" y="14" font-weight="bold">{html.escape(title)}</text>']
    for index, (value, label, colour) in enumerate(zip(values, labels, colours)):
        y = 24 + index * row
        width = bar_w * value / top
        parts += [f'<text x="0" y="{y + 14}">{html.escape(label)}</text>',
                  f'<rect x="{label_w}" y="{y + 2}" width="{width:.1f}" height="{row - 6}" fill="{colour}"/>',
                  f'<text x="{label_w + width + 4:.1f}" y="{y + 14}">{fmt.format(value)}</text>']
    return "\n".join(parts + ["</svg>"])


def _hex(rgb) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def _table(header: list[str], rows: list[list], klass: str) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{klass}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def read_rejected(output: str, manifest: dict) -> list[dict]:
    path = join(output, manifest["rejected"]["file"])
    with tf.io.gfile.GFile(path, "rb") as handle:
        return [json.loads(line) for line in handle.read().decode("utf-8").splitlines() if line.strip()]


def build_report(output: str, examples: int = 8, rejected_per_reason: int = 3, seed: int = 0) -> str:
    """The page for the output in ``output``, as HTML text."""
    manifest = load_manifest(output)
    names = preview.class_names(manifest)
    sections = [f"<h1>beam-etl output <code>{html.escape(output)}</code></h1>",
                f'<p id="totals" data-inputs="{manifest["num_inputs"]}" data-written="{manifest["num_written"]}" '
                f'data-rejected="{manifest["num_rejected"]}" data-examples="{manifest["num_examples"]}">'
                f'{manifest["num_inputs"]:,} inputs: {manifest["num_written"]:,} written '
                f'({manifest["num_examples"]:,} examples), {manifest["num_rejected"]:,} rejected. '
                f'Run <code>{html.escape(str(manifest.get("run_id", "")))}</code>; images '
                f'{manifest["image"]["height"]}x{manifest["image"]["width"]} '
                f'{html.escape(manifest["image"]["format"])}, '
                f'resize {html.escape(manifest["image"].get("resize", "stretch"))}.</p>']
    sections.append("<h2>Splits</h2>" + _table(
        ["split", "examples", "of which originals", "files", "MB"],
        [[split, info["num_examples"], info["num_source_examples"], len(info["files"]),
          f"{info['bytes'] / (1 << 20):.1f}"]
         for split, info in manifest["splits"].items()], "splits"))

    rejected = read_rejected(output, manifest)
    by_reason = collections.defaultdict(list)
    for entry in rejected:
        by_reason[entry["reason"]].append(entry)
    parts = ["<h2>Rejected inputs</h2>"]
    if not rejected:
        parts.append("<p>None.</p>")
    else:
        parts.append(_table(["reason", "stage", "count"],
                            [[reason, entries[0]["stage"], len(entries)]
                             for reason, entries in sorted(by_reason.items())],
                            "rejected"))
    for reason, entries in sorted(by_reason.items()):
        cards = []
        for entry in entries[:rejected_per_reason]:
            picture = thumbnail(entry["uri"])
            shown = (f'<img src="{picture}" alt="{html.escape(entry["key"] or "")}">' if picture
                     else '<div class="nothumb">cannot be shown</div>')
            cards.append(f'<figure class="reject">{shown}<figcaption><b>{html.escape(entry["key"] or "")}</b><br>'
                         f'<code>{html.escape(entry["uri"])}</code><br>{html.escape(entry["message"])}'
                         '</figcaption></figure>')
        parts.append(f'<h3>{html.escape(reason)}</h3><div class="cards">{"".join(cards)}</div>')
    sections.append("".join(parts))

    stats = manifest.get("statistics")
    if stats:
        values = stats["class_values"]
        labels = [f"{value}: {names.get(value, f'value {value}')}" for value in values]
        colours = [_hex(preview.colour_of(value)) for value in values]
        channel_labels = ["red", "green", "blue"][: len(stats["pixel_mean"])]
        channel_colours = ["#d33", "#3a3", "#33d"][: len(stats["pixel_mean"])]
        sections.append(
            f'<h2>Statistics of the {html.escape(stats["split"])} split</h2>'
            f'<p>{stats["num_images"]:,} images, {stats["num_pixels"]:,} pixels.</p>'
            + _bars(stats["class_pixel_frequency"], labels, colours, "share of pixels per mask class")
            + _bars(stats["class_image_fraction"], labels, colours, "share of images holding the class", maximum=1.0)
            + _bars(stats["pixel_mean"], channel_labels, channel_colours, "pixel mean per channel", "{:.1f}", 255.0)
            + _bars(stats["pixel_std"], channel_labels, channel_colours, "pixel standard deviation per channel",
                    "{:.1f}", 128.0))
    else:
        sections.append(f"<h2>Statistics</h2><p>None: {html.escape(str(manifest.get('statistics_absent')))}.</p>")

    changes = manifest.get("changes")
    if changes:
        counts = ", ".join(f"{changes[k]:,} {k}" for k in ("added", "removed", "changed", "unchanged") if k in changes)
        sections.append(f"<h2>Changes against run <code>{html.escape(changes['against_run'])}</code></h2>"
                        f"<p>{html.escape(counts or changes.get('unknown', ''))}</p>")

    split = "train" if manifest["splits"].get("train", {}).get("num_examples") else next(
        (s for s, info in manifest["splits"].items() if info["num_examples"]), None)
    if split is not None and examples:
        shown = preview.read_examples(output, split, examples, seed=seed)
        grid = preview.preview_grid(shown, columns=4, names=names)
        sections.append(f'<h2>Examples of the {html.escape(split)} split</h2>'
                        f'<img class="grid" src="{_png_uri(grid)}" alt="examples with their masks overlaid">')
    style = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}.cards{display:flex;flex-wrap:wrap;gap:12px}"
             "figure.reject{width:260px;margin:0;font-size:12px}.nothumb{width:96px;height:64px;background:#eee;"
             "display:flex;align-items:center;justify-content:center;color:#888}svg.plot{display:block;margin:1em 0;"
             "font-size:12px}img.grid{max-width:100%}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>beam-etl report: "
            f"{html.escape(output)}</title><style>{style}</style></head><body>\n" + "\n".join(sections)
            + "\n</body></html>\n")


def write_report(output: str, path: str, examples: int = 8, rejected_per_reason: int = 3, seed: int = 0) -> int:
    """Writes the page of the output in ``output`` to ``path`` and says so; the exit status:
    0 when written, 2 when ``output`` is not an output, 1 when a file of it is damaged (named)."""
    try:
        page = build_report(output, examples, rejected_per_reason, seed)
    except (IncompleteOutputError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except tf.errors.OpError as error:  # a file of the output cut short, corrupt or gone
        from beam_etl.loader import verification  # pylint: disable=import-outside-toplevel
        told = verification.reading_failed(output, error)
        if told is None:
            raise
        print(f"error: {output}: {told}", file=sys.stderr)
        return 1
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(page)
    print(f"wrote {path}: the report of {output}")
    return 0
