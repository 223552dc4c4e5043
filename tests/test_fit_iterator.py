"""``edgeclf.train.fit.one_iterator``: a training source of known size is fitted through one repeated
iterator; every epoch still sees each image once, ends with the same partial batch, and is reshuffled.
``without_autotune``: the validation pipeline Keras iterates every epoch runs without tf.data's autotuner
and yields the same batches."""

from __future__ import annotations

import numpy as np

from edgeclf._keras import keras
from edgeclf.data.dataset import ArraySplit
from edgeclf.data.pipeline import source_batches
from edgeclf.train.config import Optimizer
from edgeclf.train.fit import FitPlan, fit, one_iterator, without_autotune

N, BATCH = 10, 4  # 3 batches per epoch: 4, 4 and a partial 2


def _indexed_split(n: int = N) -> ArraySplit:
    """Image i is filled with the value i, so a batch's pixels name the images in it."""
    x = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 2, 2, 3)).copy()
    return ArraySplit(x=x, labels=np.arange(n, dtype=np.int32) % 2)


def test_each_epoch_of_the_repeated_batches_is_a_reshuffled_pass_over_all_images():
    batches, steps = one_iterator(source_batches(_indexed_split(), BATCH, True, None, seed=3))
    assert steps == 3
    it = iter(batches)
    orders = []
    for _ in range(4):
        epoch = [next(it)[0].numpy()[:, 0, 0, 0].astype(int) for _ in range(steps)]
        assert [len(b) for b in epoch] == [4, 4, 2]
        order = np.concatenate(epoch)
        assert sorted(order) == list(range(N))
        orders.append(tuple(order))
    assert len(set(orders)) > 1  # reshuffled between epochs, not one order repeated


def test_batches_of_unknown_number_are_left_as_they_are():
    batches = source_batches(_indexed_split(), BATCH, True).filter(lambda a, b: True)  # cardinality UNKNOWN
    same, steps = one_iterator(batches)
    assert steps is None and same is batches


class _BatchesPerEpoch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.counts: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.counts.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.counts[-1] += 1


def test_fit_runs_every_epoch_over_the_whole_source_once():
    model = keras.Sequential([keras.layers.Input((2, 2, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    counter = _BatchesPerEpoch()
    history = fit(model, _indexed_split(), 2, FitPlan(optimizer=Optimizer.SGD, lr=0.01, batch_size=BATCH), 3,
                  [counter])
    assert counter.counts == [3, 3, 3]
    assert len(history.history["loss"]) == 3
    assert int(model.optimizer.iterations.numpy()) == 9


def test_validation_pipeline_without_autotune_yields_the_same_batches():
    ds = source_batches(_indexed_split(), BATCH, False)
    plain = without_autotune(ds)
    assert ds.options().autotune.enabled is not False and plain.options().autotune.enabled is False
    for (a, b), (c, d) in zip(ds, plain, strict=True):
        assert np.array_equal(a.numpy(), c.numpy()) and np.array_equal(b.numpy(), d.numpy())


class _ValidationOptions(keras.callbacks.Callback):
    """Records, at each validation, whether the dataset Keras evaluates has autotuning on."""

    def __init__(self):
        super().__init__()
        self.autotune: list[bool | None] = []

    def on_test_begin(self, logs=None):
        self.autotune.append(self.model._eval_data_handler._dataset.options().autotune.enabled)


def test_fit_validates_every_epoch_without_autotune():
    model = keras.Sequential([keras.layers.Input((2, 2, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    seen = _ValidationOptions()
    history = fit(model, _indexed_split(), 2, FitPlan(optimizer=Optimizer.SGD, lr=0.01, batch_size=BATCH), 2,
                  [seen], validation=_indexed_split(6))
    assert seen.autotune == [False, False] and len(history.history["val_accuracy"]) == 2
