"""What `tfcluster cluster` leaves for a person: assignments, cluster folders, a contact sheet, a web page.

All of it is written under one output directory and nowhere else:
  assignments.csv   path (relative to the input folder), cluster, confidence: every readable image
  clusters/cluster_KK/NNNNN_<name>   the images of cluster KK, most confident first (symbolic
                    links to the originals, or copies)
  overview.png      per cluster a row: its id, size and its most confident images
  index.html        the same, to browse, linking every image of every cluster
  unreadable.txt    the files that could not be decoded (skipped, never a stop)
"""

from __future__ import annotations

import csv
import html
import os
import re
import shutil

import numpy as np

from tfcluster import config as config_lib


def _safe_name(name: str) -> str:
    """A file name with no path separators or leading dots (it stays inside its folder)."""
    name = re.sub(r"[/\\\x00]", "_", os.path.basename(name)).lstrip(".")
    return name or "image"


def relative_items(items, root: str) -> list[str]:
    root = os.path.abspath(root)
    return [os.path.relpath(os.path.abspath(p), root) for p in items]


def write_assignments(path: str, items, clusters: np.ndarray, confidence: np.ndarray) -> None:
    """CSV of (path, cluster, confidence) rows in input order, written atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "cluster", "confidence"])
        for item, k, p in zip(items, clusters, confidence):
            writer.writerow([item, int(k), f"{float(p):.6f}"])
    os.replace(tmp, path)


def cluster_order(clusters: np.ndarray, confidence: np.ndarray, k: int) -> list[np.ndarray]:
    """Per cluster, the indices of its images, most confident first."""
    return [np.flatnonzero(clusters == c)[np.argsort(-confidence[clusters == c], kind="stable")] for c in range(k)]


def write_cluster_folders(out_dir: str, files, order: list[np.ndarray], copy: bool = False) -> list[list[str]]:
    """OUT/clusters/cluster_KK/ with a link (or copy) of each image; returns the paths made, per cluster.

    Rebuilt from scratch on every call (a re-run replaces the folders of the last one).
    """
    base = os.path.join(out_dir, "clusters")
    if os.path.isdir(base):
        shutil.rmtree(base)
    made = []
    for c, idx in enumerate(order):
        folder = os.path.join(base, f"cluster_{c:02d}")
        os.makedirs(folder)
        paths = []
        for rank, i in enumerate(idx):
            src = os.path.abspath(files[i])
            dst = os.path.join(folder, f"{rank:05d}_{_safe_name(files[i])}")
            if copy:
                shutil.copy2(src, dst)
            else:
                os.symlink(os.path.relpath(src, folder), dst)
            paths.append(dst)
        made.append(paths)
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
        rel = [os.path.relpath(p, out_dir).replace(os.sep, "/") for p in paths]
        thumbs = "".join(f"<a href='{html.escape(r)}'><img src='{html.escape(r)}' title='{html.escape(n)}'></a>"
                         for r, n in zip(rel[:per_cluster_shown], items))
        listing = "".join(f"<li><a href='{html.escape(r)}'>{html.escape(n)}</a></li>" for r, n in zip(rel, items))
        parts.append(f"<h2 id='c{c}'>cluster {c:02d} ({len(paths)} images)</h2>{thumbs}"
                     f"<details><summary>all {len(paths)}, most confident first</summary><ol>{listing}</ol>"
                     "</details>")
    config_lib.atomic_write_text(path, "\n".join(parts) + "\n")
