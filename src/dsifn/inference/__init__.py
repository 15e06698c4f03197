"""Prediction on image pairs and whole scenes."""
