"""The reference that ``irv2 bench`` measures the tool against: plain Keras, written the
way its documentation shows (``keras.applications`` + ``load_img`` + ``preprocess_input``
+ ``predict``). Each runs in a process of its own (see ``harness.python_call``); this
module imports Keras only when one runs.
"""

from __future__ import annotations

import json
from pathlib import Path

TOP = 5


def keras_loop(folder: str | Path, weights: str | Path, batch_size: int,
               output: str | Path) -> None:
    """Every file in ``folder``, in batches: load_img + preprocess_input + model.predict.
    Writes one JSON line per image (path, top-5 class indices), as ``irv2 predict`` does."""
    import keras
    import numpy as np

    from ..results.labels import decode_top_k

    model = keras.applications.InceptionResNetV2(weights=str(weights))
    paths = sorted(Path(folder).iterdir())
    with open(output, "w") as out:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            images = np.stack([keras.utils.img_to_array(
                keras.utils.load_img(p, target_size=(299, 299))) for p in chunk])
            inputs = keras.applications.inception_resnet_v2.preprocess_input(images)
            for path, probabilities in zip(chunk, model.predict(inputs, verbose=0),
                                           strict=True):
                predictions = [{"index": p.index} for p in decode_top_k(probabilities, TOP)]
                out.write(json.dumps({"path": str(path), "predictions": predictions}) + "\n")
            out.flush()


def keras_recipe(weights: str | Path, image: str | Path) -> None:
    """One image: build keras.applications' model, load the .h5, load_img +
    preprocess_input + predict + decode, print the top 5. (``decode_predictions`` would
    download the class index, so the shipped copy decodes.)"""
    import keras

    from ..results.labels import decode_top_k

    model = keras.applications.InceptionResNetV2(weights=str(weights))
    x = keras.utils.img_to_array(keras.utils.load_img(image, target_size=(299, 299)))
    x = keras.applications.inception_resnet_v2.preprocess_input(x[None])
    for p in decode_top_k(model.predict(x, verbose=0)[0], TOP):
        print(p.rank, p.label, f"{p.score:.4f}")
