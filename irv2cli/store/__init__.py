"""The store: everything under $IRV2_HOME (weights cache and download, locks, atomic writes)."""
