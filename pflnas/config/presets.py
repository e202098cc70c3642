"""The named presets shipped in ``pflnas/presets/*.yaml``: a budget or protocol to start a search from."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pflnas.errors import ConfigError
from pflnas.names import name_hint


def list_presets() -> list[str]:
    """The named presets (``pflnas/presets/*.yaml``): help texts and listings read them from here."""
    return sorted(p.stem for p in Path(str(resources.files("pflnas.presets"))).glob("*.yaml"))


def preset_path(name: str) -> Path:
    names = list_presets()
    if name not in names:  # also keeps a name like ../x from reaching outside the presets
        raise ConfigError(
            f"unknown preset {name!r}{name_hint(name, names)}; available presets: {', '.join(names)}"
        )
    return Path(str(resources.files("pflnas.presets"))) / f"{name}.yaml"
