"""Loaded by every Python started with this folder on PYTHONPATH (the decoding workers of
the hostile-file tests): registers the misbehaving test decoder with Pillow."""

import hostile_images  # noqa: F401
