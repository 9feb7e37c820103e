"""Fitting a 10-class head on 2,000 synthetic 1536-d features: solvers and thread counts.

    python docs/train_bench.py [--keras]

Prints each scikit-learn solver's time for the five strengths irv2 train tries, with one
BLAS/OpenMP thread and with the default, then ``fit_head`` itself; with ``--keras``, a
Keras Dense + softmax fitted with Adam for one strength. A measurement, not a test.
"""

import sys
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits


def main() -> None:
    rng = np.random.default_rng(0)
    classes, count, dim = 10, 2000, 1536
    centres = rng.gamma(1.0, 0.5, (classes, dim))
    y = np.repeat(np.arange(classes), count // classes)
    x = np.maximum(centres[y] + rng.normal(0, 3, (count, dim)), 0).astype(np.float32)
    order = rng.permutation(count)
    fit, held = order[:1600], order[1600:]
    started = time.perf_counter()
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    print(f"import scikit-learn: {time.perf_counter() - started:.2f} s")

    from irv2cli.training.fit import STRENGTHS, fit_head
    for threads in (1, None):
        with threadpool_limits(threads):
            for solver in ("lbfgs", "newton-cg", "saga"):
                started, best = time.perf_counter(), 0.0
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for c in STRENGTHS:
                        model = make_pipeline(StandardScaler(), LogisticRegression(
                            C=c, solver=solver, max_iter=1000, class_weight="balanced"))
                        model.fit(x[fit], y[fit])
                        best = max(best, (model.predict(x[held]) == y[held]).mean())
                print(f"threads={threads or 'default'} {solver}: {len(STRENGTHS)} strengths "
                      f"in {time.perf_counter() - started:.2f} s, best accuracy {best:.3f}")
    started = time.perf_counter()
    fitted = fit_head(x[fit], y[fit], x[held], y[held], classes=classes)
    print(f"fit_head: {time.perf_counter() - started:.2f} s, C={fitted.c:g}")
    if "--keras" in sys.argv:
        started = time.perf_counter()
        import keras
        print(f"import keras: {time.perf_counter() - started:.2f} s")
        started = time.perf_counter()
        model = keras.Sequential([keras.Input((dim,)), keras.layers.Normalization(),
                                  keras.layers.Dense(classes, activation="softmax",
                                                     kernel_regularizer=keras.regularizers.l2(1e-3))])
        model.layers[0].adapt(x[fit])
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x[fit], y[fit], epochs=50, batch_size=64, verbose=0)
        accuracy = model.evaluate(x[held], y[held], verbose=0)[1]
        print(f"keras, Adam, 50 epochs, one strength: {time.perf_counter() - started:.2f} s, "
              f"accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
