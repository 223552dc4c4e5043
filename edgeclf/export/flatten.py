"""Flatten a functional Keras model that nests functional sub-models into one functional model.

tfmot's ``quantize_apply`` cannot annotate the layers inside a nested model (the
``keras.applications`` base of the transfer models); :func:`flatten_model` replays the sub-models'
graphs inline so every layer becomes a layer of one model.
"""

from __future__ import annotations

from edgeclf._keras import keras, tf
from edgeclf.errors import ConfigError


def _is_graph_model(layer) -> bool:
    return isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False)


def _replay(model, inputs: list, inference: bool, out: list) -> list:
    """Call ``model``'s layers on ``inputs`` (one tensor per ``model.inputs``) in graph order, nested
    functional models replayed inline (recursively); appends every called layer to ``out``; returns
    the tensors standing for ``model.outputs``."""
    tensors = {id(t): x for t, x in zip(model.inputs, inputs)}

    def get(t):
        if not hasattr(t, "_keras_history"):  # a constant argument (True, 0.5, None)
            return t
        if id(t) not in tensors:
            raise ConfigError(f"cannot flatten model '{model.name}': a layer reads a tensor from outside its graph")
        return tensors[id(t)]

    for depth in sorted(model._nodes_by_depth, reverse=True):  # inputs have the highest depth
        for node in model._nodes_by_depth[depth]:
            layer = node.layer
            if node.is_input or isinstance(layer, keras.layers.InputLayer):
                continue
            args = tf.nest.map_structure(get, node.call_args)
            kwargs = tf.nest.map_structure(get, node.call_kwargs)
            if isinstance(layer, keras.Model):
                if not _is_graph_model(layer):
                    raise ConfigError(f"cannot flatten model '{model.name}': its sub-model '{layer.name}' is a "
                                      "subclassed model without a layer graph")
                training = kwargs.pop("training", None)
                kwargs.pop("mask", None)
                if kwargs or len(args) != 1:
                    raise ConfigError(f"cannot flatten model '{model.name}': sub-model '{layer.name}' is called with "
                                      f"arguments other than its inputs ({sorted(kwargs) or len(args)})")
                sub_inputs = tf.nest.flatten(args[0])
                if len(sub_inputs) != len(layer.inputs):
                    raise ConfigError(f"cannot flatten model '{model.name}': sub-model '{layer.name}' gets "
                                      f"{len(sub_inputs)} inputs for its {len(layer.inputs)}")
                outputs = _replay(layer, sub_inputs, inference or training is False, out)
                outputs = tf.nest.pack_sequence_as(layer._nested_outputs, outputs)
            else:
                if inference and isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
                    raise ConfigError(f"cannot flatten model '{model.name}': its BatchNormalization '{layer.name}' "
                                      "is trainable inside a sub-model called with training=False (freeze it first)")
                outputs = layer(*args, **kwargs)
                out.append(layer)
            for t, x in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
                tensors[id(t)] = x
    missing = [t.name for t in model.outputs if id(t) not in tensors]
    if missing:
        raise ConfigError(f"cannot flatten model '{model.name}': outputs {missing} are not reached from its inputs")
    return [tensors[id(t)] for t in model.outputs]


def flatten_model(model):
    """One functional model computing ``model`` with every nested functional sub-model inlined.

    The result calls the SAME layer objects as ``model`` (weights are shared, not copied; training
    one trains the other) on a new graph from new ``keras.Input`` tensors of the same shapes, dtypes
    and names, so it maps the same (N, ...) inputs to the same outputs. Sub-models are replayed
    recursively; their ``InputLayer`` disappears. A model without nested models is returned as is.

    BatchNorm: a sub-model called with ``training=False`` (the transfer models' base) loses that
    call argument, since its layers are now called directly. Its BatchNormalization layers must be
    non-trainable (``trainable=False``, as :func:`edgeclf.models.transfer.build` sets them): in
    tf_keras 2 a non-trainable BatchNormalization always runs in inference mode (moving statistics,
    no update), whatever ``training`` is, so the flattened model behaves the same in fit().

    Raises:
        ConfigError: (one line) ``model`` or a sub-model is not a functional graph (subclassed), a
            sub-model is called with arguments other than its inputs and ``training``, a trainable
            BatchNormalization sits in a sub-model called with ``training=False``, or two layers of
            the flattened model share a name.
    """
    if not any(isinstance(layer, keras.Model) for layer in model.layers):
        return model
    if not _is_graph_model(model):
        raise ConfigError(f"cannot flatten model '{model.name}': a subclassed model without a layer graph")
    inputs = [keras.Input(shape=t.shape[1:], batch_size=t.shape[0], dtype=t.dtype, name=t.name.split(":")[0])
              for t in model.inputs]
    layers: list = []
    outputs = _replay(model, inputs, False, layers)
    names = [layer.name for layer in layers] + [t.name.split(":")[0] for t in inputs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"cannot flatten model '{model.name}': layer names {dupes} occur in more than one sub-model")
    return keras.Model(tf.nest.pack_sequence_as(model._nested_inputs, inputs),
                       tf.nest.pack_sequence_as(model._nested_outputs, outputs), name=model.name)
