"""SavedModel export for serving cluster assignments.

`export(...)` writes WORKDIR/export/<version>/ (integer versions, as
TensorFlow Serving expects) with a `serving_default` signature:
  input   images         uint8 [None, H, W, C] raw pixels (float32 [None, D] for vectors)
  outputs cluster        int64 [None]
          probabilities  float32 [None, K]
          ...            whatever the method adds (e.g. DAC's label_features)
and the method's extra signatures, if any (precise_gan: `generate`,
`generate_from_noise`).
Preprocessing (scaling, grayscale, standardisation) is baked in. A JSON
description is stored in assets.extra/tfcluster.json (TF Serving ignores it).
"""

from __future__ import annotations

import json
import os
import shutil

import keras
import tensorflow as tf

from tfcluster.data.preprocess import Preprocessor
from tfcluster.errors import InputError, StorageError, short_reason

META_FILE = os.path.join("assets.extra", "tfcluster.json")


class ServingModule(tf.Module):
    """Wraps a method's inference networks and the preprocessor.

    Args:
      method: a built Method.
      preprocessor: the Preprocessor used in training.
      raw_shape: shape of one raw input, (H, W, C) or (D,).
      raw_dtype: tf.uint8 for images, tf.float32 for vectors.
    """

    def __init__(self, method, preprocessor: Preprocessor, raw_shape, raw_dtype=tf.uint8):
        super().__init__(name="tfcluster_serving")
        # Track the raw tf.Variables behind Keras variables (as keras.export.ExportArchive
        # does): a SavedModel that tracks Keras variables themselves loads in TF2 but
        # not in TF1-style loaders (TensorFlow Serving, `saved_model_cli run`).
        variables = []
        for obj in method.export_objects().values():
            for v in ([obj] if isinstance(obj, tf.Variable) else obj.weights):
                variables.append(getattr(v, "value", v) if isinstance(v, keras.Variable) else v)
        self.variables_ = variables
        self.preprocessor = preprocessor
        self._outputs = method.serving_outputs
        spec = tf.TensorSpec([None, *raw_shape], raw_dtype, name="images")
        self.serve = tf.function(self._serve, input_signature=[spec])
        self.extra_signatures = dict(method.serving_signatures())
        for name, fn in self.extra_signatures.items():
            setattr(self, f"signature_{name}", fn)

    def _serve(self, images):
        # Every floating output is served as float32, whatever precision the networks compute in.
        outputs = {k: tf.cast(v, tf.float32) if v.dtype.is_floating else v
                   for k, v in self._outputs(self.preprocessor(images)).items()}
        probabilities = outputs.pop("probabilities")
        return {"cluster": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
                "probabilities": tf.identity(probabilities, name="probabilities"), **outputs}


def next_version(export_base: str) -> int:
    versions = [int(d) for d in os.listdir(export_base) if d.isdigit()] if os.path.isdir(export_base) else []
    return max(versions, default=0) + 1


def export(method, preprocessor: Preprocessor, raw_shape, export_base: str, meta: dict | None = None,
           raw_dtype=tf.uint8) -> str:
    """Saves a new version under `export_base`; returns its directory.

    The SavedModel is written to a hidden temporary directory and renamed into
    place, so a server watching `export_base` never sees a half-written version.
    A failed write (full disk, permissions) removes the partial directory and
    raises StorageError; the versions already there are untouched.
    """
    os.makedirs(export_base, exist_ok=True)
    version = next_version(export_base)
    final = os.path.join(export_base, str(version))
    tmp = os.path.join(export_base, f".tmp-{version}-{os.getpid()}")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    module = ServingModule(method.clone_for_export(), preprocessor, raw_shape, raw_dtype)
    try:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve, **module.extra_signatures})
        info = dict(meta or {})
        info.update({"input_shape": list(raw_shape), "input_dtype": raw_dtype.name, "version": version})
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with open(os.path.join(tmp, META_FILE), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2, default=str)
        os.replace(tmp, final)
    except (OSError, tf.errors.OpError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StorageError(f"could not write the SavedModel to {final} ({short_reason(e)}); the checkpoints are intact: "
                           "free space (or fix the directory) and re-run the same command to export") from e
    return final


def resolve(path: str) -> str:
    """Accepts a version directory or an export base (picks its highest version)."""
    if not path or not os.path.isdir(path):
        raise InputError(f"model directory not found: {path!r}")
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = [int(d) for d in os.listdir(path) if d.isdigit()
                and os.path.isfile(os.path.join(path, d, "saved_model.pb"))]
    if versions:
        return os.path.join(path, str(max(versions)))
    raise InputError(f"{path!r} is not a SavedModel (no saved_model.pb) nor an export directory holding "
                     "integer version sub-directories")


class ExportedModel:
    """A loaded export: `predict(images)` -> dict of NumPy outputs, batched."""

    def __init__(self, path: str):
        self.path = resolve(path)
        try:
            self._loaded = tf.saved_model.load(self.path)
        except Exception as e:
            raise InputError(f"could not load the SavedModel at {self.path!r}: {e}") from e
        if "serving_default" not in self._loaded.signatures:
            raise InputError(f"{self.path!r} has no serving_default signature")
        self.signature = self._loaded.signatures["serving_default"]
        inputs = self.signature.structured_input_signature[1]
        if "images" not in inputs:
            raise InputError(f"{self.path!r} is not a tfcluster export: its serving_default signature takes "
                             f"{', '.join(map(repr, sorted(inputs))) or 'no named inputs'}, not 'images'; "
                             "give the export directory a `tfcluster train` run wrote (WORKDIR/export)")
        spec = inputs["images"]
        self.input_shape = tuple(spec.shape[1:].as_list())
        self.input_dtype = spec.dtype
        meta_path = os.path.join(self.path, META_FILE)
        self.meta = {}
        if os.path.exists(meta_path):
            try:
                with open(meta_path, encoding="utf-8") as f:
                    self.meta = json.load(f)
            except (OSError, ValueError) as e:
                raise InputError(f"{meta_path} is unreadable ({type(e).__name__}): the export is damaged; "
                                 "export it again (re-run its `tfcluster train` command)") from None

    def check(self, images) -> None:
        shape = tuple(images.shape[1:])
        if len(images.shape) != len(self.input_shape) + 1:
            raise InputError(f"the model takes inputs of shape [N, {', '.join(map(str, self.input_shape))}], "
                             f"got rank-{len(images.shape)} array of shape {tuple(images.shape)}")
        if shape != self.input_shape:
            what = "channels" if shape[:-1] == self.input_shape[:-1] else "shape"
            raise InputError(f"wrong input {what}: the model takes [N, {', '.join(map(str, self.input_shape))}], "
                             f"got {tuple(images.shape)}")
        if images.dtype != self.input_dtype.as_numpy_dtype:
            raise InputError(f"the model takes {self.input_dtype.name} inputs, got {images.dtype}")

    def predict(self, images, batch_size: int = 500) -> dict:
        import numpy as np

        self.check(images)
        parts = [self.signature(images=tf.constant(images[i:i + batch_size]))
                 for i in range(0, images.shape[0], batch_size)]
        return {k: np.concatenate([p[k].numpy() for p in parts]) for k in parts[0]}
