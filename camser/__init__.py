"""camser: speech emotion recognition with co-attention based multi-level acoustic fusion."""
__version__ = "0.1.0"
