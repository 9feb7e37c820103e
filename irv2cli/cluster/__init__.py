"""Runs over a Ray cluster with Ray Data (the optional ``ray`` extra): ``RayRunner``."""
