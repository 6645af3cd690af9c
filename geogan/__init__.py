"""geogan: synthetic, labelled Sentinel-1/2 training data from georeferenced scenes."""

__version__ = "0.1.0"
