"""Inputs: paths (files, folders, globs) and images (decode, orient, RGB, resize), decoded
in isolated worker processes."""
