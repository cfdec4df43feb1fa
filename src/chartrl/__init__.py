"""chartrl: a Bitcoin trading daemon whose policy reads the chart."""

__version__ = "0.1.0"
