"""Datasets of image pairs and change masks."""
