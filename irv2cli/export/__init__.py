"""Export: Keras -> ONNX and the other formats, with the preprocessing contract. Imports Keras."""
