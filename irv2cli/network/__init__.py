"""The network in Keras: model, .h5 loading, generated weights; architecture.py is plain Python."""
