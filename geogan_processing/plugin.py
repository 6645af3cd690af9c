"""The plugin object QGIS loads: it adds the geogan provider to the Processing registry."""

from qgis.core import QgsApplication

from .provider import GeoganProvider


class GeoganPlugin:
    def __init__(self):
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS's names)
        self.provider = GeoganProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
