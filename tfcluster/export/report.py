"""What `tfcluster cluster` leaves for a person: assignments, cluster folders, a contact sheet, a web page.

All of it is written under one output directory (export.output_dir: tfcluster
replaces only what it wrote there) and nowhere else:
  assignments.csv   path (relative to the input folder), cluster, confidence: every readable image
  clusters/cluster_KK/NNNNN_<name>   the images of cluster KK, most confident first (symbolic
                    links to the originals, or copies)
  overview.png      per cluster a row: its id, size and its most confident images
  index.html        the same, to browse, linking every image of every cluster
  unreadable.csv    path, reason: the files skipped (not decodable, not regular files, ...)
CSV cells that a spreadsheet would run as a formula (a name beginning with =, +, -, @)
are written with a leading ' (OWASP's advice); everything else as it is.
"""

from __future__ import annotations

import csv
import html
import os
import re
import urllib.parse

import numpy as np

from tfcluster import config as config_lib
from tfcluster.export.output_dir import OutputDir

# First characters that make a spreadsheet read a CSV cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _safe_name(name: str) -> str:
    """A file name with no path separators or leading dots (it stays inside its folder)."""
    name = re.sub(r"[/\\\x00]", "_", os.path.basename(name)).lstrip(".")
    return name or "image"


def relative_items(items, root: str) -> list[str]:
    root = os.path.abspath(root)
    return [os.path.relpath(os.path.abspath(p), root) for p in items]


def csv_cell(text: str) -> str:
    """`text` as a CSV cell no spreadsheet runs as a formula (a leading ' where it would)."""
    text = str(text)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def write_csv(path: str, header, rows) -> None:
    """A CSV file written atomically; text cells guarded by `csv_cell`."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for row in rows:
                writer.writerow([csv_cell(v) if isinstance(v, str) else v for v in row])
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_assignments(path: str, items, clusters: np.ndarray, confidence: np.ndarray, name: str = "path") -> None:
    """CSV of (`name`, cluster, confidence) rows in input order, written atomically."""
    write_csv(path, [name, "cluster", "confidence"],
              ([item, int(k), f"{float(p):.6f}"] for item, k, p in zip(items, clusters, confidence)))


def write_unreadable(path: str, items, reasons) -> None:
    """CSV of (path, reason) rows: the files skipped."""
    write_csv(path, ["path", "reason"], zip(items, reasons))


def cluster_order(clusters: np.ndarray, confidence: np.ndarray, k: int) -> list[np.ndarray]:
    """Per cluster, the indices of its images, most confident first."""
    return [np.flatnonzero(clusters == c)[np.argsort(-confidence[clusters == c], kind="stable")] for c in range(k)]


def write_cluster_folders(out: OutputDir, files, order: list[np.ndarray], copy: bool = False,
                          top: str = "clusters", names=None) -> list[list[str]]:
    """OUT/<top>/cluster_KK/ with a link (or copy) of each image; returns the paths made, per cluster.

    `files[i]`: image i's path, or (with `copy`) a function writing it to the path it is given;
    the folders hold NNNNN_<name> (rank in the cluster, `names[i]` or the file's name). What the
    last run made there is removed first (only that: `OutputDir.clear`), so a re-run replaces its
    own folders; `top` "" puts the cluster folders in OUT itself.
    """
    prefix = f"{top}/" if top else ""
    if top:
        out.clear(top)
    else:
        out.clear_prefix("cluster_")
    folders = [f"{prefix}cluster_{c:02d}" for c in range(len(order))]
    out.make_dirs(([top] if top else []) + folders)
    names = names or [os.path.basename(f) for f in files]
    items = [(f"{folders[c]}/{rank:05d}_{_safe_name(names[i])}", files[i], "copy" if copy else "link")
             for c, idx in enumerate(order) for rank, i in enumerate(idx)]
    out.place(items)
    made = [[] for _ in order]
    for (rel, _, _), (c, _) in zip(items, ((c, i) for c, idx in enumerate(order) for i in idx)):
        made[c].append(os.path.join(out.root, *rel.split("/")))
    return made


def contact_sheet(path: str, images: np.ndarray, order: list[np.ndarray], per_cluster: int = 12,
                  thumb: int = 64) -> None:
    """overview.png: a row per cluster, "cluster KK  (n images)" and its `per_cluster` most confident images."""
    from PIL import Image, ImageDraw

    label_w, pad = 90, 4
    rows = len(order)
    sheet = Image.new("RGB", (label_w + per_cluster * (thumb + pad) + pad, rows * (thumb + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for r, idx in enumerate(order):
        y = pad + r * (thumb + pad)
        draw.text((pad, y + thumb // 2 - 12), f"cluster {r:02d}", fill="black")
        draw.text((pad, y + thumb // 2 + 2), f"{len(idx)} images", fill="gray")
        for j, i in enumerate(idx[:per_cluster]):
            img = images[i]
            im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).convert("RGB")
            scale = thumb / max(im.size)  # small images are enlarged, pixel for pixel
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                           Image.NEAREST if scale > 1 else Image.BILINEAR)
            sheet.paste(im, (label_w + pad + j * (thumb + pad), y))
    tmp = f"{path}.tmp-{os.getpid()}.png"
    sheet.save(tmp)
    os.replace(tmp, path)


def index_html(path: str, cluster_paths: list[list[str]], items_by_cluster: list[list[str]], title: str,
               summary: str, per_cluster_shown: int = 60) -> None:
    """index.html: one section per cluster (size, the first images as thumbnails, every image listed)."""
    out_dir = os.path.dirname(os.path.abspath(path))
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif} img{height:64px;margin:2px;image-rendering:pixelated}"
             " details{margin:4px 0 16px}</style>",
             f"<h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p><ul>"]
    parts += [f"<li><a href='#c{c}'>cluster {c:02d}</a>: {len(p)} images</li>" for c, p in enumerate(cluster_paths)]
    parts.append("</ul>")
    for c, (paths, items) in enumerate(zip(cluster_paths, items_by_cluster)):
        rel = [urllib.parse.quote(os.path.relpath(p, out_dir).replace(os.sep, "/")) for p in paths]
        thumbs = "".join(f"<a href='{html.escape(r)}'><img src='{html.escape(r)}' title='{html.escape(n)}'></a>"
                         for r, n in zip(rel[:per_cluster_shown], items))
        listing = "".join(f"<li><a href='{html.escape(r)}'>{html.escape(n)}</a></li>" for r, n in zip(rel, items))
        parts.append(f"<h2 id='c{c}'>cluster {c:02d} ({len(paths)} images)</h2>{thumbs}"
                     f"<details><summary>all {len(paths)}, most confident first</summary><ol>{listing}</ol>"
                     "</details>")
    config_lib.atomic_write_text(path, "\n".join(parts) + "\n")
