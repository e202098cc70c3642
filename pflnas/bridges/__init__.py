"""Bridges to other NAS frameworks (optional extras; nothing here is imported by the core package).

* :mod:`pflnas.bridges.nni`: NNI 3.0 (``pip install 'pflnas[nni]'``).
"""
