"""The "geogan" Processing provider: one algorithm per entry of algorithms.json."""

import functools
import json
import os
import shutil
from pathlib import Path

from qgis.core import QgsProcessingProvider

from .algorithm import GeoganAlgorithm

HERE = Path(__file__).parent
SPEC = HERE / "algorithms.json"
EXECUTABLE = "GEOGAN_EXECUTABLE"  # the provider setting, and the environment variable of the same name


@functools.cache
def spec() -> dict:
    """algorithms.json, read once per QGIS session."""
    return json.loads(SPEC.read_text())


def executable() -> str:
    """The geogan command to run: the provider setting, else $GEOGAN_EXECUTABLE, else the one that
    installed this plugin, else ``geogan`` on the PATH."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig

        configured = ProcessingConfig.getSetting(EXECUTABLE)
    except Exception:  # Processing's Python part is not loaded (a bare PyQGIS script)
        configured = None
    for candidate in (configured, os.environ.get(EXECUTABLE), spec().get("executable")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return shutil.which("geogan") or "geogan"


class GeoganProvider(QgsProcessingProvider):
    def load(self):
        try:
            from processing.core.ProcessingConfig import ProcessingConfig, Setting

            ProcessingConfig.settingIcons[self.name()] = self.icon()
            ProcessingConfig.addSetting(
                Setting(
                    self.name(),
                    EXECUTABLE,
                    "geogan executable (of geogan's own Python environment)",
                    spec().get("executable") or "",
                    valuetype=Setting.FILE,
                )
            )
            ProcessingConfig.readSettings()
        except Exception:  # no Processing settings outside the Processing plugin
            pass
        self.refreshAlgorithms()
        return True

    def unload(self):
        try:
            from processing.core.ProcessingConfig import ProcessingConfig

            ProcessingConfig.removeSetting(EXECUTABLE)
        except Exception:
            pass

    def loadAlgorithms(self):  # noqa: N802 (QGIS's names)
        for entry in spec()["algorithms"]:
            self.addAlgorithm(GeoganAlgorithm(entry, executable))

    def id(self):
        return "geogan"

    def name(self):
        return "geogan"

    def longName(self):  # noqa: N802
        return f"geogan {spec().get('version', '')}: synthetic, labelled Sentinel-1/2 training data"
