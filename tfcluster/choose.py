"""Choosing K for a dataset: features (an auto-encoder trained without K, pixels or an export), then evaluation.choose_k.

  tfcluster choose_k --dataset=mnist5k --k_range=2:15 --workdir=runs/choose_k
  tfcluster cluster my_images/ --num_clusters=auto --output=my_clusters/

Writes into the work directory: choose_k.json (the scores of every K, each
criterion's vote, the suggested K) and choose_k.png (the criteria against K);
with features="fcae", fcae/ holds the auto-encoder's run (re-running resumes it).
Labels are never read: on labelled data the classes' count is reported beside
the suggestion, for comparison only.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from tfcluster import config as config_lib
from tfcluster.data import sources
from tfcluster.errors import InputError
from tfcluster.evaluation import choose_k as choose_k_lib

FEATURES = ("fcae", "pixels")  # or the path of an exported model
FCAE_SIZES = (16, 28, 128)  # the FCAE's Table 2 input sides (nets.fcae)
RESULT_FILE = "choose_k.json"


def fcae_source(source: sources.Source) -> sources.Source:
    """The images at a size the FCAE takes: as they are if square of side 16, 28 or 128, else resized to 28x28."""
    if source.info.modality != "image":
        raise InputError(f"features='fcae' trains an image auto-encoder; dataset {source.info.name!r} holds vectors "
                         "(use features='pixels')")
    h, w = source.info.image_shape[:2]
    if h == w and h in FCAE_SIZES:
        return source
    x = sources.resize_images(source.x, (28, 28), source.info.name)
    return dataclasses.replace(source, x=x, info=dataclasses.replace(source.info, image_shape=x.shape[1:]))


def features_of(source: sources.Source, features: str, workdir: str, seed: int = 0, progress: bool = True,
                precision: str = "auto", fcae_overrides: tuple = (), log=print) -> np.ndarray:
    """[N, D] features of every sample.

    features: "fcae" trains DBC's fully convolutional auto-encoder (fcae_kms, cpu
    preset and `fcae_overrides`; its stage I does not depend on K) in
    workdir/fcae and returns its embedding; "pixels" the flattened pixels in [0, 1]; else the path of an
    exported model, whose first served feature output (export.transfer) is used.
    """
    if features == "pixels":
        x = source.x.reshape(len(source), -1).astype(np.float32)
        return x / 255.0 if source.info.modality == "image" else x
    from tfcluster.export.saved_model import ExportedModel
    from tfcluster.export.transfer import FEATURE_OUTPUTS

    if features == "fcae":
        from tfcluster import run

        fcae = fcae_source(source)
        options = run.RunOptions(method="fcae_kms", dataset=source.info.name, workdir=os.path.join(workdir, "fcae"),
                                 preset="cpu", num_clusters=2, seed=seed, progress=progress, precision=precision,
                                 overrides=tuple(fcae_overrides))
        out = run.train(options, log=log, source=fcae)
        return ExportedModel(out["export"]).predict(fcae.x)["embedding"]
    if not os.path.isdir(features):
        raise InputError(f"features must be one of {', '.join(FEATURES)} or an exported model's directory; "
                         f"got {features!r}")
    model = ExportedModel(features)
    h, w, _ = model.input_shape
    x = source.x if source.info.image_shape[:2] == (h, w) else sources.resize_images(source.x, (h, w),
                                                                                      source.info.name)
    out = model.predict(x)
    for name in FEATURE_OUTPUTS:
        if name in out:
            return out[name].reshape(len(x), -1)
    raise InputError(f"the export {model.path} serves no features ({', '.join(FEATURE_OUTPUTS)})")


def choose_k(source: sources.Source, ks: list[int], workdir: str, features: str = "fcae", seed: int = 0,
             progress: bool = True, precision: str = "auto", fcae_overrides: tuple = (), log=print) -> dict:
    """Scores K in `ks` on the source's features; writes choose_k.json / .png. Returns the result.

    A finished result for the same K range and features is read back instead of
    recomputed (so `tfcluster cluster --num_clusters=auto` resumes).
    """
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, RESULT_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old.get("k_range") == list(ks) and old.get("features") == features and old.get("seed") == seed:
            log(f"choose_k: read the finished result in {path}")
            return old
    feats = features_of(source, features, workdir, seed=seed, progress=progress, precision=precision,
                        fcae_overrides=fcae_overrides, log=log)
    log(f"choose_k: k-means for K in {ks[0]}..{ks[-1]} on {feats.shape[1]}-d {features} features "
        f"of {len(source)} samples")
    rows = choose_k_lib.score_range(feats, ks, seed=seed)
    result = {"dataset": source.info.name, "num_samples": len(source), "features": features,
              "feature_dim": int(feats.shape[1]), "k_range": list(ks), "seed": seed,
              "suggested_k": choose_k_lib.suggest(rows), "votes": choose_k_lib.votes(rows), "scores": rows,
              "plot": choose_k_lib.plot(rows, os.path.join(workdir, "choose_k.png"),
                                        title=f"{source.info.name}: {features} features")}
    if source.has_labels and source.info.num_classes:
        result["num_classes"] = source.info.num_classes  # for comparison only: nothing above read the labels
    config_lib.write_json(path, result)
    return result
