"""Files and pixels: the pair reader, the one image reader, staged writes, pictures, torch files.

The lowest package: it imports nothing of dsifn above it (errors, scaling and band lists only).
"""
