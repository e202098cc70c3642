"""Analysis of search runs: read run / study directories, tidy tables, statistics, figures.

Reads only run directories (config.yaml, metrics.jsonl, found.json, run.json), never training internals.
"""

from pflnas.analysis.compare import COMPARE_COLUMNS, compare
from pflnas.analysis.figures import new_figure, op_color, save_figure
from pflnas.analysis.frames import (
    CHOICE_COLUMNS,
    SUMMARY_COLUMNS,
    TRAJECTORY_COLUMNS,
    choices_frame,
    summary_frame,
    trajectory_frame,
)
from pflnas.analysis.inference import holm, min_p_rank, t_interval
from pflnas.analysis.load import IncompleteRunWarning, RunData, load_run, load_runs
from pflnas.analysis.plots import (
    draw_architecture,
    draw_blocks,
    draw_cell,
    plot_accuracy_vs_latency,
    plot_op_frequency,
    plot_pareto,
    plot_probability_heatmap,
    plot_share_bars,
    plot_trajectories,
)
from pflnas.analysis.stats import (
    SHARE_COLUMNS,
    cliffs_delta,
    collapse_summary,
    pareto_mask,
    per_run,
    share_table,
    wilson_interval,
)
from pflnas.arch.chance import chance_share, derivation_rule, share_distribution
from pflnas.arch.collapse import (
    DEFAULT_THRESHOLDS,
    SKIP_OPS,
    CollapseThresholds,
    collapse_diagnostics,
    collapse_flags,
    edge_entropy,
    is_skip,
    normalized_entropy,
    param_free_mass,
    skip_count,
    skip_counts,
    skip_mass,
)
from pflnas.arch.sites import ChoiceSite, choice_sites

__all__ = [
    "CHOICE_COLUMNS",
    "COMPARE_COLUMNS",
    "DEFAULT_THRESHOLDS",
    "SHARE_COLUMNS",
    "SKIP_OPS",
    "SUMMARY_COLUMNS",
    "TRAJECTORY_COLUMNS",
    "ChoiceSite",
    "CollapseThresholds",
    "IncompleteRunWarning",
    "RunData",
    "chance_share",
    "choice_sites",
    "choices_frame",
    "cliffs_delta",
    "derivation_rule",
    "collapse_diagnostics",
    "collapse_flags",
    "collapse_summary",
    "compare",
    "draw_architecture",
    "draw_blocks",
    "draw_cell",
    "edge_entropy",
    "holm",
    "is_skip",
    "load_run",
    "load_runs",
    "min_p_rank",
    "new_figure",
    "normalized_entropy",
    "op_color",
    "param_free_mass",
    "pareto_mask",
    "per_run",
    "plot_accuracy_vs_latency",
    "plot_op_frequency",
    "plot_pareto",
    "plot_probability_heatmap",
    "plot_share_bars",
    "plot_trajectories",
    "save_figure",
    "share_distribution",
    "share_table",
    "skip_count",
    "skip_counts",
    "skip_mass",
    "summary_frame",
    "t_interval",
    "trajectory_frame",
    "wilson_interval",
]
