"""A small U-Net for the loader's ``--train_steps`` check: how input-bound is training?

The TensorFlow segmentation tutorial trains a U-Net on Oxford pets; this is the same shape of
model (an encoder of strided convolutions, a decoder of transposed convolutions with skip
connections) without the pretrained MobileNet encoder, which would need a download. The
point is not accuracy but a realistic consumer: the same model is fitted for N steps fed by
the loader and fed from one batch held in memory, and the ratio of step times says how much
the input pipeline slows training.
"""

from __future__ import annotations

import time

import keras
import tensorflow as tf


def build_unet(height: int, width: int, num_classes: int, filters: tuple[int, ...] = (16, 32, 64),
               first_layer=None):
    """Keras U-Net: ``float32[B, H, W, 3]`` -> logits ``[B, H, W, num_classes]``.

    ``height`` and ``width`` must be divisible by ``2 ** len(filters)``; other sizes are padded
    inside the model and cropped back. ``first_layer`` (the loader's ``normalization_layer``)
    makes the model take ``uint8`` images and normalize them itself.
    """
    inputs = keras.Input((height, width, 3), dtype="uint8" if first_layer is not None else "float32")
    x = first_layer(inputs) if first_layer is not None else inputs
    factor = 2 ** len(filters)
    pad_h, pad_w = -height % factor, -width % factor
    x = keras.layers.ZeroPadding2D(((0, pad_h), (0, pad_w)))(x) if pad_h or pad_w else x
    skips = []
    for width_ in filters:
        x = keras.layers.Conv2D(width_, 3, padding="same", activation="relu")(x)
        skips.append(x)
        x = keras.layers.Conv2D(width_, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(filters[-1] * 2, 3, padding="same", activation="relu")(x)
    for width_, skip in zip(reversed(filters), reversed(skips)):
        x = keras.layers.Conv2DTranspose(width_, 3, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Concatenate()([x, skip])
        x = keras.layers.Conv2D(width_, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(num_classes, 1)(x)
    if pad_h or pad_w:
        x = keras.layers.Cropping2D(((0, pad_h), (0, pad_w)))(x)
    return keras.Model(inputs, x, name="unet")


def num_classes(manifest: dict) -> int:
    """Class ids from the transform are 0..K-1; without statistics masks keep their values."""
    if manifest.get("statistics"):
        return len(manifest["statistics"]["class_values"])
    values = manifest["flags"].get("mask_values")
    return max(values) + 1 if values else 256


class _StepsDone(keras.callbacks.Callback):
    """Calls ``progress(steps done)`` after every training step, counting from ``offset``."""

    def __init__(self, progress, offset: int):
        super().__init__()
        self._progress, self._offset = progress, offset

    def on_train_batch_end(self, batch, logs=None):
        self._progress(self._offset + batch + 1)


def _fit(model, dataset, steps: int, progress=None, offset: int = 0) -> float:
    """Mean wall time of a training step, over ``steps`` steps after a warm-up."""
    model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)  # tracing and compilation
    callbacks = [_StepsDone(progress, offset)] if progress is not None else []
    started = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
    return (time.perf_counter() - started) / steps


def compare_input_bound(dataset: tf.data.Dataset, manifest: dict, steps: int, first_layer=None,
                        progress=None) -> dict:
    """Fits the U-Net for ``steps`` steps fed by ``dataset`` (repeating) and fed from memory;
    calls ``progress(steps done)`` after each of the ``2 * steps`` timed steps."""
    image_info = manifest["image"]
    model = build_unet(image_info["height"], image_info["width"], num_classes(manifest),
                       first_layer=first_layer)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1))
    in_memory = tf.data.Dataset.from_tensors(next(iter(dataset))).repeat()
    loader_step = _fit(model, dataset, steps, progress)
    memory_step = _fit(model, in_memory, steps, progress, offset=steps)
    batch = int(next(iter(in_memory))[0].shape[0])
    return {"train_steps": steps, "batch_size": batch,
            "step_ms_loader": loader_step * 1e3, "step_ms_in_memory": memory_step * 1e3,
            "loader_slowdown": loader_step / memory_step,
            "train_images_per_s": batch / loader_step}
