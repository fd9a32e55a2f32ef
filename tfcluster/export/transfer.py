"""Transfer evaluation of learned features (DCCM section 4.1, after Deep InfoMax).

The trained network is frozen; a multilayer perceptron with one hidden layer
of 200 units is trained *with labels* on features of a training split and
its top-1 accuracy is measured on a separate test split. Features are those
an export serves besides its clusters (DCCM: `conv_features`, the last conv
block, and `fc_features`, the first fully-connected layer).
"""

from __future__ import annotations

import numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tfcluster.data import sources
from tfcluster.errors import InputError
from tfcluster.export.saved_model import ExportedModel

FEATURE_OUTPUTS = ("conv_features", "fc_features", "embedding")


def mlp_accuracy(train_x, train_y, test_x, test_y, hidden: int = 200, seed: int = 0, max_iter: int = 200) -> float:
    """Test accuracy of an MLP (standardised inputs -> `hidden` ReLU units -> softmax).

    Args:
      train_x: [N, D] features; train_y: [N] labels.
      test_x: [M, D]; test_y: [M].
    """
    clf = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=max_iter,
                                                        early_stopping=True, random_state=seed))
    clf.fit(np.asarray(train_x, np.float32), np.asarray(train_y))
    return float(clf.score(np.asarray(test_x, np.float32), np.asarray(test_y)))


def with_split(spec: str, split: str) -> str:
    """`spec` with `split=` set (e.g. fashion_mnist -> fashion_mnist?split=train)."""
    return f"{spec}{'&' if '?' in spec else '?'}split={split}"


def transfer(model_dir: str, train_spec: str, test_spec: str, hidden: int = 200, seed: int = 0,
             max_iter: int = 200) -> dict:
    """MLP test accuracy on each feature output of an exported model.

    Raises:
      InputError: a split without labels, or an export that serves no features.
    """
    model = ExportedModel(model_dir)
    train, test = sources.load(train_spec), sources.load(test_spec)
    for name, source in (("training", train), ("test", test)):
        if not source.has_labels:
            raise InputError(f"the {name} dataset {source.info.name!r} has no labels; transfer evaluation needs them")
    train_out, test_out = model.predict(train.x), model.predict(test.x)
    names = [k for k in FEATURE_OUTPUTS if k in train_out]
    if not names:
        raise InputError(f"the export {model.path} serves no features ({', '.join(FEATURE_OUTPUTS)}); "
                         f"it serves {', '.join(sorted(train_out))}")
    result = {"model": model.path, "method": model.meta.get("method"), "train": train_spec, "test": test_spec,
              "train_samples": len(train), "test_samples": len(test), "hidden_units": hidden}
    for k in names:
        result[f"{k}_test_accuracy"] = mlp_accuracy(train_out[k], train.y, test_out[k], test.y, hidden, seed, max_iter)
    return result
