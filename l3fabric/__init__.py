"""l3fabric: a BGP-routed Layer-3 container fabric."""

__version__ = "0.1.0"
