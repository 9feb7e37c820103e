"""``irv2 bench``: measured pipelines against a plain Keras loop, each in its own process."""
