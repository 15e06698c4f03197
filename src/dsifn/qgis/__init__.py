"""The QGIS plugin dsifn ships (``plugin/dsifn_change``) and its installation (:mod:`.install`).

The plugin itself runs inside QGIS's Python and imports nothing of dsifn; it is package data,
not a part of this package's import tree.
"""
