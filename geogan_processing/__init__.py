"""geogan's QGIS plugin: a Processing provider whose algorithms run the ``geogan`` command.

This folder is copied into a QGIS profile (``geogan qgis install``) or zipped for the plugin
manager (``geogan qgis package``) as the plugin ``geogan_processing``, together with
``algorithms.json``: each stage's parameters, made from geogan's own option models when it was
installed, so its help is the CLI's. It runs in QGIS's Python and never imports geogan.
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from .plugin import GeoganPlugin

    return GeoganPlugin()
