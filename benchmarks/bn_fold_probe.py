"""Would folding inference-mode BatchNorm into the convolution before it make a fine-tune step cheaper?

    python benchmarks/bn_fold_probe.py [--img-size 160] [--batch-size 64] [--steps 40] [--warmup 10]

``mobilenet_v2``'s default recipe fine-tunes the whole base with its BatchNorm layers in inference mode
(moving statistics fixed; gamma and beta trainable, ``--train-bn``). Such a layer after a convolution
is ``conv(x, W) * s + (beta - mean * s)`` with ``s = gamma / sqrt(var + eps)``, which is the same as
``conv(x, W * s) + (beta - mean * s)``: the scale moves onto the kernel (a few thousand numbers) and
the offset becomes the convolution's bias, which oneDNN fuses with the convolution (and the ReLU6
after it). Unlike ``bn_affine_probe.py`` (mul + add on the activations, 1.20x slower, session 26) no
pass over the activations is left but the bias gradient's reduction.

The probe times the same train step (MobileNetV2 base, ``--weights none`` with random moving
statistics, a 10-class softmax head, Adam, random images) with the Keras layers and with every
Conv2D/DepthwiseConv2D + BatchNormalization pair replaced by :class:`FoldedConvBN`, which uses the
*same* variables (kernel, gamma, beta), so the trainable parameters and their gradients are the
same. Rounds of 5 steps alternate between the two, so the VM's drift hits both alike. Checks that
both give the same output and the same gradients on one batch. Writes nothing; run with nothing
else running.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from bn_affine_probe import probe_args, random_batch, random_bn_base, time_alternating  # noqa: E402  (this folder: the same timing loop)

from edgeclf._keras import keras, tf  # noqa: E402

_CONV = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


class FoldedConvBN(keras.layers.Layer):
    """A Conv2D or DepthwiseConv2D followed by an inference-mode BatchNormalization, as one convolution
    with the BatchNorm scale folded into the kernel and its offset as the bias; shares the two layers'
    variables."""

    def __init__(self, conv, bn, **kw):
        super().__init__(name=conv.name + "_folded", **kw)
        self.conv, self.bn = conv, bn
        self.kernel = conv.depthwise_kernel if isinstance(conv, keras.layers.DepthwiseConv2D) else conv.kernel
        self.gamma, self.beta = bn.gamma, bn.beta
        self.mean = tf.constant(bn.moving_mean.numpy())
        self.inv_std = tf.constant(1.0 / np.sqrt(bn.moving_variance.numpy() + bn.epsilon))

    def call(self, x):
        conv = self.conv
        s = self.gamma * self.inv_std
        bias = self.beta - self.mean * s
        if conv.use_bias:
            bias = bias + conv.bias * s
        strides = (1, *conv.strides, 1)
        pad = conv.padding.upper()
        if isinstance(conv, keras.layers.DepthwiseConv2D):
            y = tf.nn.depthwise_conv2d(x, self.kernel * tf.reshape(s, (1, 1, -1, 1)), strides, pad)
        else:
            y = tf.nn.conv2d(x, self.kernel * s, strides, pad)
        return tf.nn.bias_add(y, bias)


def fold_model(model: keras.Model) -> keras.Model:
    """A functional model computing what ``model`` computes (BatchNorm in inference mode) with every
    convolution + BatchNorm pair as a :class:`FoldedConvBN`; other layers are the same objects."""
    consumers: dict[int, int] = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for t in tf.nest.flatten(node.input_tensors):
                consumers[id(t)] = consumers.get(id(t), 0) + 1
    bn_after = {id(layer.input): layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    folded: dict[int, keras.layers.Layer] = {}  # id(BatchNorm) -> the convolution folded into it
    new: dict[int, object] = {id(model.inputs[0]): model.inputs[0]}
    for layer in model.layers[1:]:
        if id(layer) in folded:
            conv = folded[id(layer)]
            new[id(layer.output)] = FoldedConvBN(conv, layer)(new[id(conv.input)])
        elif isinstance(layer, _CONV) and id(layer.output) in bn_after and consumers[id(layer.output)] == 1:
            folded[id(bn_after[id(layer.output)])] = layer
        else:
            args = tf.nest.map_structure(lambda t: new[id(t)], layer.input)
            new[id(layer.output)] = layer(args, training=False) if isinstance(
                layer, keras.layers.BatchNormalization) else layer(args)
    return keras.Model(model.inputs, new[id(model.outputs[0])])


def _models(img_size: int) -> tuple[keras.Model, keras.Model]:
    base = random_bn_base(img_size, gamma_beta=True)
    folded_base = fold_model(base)
    n_bn = sum(isinstance(lyr, keras.layers.BatchNormalization) for lyr in base.layers)
    n_fold = sum(isinstance(lyr, FoldedConvBN) for lyr in folded_base.layers)
    print(f"{n_bn} BatchNorm layers, {n_fold} folded", flush=True)
    dense = keras.layers.Dense(10, activation="softmax")

    def head(b):
        inp = keras.Input((img_size, img_size, 3))
        x = b(inp, training=False)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inp, dense(x))

    return head(base), head(folded_base)


def main() -> None:
    args = probe_args(__doc__)
    bn_model, folded = _models(args.img_size)
    x, y = random_batch(args.batch_size, args.img_size)
    loss = keras.losses.CategoricalCrossentropy()
    grads = {}
    for label, model in (("BatchNormalization", bn_model), ("folded", folded)):
        with tf.GradientTape() as tape:
            p = model(x, training=False)
            lv = loss(y, p)
        g = tape.gradient(lv, model.trainable_variables)
        grads[label] = (p.numpy(), {v.ref(): gi for v, gi in zip(model.trainable_variables, g)})
    out_diff = float(np.max(np.abs(grads["BatchNormalization"][0] - grads["folded"][0])))
    ga, gb = grads["BatchNormalization"][1], grads["folded"][1]
    print(f"trainable variables: {len(ga)} / {len(gb)}; same set: {set(ga) == set(gb)}")
    rel = max(float(tf.norm(ga[k] - gb[k]) / (tf.norm(ga[k]) + 1e-12)) for k in ga if k in gb)
    print(f"max |softmax difference| {out_diff:.2e}; max relative gradient difference {rel:.2e}", flush=True)
    for m in (bn_model, folded):
        m.compile(optimizer=keras.optimizers.Adam(2e-4), loss="categorical_crossentropy")
    med = time_alternating({"BatchNormalization": bn_model, "folded": folded}, x, y, args.steps, args.warmup)
    print(f"folded / BatchNormalization step time: {med['folded'] / med['BatchNormalization']:.3f}")


if __name__ == "__main__":
    main()
