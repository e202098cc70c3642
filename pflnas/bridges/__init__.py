"""Bridges to other NAS frameworks (optional extras; nothing here is imported by the core package).

* :mod:`pflnas.bridges.nni`: NNI 3.0 (``pip install 'pflnas[nni]'``).
* :mod:`pflnas.bridges.timm_models`: derived networks as timm models (``timm.create_model("pflnas", ...)``).
"""
