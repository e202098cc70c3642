"""Homogeneous architectures (every edge or block uses one op): the layer-level study's networks."""

import pytest
import torch
from _spaces import tiny

from pflnas.arch import load_architecture
from pflnas.arch.homogeneous import homogeneous_architecture
from pflnas.cli.main import main
from pflnas.errors import ConfigError
from pflnas.models import build_network
from pflnas.ops import get_op
from pflnas.spaces import list_spaces, load_space

CASES = [
    (name, op)
    for name in list_spaces()
    for op in load_space(name).ops
    if not get_op(op).is_zero and 1 in get_op(op).strides  # a stride-2-only op can only be a --reduce-op
]


@pytest.mark.parametrize(("name", "op"), CASES)
def test_every_op_of_every_space(name, op):
    space = tiny(name)
    reduce_op = None
    if space.is_block and "reduce" in dict(space.alpha_groups()).values() and op not in space.ops_at(2):
        reduce_op = space.ops_at(2)[0]
    arch = homogeneous_architecture(space, op, reduce_op)
    expected = {op} | ({reduce_op} if reduce_op else set())
    assert set(arch.op_counts()) == expected
    assert arch.provenance["source"] == "homogeneous" and arch.provenance["op"] == op
    if not space.is_block and space.keep_edges is not None:  # DARTS cells: the chain n <- n-1, n-2
        assert all(
            {e.source for e in c.edges if e.node == n} == {n - 1, n - 2} for c in arch.cells for n in (2, 5)
        )
    size = 32 if space.is_block else 16
    kwargs = {} if space.is_block else {"init_channels": 4, "layers": 3 if space.kind == "darts_cell" else 1}
    assert build_network(arch, **kwargs)(torch.randn(1, 3, size, size)).shape == (1, 10)


def test_errors_name_the_fix():
    with pytest.raises(ConfigError, match="give --reduce-op"):
        homogeneous_architecture(load_space("resnet50_block"), "identity")
    with pytest.raises(ConfigError, match="not a candidate"):
        homogeneous_architecture(load_space("cell_v1"), "sep_conv_5x5")
    with pytest.raises(ConfigError, match="no connection"):
        homogeneous_architecture(load_space("darts"), "none")


def test_cli(tmp_path, capsys):
    out = tmp_path / "h.json"
    args = ["arch", "homogeneous", "--space", "resnet50_block", "--op", "identity", "--reduce-op", "conv_3x3"]
    assert main([*args, "--set", "space.skeleton.width_mult=0.5", "--out", str(out)]) == 0
    arch = load_architecture(out)
    assert arch.op_counts() == {"identity": 13, "conv_3x3": 3} and arch.space.skeleton["width_mult"] == 0.5
    assert main([*args, "--out", str(out)]) == 2  # exists, no --force
    assert (
        main(
            [
                "arch",
                "homogeneous",
                "--space",
                "cell_v1",
                "--op",
                "conv_3x3",
                "--set",
                "run.x=1",
                "--out",
                str(tmp_path / "x.json"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--force" in err and "only space.KEY=VALUE" in err
