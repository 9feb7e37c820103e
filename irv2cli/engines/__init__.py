"""Engines: a preprocessed batch -> named outputs, by ONNX Runtime or the Keras reference."""
