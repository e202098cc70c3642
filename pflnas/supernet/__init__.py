"""Supernets: every candidate op on every edge, mixed by architecture weights."""

from pflnas.supernet.network import Supernet, build_supernet

__all__ = ["Supernet", "build_supernet"]
