"""Shared layers: the fused BatchNorm against Keras' own, in both precisions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcluster.nets.layers import BatchNorm
from tfcluster import precision


@pytest.mark.parametrize("shape", [(16, 7, 7, 5), (16, 5)])
def test_fused_batchnorm_equals_keras_batchnorm_in_training_mode(shape):
    """Outputs, moving statistics (biased variance, momentum) and gradients agree to float32 round-off."""
    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(*shape).astype(np.float32) * 3 + 1)
    w = tf.constant(rng.randn(*shape).astype(np.float32))
    results = []
    for layer in (keras.layers.BatchNormalization(momentum=0.9, synchronized=True),
                  BatchNorm(momentum=0.9, synchronized=True)):
        layer.build(shape)
        layer.gamma.assign(np.linspace(0.5, 2, shape[-1]))
        layer.beta.assign(np.linspace(-1, 1, shape[-1]))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * w)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append([y, layer.moving_mean, layer.moving_variance] + grads)
    for name, a, b in zip(("y", "moving mean", "moving variance", "dx", "dgamma", "dbeta"), *results):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5, atol=2e-6, err_msg=name)
    moved = results[1][2].numpy()
    assert not np.allclose(moved, 1.0)  # the moving variance was updated


def test_fused_batchnorm_equals_keras_batchnorm_in_inference_mode():
    rng = np.random.RandomState(2)
    x = tf.constant(rng.randn(6, 5, 5, 4).astype(np.float32) * 2 - 1)
    outs = []
    for layer in (keras.layers.BatchNormalization(), BatchNorm()):
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 2, 4))
        layer.beta.assign(np.linspace(-1, 1, 4))
        layer.moving_mean.assign(np.linspace(-0.3, 0.3, 4))
        layer.moving_variance.assign(np.linspace(0.5, 3, 4))
        outs.append(layer(x, training=False).numpy())
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-6)


def test_fused_batchnorm_under_bfloat16_keeps_float32_statistics():
    with precision.policy("bfloat16"):
        layer = BatchNorm(momentum=0.0)
        layer.build((8, 4, 4, 3))
    x = tf.constant(np.random.RandomState(1).randn(8, 4, 4, 3).astype(np.float32) * 2 + 3)
    y = layer(tf.cast(x, tf.bfloat16), training=True)
    assert y.dtype == tf.bfloat16 and layer.moving_mean.dtype == "float32"
    np.testing.assert_allclose(layer.moving_mean.numpy(), x.numpy().mean((0, 1, 2)), rtol=1e-2)
    np.testing.assert_allclose(layer.moving_variance.numpy(), x.numpy().var((0, 1, 2)), rtol=2e-2)
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy().mean((0, 1, 2)), 0.0, atol=2e-2)


def test_calibration_combines_batches_exactly_even_far_from_zero():
    """Per-batch centred float32 moments, combined on the host, give the population variance of data
    whose mean is 10^3 standard deviations from zero, where float32 sums of squares lose it."""
    from tfcluster.nets.batchnorm import BatchNormCalibrator

    rng = np.random.RandomState(0)
    data = (10.0 + 0.01 * rng.randn(37, 3)).astype(np.float32)
    rows = []
    for part in np.split(data, [10, 11, 30]):  # uneven batches, one of a single row
        mean = part.mean(0)
        rows.append(np.concatenate([mean, ((part - mean) ** 2).sum(0), [len(part)]]))
    mean, var = BatchNormCalibrator._combine(np.array(rows, np.float32))
    np.testing.assert_allclose(mean, data.astype(np.float64).mean(0), rtol=1e-7)
    exact = data.astype(np.float64).var(0)
    np.testing.assert_allclose(var, exact, rtol=1e-3)
    naive = (data ** 2).mean(0, dtype=np.float32) - data.mean(0, dtype=np.float32) ** 2
    assert np.max(np.abs(naive - exact) / exact) > 0.05


def test_calibrate_and_predict_sets_every_batchnorm_to_the_batch_statistics_of_layerwise_calibration():
    """One training-mode pass with momentum 0: the moving statistics equal the exact layer-by-layer
    calibration on the same data, the outputs equal inference with them, momenta are restored, and
    data in several batches or frozen BatchNorm layers are refused."""
    import keras
    import pytest

    from tfcluster.nets.batchnorm import BatchNormCalibrator
    from tfcluster.nets.layers import BatchNorm, conv_bn_relu

    inputs = keras.Input((8, 8, 1))
    x = conv_bn_relu(inputs, 4, 3, 1, bn_momentum=0.9, name="a_")
    x = conv_bn_relu(x, 6, 3, 2, bn_momentum=0.9, name="b_")
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Softmax()(BatchNorm(momentum=0.99, name="head_bn")(keras.layers.Dense(3)(x)))
    model = keras.Model(inputs, out)
    data = tf.constant(np.random.RandomState(1).randn(50, 8, 8, 1).astype(np.float32) * 3.0 + 2.0)
    layerwise = BatchNormCalibrator(model, "layerwise")
    layerwise(lambda fn: np.concatenate([fn(data[i:i + 20]).numpy() for i in range(0, 50, 20)]))
    bns = layerwise.layers
    assert len(bns) == 3
    exact = [(b.moving_mean.numpy().copy(), b.moving_variance.numpy().copy()) for b in bns]
    expected_out = model(data, training=False).numpy()
    for b in bns:  # away from the exact statistics
        b.moving_mean.assign(tf.ones_like(b.moving_mean) * 5.0)
        b.moving_variance.assign(tf.ones_like(b.moving_variance) * 7.0)
    one_pass = BatchNormCalibrator(model, "one_pass")
    got = one_pass.calibrate_and_predict(lambda fn: fn(data).numpy(), lambda o: o)
    for b, (mean, var) in zip(bns, exact):
        np.testing.assert_allclose(b.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b.moving_variance.numpy(), var, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, expected_out, rtol=1e-4, atol=1e-5)
    assert [b.momentum for b in bns] == [0.9, 0.9, 0.99]
    with pytest.raises(ValueError, match="one batch"):
        one_pass.calibrate_and_predict(lambda fn: np.concatenate([fn(data[:25]).numpy(), fn(data[25:]).numpy()]),
                                       lambda o: o)
    assert [b.momentum for b in bns] == [0.9, 0.9, 0.99]
    bns[1].trainable = False
    with pytest.raises(ValueError, match="frozen"):
        one_pass.calibrate_and_predict(lambda fn: fn(data).numpy(), lambda o: o)
