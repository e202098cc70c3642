"""Registry-driven checks of the space kinds and of the op roles.

Every built-in space's kind object must answer what the code computed before the kinds existed (the
formulas are restated here), agree with the sites of a derived architecture, and stay torch-free; every op
answers ``zero`` / ``param_free`` / ``trainable`` at strides 1 and 2, ``none`` always ``zero``.
"""

import subprocess
import sys

import pytest

from pflnas.arch.derive import derive_architecture
from pflnas.arch.sites import choice_sites
from pflnas.ops import PARAM_FREE, TRAINABLE, ZERO, get_op, list_ops
from pflnas.spaces import KINDS, SpaceKind, list_spaces, load_space
from pflnas.spaces.kinds import BlockKind, CellKind

SPACES = list_spaces()


def _old_reductions(space):
    n = space.layers
    return (n // 3, 2 * n // 3) if space.kind == "darts_cell" else ()


def _old_stages(space):
    types = space.cell_types()
    if space.kind == "nb201_cell":
        return [i // space.layers for i in range(len(types))]
    return [sum(t == "reduce" for t in types[: i + 1]) for i in range(len(types))]


def _uniform(space):
    return {
        f"{g}.{k}": {op: 1.0 / len(space.group_ops(g)) for op in space.group_ops(g)}
        for g, _ in space.alpha_groups()
        for k in space.choice_keys()
    }


def test_every_kind_is_registered_once_by_name():
    assert set(KINDS) == {"darts_cell", "nb201_cell", "resnet_block", "vit_block", "pit_block"}
    for name, kind in KINDS.items():
        assert isinstance(kind, SpaceKind) and kind.name == name
        assert isinstance(kind, BlockKind) == kind.is_block != isinstance(kind, CellKind)


@pytest.mark.parametrize("name", SPACES)
@pytest.mark.parametrize("mode", ["individual", "shared"])
def test_kind_answers_the_structure_of_every_space(name, mode):
    space = load_space(name).replace(alpha_mode=mode)
    kind = space.kind_spec
    assert kind is KINDS[space.kind]
    n = kind.count(space)
    if kind.is_block:
        sites = space.sites()
        assert n == len(sites)
        assert kind.reduction_layers(space) == tuple(s.index for s in sites if s.stride == 2)
        assert [kind.stage(space, i) for i in range(n)] == [s.stage for s in sites]
        assert kind.network_shape(space)[1] == n
    else:
        assert n == (space.layers if space.kind == "darts_cell" else 3 * space.layers)
        assert kind.reduction_layers(space) == _old_reductions(space)
        assert [kind.stage(space, i) for i in range(n)] == _old_stages(space)
        assert kind.network_shape(space) is None
    assert [space.group_of_cell(i) for i in range(n)] == [kind.group_of(space, i) for i in range(n)]
    assert {kind.group_of(space, i) for i in range(n)} == {g for g, _ in space.alpha_groups()}


@pytest.mark.parametrize("name", SPACES)
def test_kind_stages_agree_with_the_sites_of_a_derived_architecture(name):
    space = load_space(name).replace(alpha_mode="individual")
    arch = derive_architecture(space, _uniform(space))
    kind = space.kind_spec
    units = arch.blocks if space.is_block else arch.cells
    assert len(units) == kind.count(space)
    sites = choice_sites(space)
    for i, unit in enumerate(units):
        assert unit.name == kind.group_of(space, i)
        assert unit.type == ("reduce" if i in kind.reduction_layers(space) else "normal")
        stages = {s.stage for s in sites.values() if s.group == unit.name}
        assert stages == {kind.stage(space, i)}


def test_kinds_import_without_torch():
    code = "import sys, pflnas.spaces.kinds, pflnas.spaces; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", list_ops())
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_has_one_role_at_each_stride(name, stride):
    spec = get_op(name)
    role = spec.role(stride)
    assert role in (ZERO, PARAM_FREE, TRAINABLE)
    assert (role == ZERO) == spec.is_zero
    if not spec.is_zero:
        assert (role == PARAM_FREE) == (stride in spec.param_free_strides)


def test_none_is_zero_and_skip_connect_trains_at_stride_2():
    assert get_op("none").role(1) == get_op("none").role(2) == ZERO
    assert get_op("skip_connect").role(1) == PARAM_FREE
    assert get_op("skip_connect").role(2) == TRAINABLE  # FactorizedReduce
    assert get_op("max_pool_3x3").role(2) == PARAM_FREE and get_op("conv_3x3").role(1) == TRAINABLE
