"""The built-in ops: one table of names, contexts, strides and parameter-free strides, without torch.

Each row registers its op once per context with a :class:`~pflnas.lazy.LazyFactory` naming the
function that builds it (the op's own name in that context's module, unless ``alias`` says otherwise), so
listing, validating and describing ops never imports torch or timm; building one imports its module.
``none`` declares no parameter-free stride: it is the zero op, neither parameter-free nor trainable.
"""

from __future__ import annotations

from pflnas.lazy import LazyFactory
from pflnas.ops.registry import register_op

MODULES = {
    "cell": "pflnas.ops.primitives",
    "bottleneck": "pflnas.ops.bottleneck",
    "token": "pflnas.ops.token",
}
BOTH = (1, 2)
ALL = tuple(MODULES)


def _declare(
    name: str,
    contexts: tuple[str, ...],
    description: str,
    *,
    param_free_strides: tuple[int, ...] = (),
    strides: tuple[int, ...] = BOTH,
    is_zero: bool = False,
    alias: dict[str, str] | None = None,
) -> None:
    for context in contexts:
        function = (alias or {}).get(context, name)
        register_op(
            name,
            context=context,
            param_free_strides=param_free_strides,
            strides=strides,
            is_zero=is_zero,
            description=description,
        )(LazyFactory(f"{MODULES[context]}:{function}"))


_declare("none", ("cell",), "zeros (no connection)", is_zero=True)
_declare("skip_connect", ("cell",), "identity; FactorizedReduce at stride 2", param_free_strides=(1,))
_declare("max_pool_3x3", ALL, "3x3 max-pool", param_free_strides=BOTH)
_declare("avg_pool_3x3", ALL, "3x3 average-pool, padding excluded", param_free_strides=BOTH)
_declare("conv_3x3", ("cell", "bottleneck"), "3x3 conv (ReLU-Conv-BN in cells, Conv-BN-ReLU in bottlenecks)")
_declare("conv_1x1", ("cell",), "ReLU-Conv1x1-BN")
_declare(
    "dw_conv_3x3",
    ("cell", "bottleneck"),
    "depthwise-separable 3x3 (in cells as DARTS' sep_conv_3x3)",
    alias={"cell": "sep_conv_3x3"},
)
_declare("sep_conv_3x3", ("cell",), "DARTS separable 3x3 (two stacked depthwise-separable convs)")
_declare("sep_conv_5x5", ("cell",), "DARTS separable 5x5")
_declare("dil_conv_3x3", ("cell",), "DARTS dilated separable 3x3 (dilation 2)")
_declare("dil_conv_5x5", ("cell",), "DARTS dilated separable 5x5 (dilation 2)")
_declare(
    "identity", ("bottleneck",), "identity (stride-1 positions only)", param_free_strides=(1,), strides=(1,)
)
_declare(
    "avg_pool_2x2_conv_3x3",
    ("bottleneck",),
    "2x2 average-pool (stride 2) then Conv3x3-BN-ReLU: the R50-hybrid downsampling op",
    strides=(2,),
)
_declare("attention", ("token",), "multi-head self-attention", strides=(1,))
