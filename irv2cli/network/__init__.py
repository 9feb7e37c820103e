"""The network in Keras: the model, official .h5 loading, generated weights. Imports Keras."""
