"""Draw a geogan algorithm's Processing dialog to a PNG, headless (Qt's offscreen platform).

Run with QGIS's Python after `geogan qgis install`:

    QGIS_CUSTOM_CONFIG_PATH=... /usr/bin/python3 docs/qgis_screenshot.py tile docs/qgis-tile-dialog.png
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import QgsApplication  # noqa: E402

QgsApplication.setPrefixPath("/usr", True)
app = QgsApplication([], True)
app.initQgis()
config = Path(os.environ.get("QGIS_CUSTOM_CONFIG_PATH") or "~/.local/share/QGIS/QGIS3").expanduser()
sys.path[:0] = [str(config / "profiles" / "default" / "python" / "plugins"), "/usr/share/qgis/python/plugins"]

from geogan_processing.provider import GeoganProvider  # noqa: E402
from processing.core.Processing import Processing  # noqa: E402
from processing.gui.AlgorithmDialog import AlgorithmDialog  # noqa: E402

Processing.initialize()
provider = GeoganProvider()  # kept: the registry does not own a Python provider
QgsApplication.processingRegistry().addProvider(provider)
algorithm = QgsApplication.processingRegistry().algorithmById(f"geogan:{sys.argv[1]}")
dialog = AlgorithmDialog(algorithm.create(), False, None)
dialog.resize(1100, 760)
dialog.show()
app.processEvents()
dialog.grab().save(sys.argv[2])
print(f"wrote {sys.argv[2]}")
