"""One geogan stage as a Processing algorithm: QGIS parameters in, the ``geogan`` command run, layers out.

Each algorithm is one entry of algorithms.json (made from geogan's option models by
``geogan qgis install``). A parameter left at its default is not passed on, so geogan's own
defaults and ``--config`` file apply; progress comes from ``GEOGAN_PROGRESS=lines``.
"""

import glob
import json
import os
import queue
import subprocess
import threading

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputFolder,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
    QgsProcessingUtils,
)

PROGRESS = "geogan-progress "
VECTOR_FORMATS = ["gpkg", "shp", "geojson", "fgb"]


class GeoganAlgorithm(QgsProcessingAlgorithm):
    def __init__(self, entry, executable):
        super().__init__()
        self.entry, self.executable = entry, executable

    # --- what QGIS shows ---------------------------------------------------------------------

    def createInstance(self):  # noqa: N802 (QGIS's names)
        return GeoganAlgorithm(self.entry, self.executable)

    def name(self):
        return self.entry["id"]

    def displayName(self):  # noqa: N802
        return self.entry["name"]

    def group(self):
        return self.entry["group"]

    def groupId(self):  # noqa: N802
        return self.entry["group_id"]

    def shortHelpString(self):  # noqa: N802
        return self.entry["help"]

    def initAlgorithm(self, config=None):  # noqa: N802
        for spec in self.entry["params"]:
            parameter = _parameter(spec)
            parameter.setHelp(spec["description"])
            if spec.get("advanced"):
                parameter.setFlags(parameter.flags() | parameter.FlagAdvanced)
            self.addParameter(parameter)
        for spec in self.entry["outputs"]:
            self.addOutput(_OUTPUTS[spec["kind"]](spec["name"], spec["description"]))

    # --- running it --------------------------------------------------------------------------

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        values, args = {}, [self.executable(), *self.entry["command"]]
        for spec in self.entry["params"]:
            value = self._value(spec, parameters, context, feedback)
            values[spec["name"]] = value
            args += _arguments(spec, value)
        feedback.pushCommandInfo(" ".join(_quoted(a) for a in args))
        _run(args, feedback)
        return self._outputs(values, context)

    def _value(self, spec, parameters, context, feedback):
        name, kind = spec["name"], spec["kind"]
        if parameters.get(name) in (None, ""):
            return None
        if kind == "raster":
            layer = self.parameterAsRasterLayer(parameters, name, context)
            return layer.source() if layer else None
        if kind == "vector":
            return self.parameterAsCompatibleSourceLayerPath(
                parameters, name, context, VECTOR_FORMATS, "gpkg", feedback
            )
        if kind == "folder_out":
            return self.parameterAsFileOutput(parameters, name, context) or None
        if kind == "raster_out":
            return self.parameterAsOutputLayer(parameters, name, context)
        if kind in ("folder", "file"):
            return self.parameterAsFile(parameters, name, context)
        if kind == "crs":
            return self.parameterAsCrs(parameters, name, context).authid() or None
        if kind == "extent":
            return _extent_file(
                self.parameterAsExtent(parameters, name, context),
                self.parameterAsExtentCrs(parameters, name, context),
            )
        if kind == "enum":
            return spec["options"][self.parameterAsEnum(parameters, name, context)]
        if kind == "bool":
            return self.parameterAsBool(parameters, name, context)
        if kind == "int":
            return self.parameterAsInt(parameters, name, context)
        if kind == "float":
            return self.parameterAsDouble(parameters, name, context)
        return self.parameterAsString(parameters, name, context)

    def _outputs(self, values, context):
        results = {}
        for spec in self.entry["outputs"]:
            where = spec["path"].format(**{k: v for k, v in values.items() if v is not None})
            if "{" in where:  # made from a parameter that was not given: not written by this run
                continue
            paths = sorted(glob.glob(where)) if "*" in where else [where]
            paths = [p for p in paths if os.path.exists(p.split("|")[0])]
            if not paths:
                continue
            results[spec["name"]] = paths if spec["kind"] == "layers" else paths[0]
            if spec["kind"] in ("vector", "raster", "layers"):
                for path in paths:
                    label = os.path.splitext(os.path.basename(path.split("|")[0]))[0]
                    details = QgsProcessingContext.LayerDetails(label, context.project(), spec["name"])
                    context.addLayerToLoadOnCompletion(path, details)
        return results


