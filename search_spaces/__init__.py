"""Search-space definitions (YAML data files), installed with pflnas. Load them with ``pflnas.load_space``."""
