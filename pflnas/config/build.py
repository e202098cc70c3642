"""The one way to build a search config from arguments: the ``pflnas search`` command and the study runner
both call :func:`build_search_config`, so a study checks exactly the config each of its searches will run.

Precedence (lowest first): dataclass defaults < preset < config file < typed flags < ``--set`` strings.
Flags are merged as the typed values they are; only ``--set`` items are text, parsed as YAML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pflnas.config.loader import build_config, read_yaml
from pflnas.config.presets import preset_path
from pflnas.config.search import SearchConfig
from pflnas.config.validate import validate_search_config


def build_search_config(
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    sets: Sequence[str] = (),
) -> SearchConfig:
    """The validated search config of these arguments.

    ``flags`` maps dotted config keys (``run.epochs``, ``space.name``) to typed values; ``sets`` are
    ``key=value`` strings whose values are YAML, as ``--set`` takes them. Raises :class:`ConfigError` with
    one line naming the key.
    """
    layers = []
    if preset:
        layers.append(read_yaml(preset_path(preset)))
    if config_file:
        layers.append(read_yaml(config_file))
    cfg = build_config(SearchConfig, layers, sets, typed=flags)
    validate_search_config(cfg)
    return cfg