def _parameter(spec):
    name, text, kind = spec["name"], spec["label"], spec["kind"]
    optional, default = spec.get("optional", True), spec.get("default")
    if kind == "raster":
        return QgsProcessingParameterRasterLayer(name, text, optional=optional)
    if kind == "vector":
        return QgsProcessingParameterVectorLayer(
            name, text, [QgsProcessing.TypeVectorPolygon], optional=optional
        )
    if kind == "folder_out":
        return QgsProcessingParameterFolderDestination(name, text, optional=optional)
    if kind == "raster_out":
        return QgsProcessingParameterRasterDestination(name, text, optional=optional)
    if kind == "folder":
        return QgsProcessingParameterFile(name, text, QgsProcessingParameterFile.Folder, optional=optional)
    if kind == "file":
        return QgsProcessingParameterFile(
            name,
            text,
            QgsProcessingParameterFile.File,
            extension=spec.get("extension", ""),
            optional=optional,
        )
    if kind == "crs":
        return QgsProcessingParameterCrs(name, text, optional=optional)
    if kind == "extent":
        return QgsProcessingParameterExtent(name, text, optional=optional)
    if kind == "enum":
        index = spec["options"].index(default) if default in spec["options"] else None
        return QgsProcessingParameterEnum(name, text, spec["options"], defaultValue=index, optional=optional)
    if kind == "bool":
        return QgsProcessingParameterBoolean(name, text, defaultValue=bool(default), optional=optional)
    if kind in ("int", "float"):
        number = (
            QgsProcessingParameterNumber.Integer if kind == "int" else QgsProcessingParameterNumber.Double
        )
        parameter = QgsProcessingParameterNumber(name, text, number, defaultValue=default, optional=optional)
        if spec.get("min") is not None:
            parameter.setMinimum(spec["min"])
        if spec.get("max") is not None:
            parameter.setMaximum(spec["max"])
        return parameter
    return QgsProcessingParameterString(name, text, defaultValue=default, optional=optional)


def _arguments(spec, value):
    """The command-line arguments of one parameter's value (none where it is the default)."""
    if value is None or value == "" or (value == spec.get("default") and not spec.get("positional")):
        return []
    flag = spec["flag"]
    if spec.get("positional"):
        return [f"{flag}{value}"] if flag else str(value).split()
    if spec["kind"] == "bool":
        return [flag if value else "--no-" + flag[2:]]
    if spec.get("values") == "several":  # a tuple: --split-fractions 0.8 0.1 0.1
        return [flag, *str(value).replace(",", " ").split()]
    if spec.get("values") == "repeat":  # a list: --sensor s2 --sensor s1
        return [a for item in str(value).replace(",", " ").split() for a in (flag, item)]
    return [flag, str(value)]


def _extent_file(rect, crs):
    """A GeoJSON polygon of a map extent in its own CRS (GDAL reads the "crs" member), for --grid."""
    if rect.isNull() or not crs.isValid():
        return None
    x0, y0, x1, y1 = rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    feature = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    collection = {
        "type": "FeatureCollection",
        "features": [feature],
        "crs": {"type": "name", "properties": {"name": crs.authid()}},
    }
    path = os.path.join(QgsProcessingUtils.tempFolder(), "geogan_aoi_extent.geojson")
    with open(path, "w") as out:
        json.dump(collection, out)
    return path


def _quoted(arg):
    return f"'{arg}'" if " " in arg else arg


def _run(args, feedback):
    """Run geogan, its progress into ``feedback``; the process ends when the user cancels."""
    env = {**os.environ, "GEOGAN_PROGRESS": "lines", "COLUMNS": "160", "NO_COLOR": "1", "TERM": "dumb"}
    try:
        process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        )
    except OSError as err:
        raise QgsProcessingException(
            f"cannot run {args[0]} ({err}): set the geogan executable under Settings > Options > "
            "Processing > Providers > geogan, or GEOGAN_EXECUTABLE"
        ) from None
    lines = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)
    reader.start()
    errors = []
    while True:
        if feedback.isCanceled():
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
            raise QgsProcessingException("cancelled: the geogan run was stopped (re-run it to resume)")
        try:
            line = lines.get(timeout=0.2).rstrip()
        except queue.Empty:
            if process.poll() is not None and not reader.is_alive() and lines.empty():
                break
            continue
        if line.startswith(PROGRESS):
            percent, _, text = line[len(PROGRESS) :].partition(" ")
            feedback.setProgressText(text)
            feedback.setProgress(float(percent))
        elif line.startswith("error:") or errors:
            errors.append(line)
        elif line.strip():
            feedback.pushConsoleInfo(line)
    process.stdout.close()
    if process.returncode:
        message = (
            " ".join(" ".join(errors).split()).removeprefix("error: ") or f"exit status {process.returncode}"
        )
        raise QgsProcessingException(f"geogan failed (exit status {process.returncode}): {message}")


_OUTPUTS = {
    "vector": QgsProcessingOutputVectorLayer,
    "raster": QgsProcessingOutputRasterLayer,
    "layers": QgsProcessingOutputMultipleLayers,
    "folder": QgsProcessingOutputFolder,
    "file": QgsProcessingOutputFile,
}
