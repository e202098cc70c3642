"""Typed configuration: frozen dataclasses loaded from YAML, with typed and ``key=value`` overrides.

:mod:`.loader` is the generic YAML -> dataclass machinery; :mod:`.search` the search config and
:mod:`.validate` its range checks; :mod:`.build` the one public way to build a search config from arguments,
which the CLI and the study runner both call. Nothing here imports torch.
"""
