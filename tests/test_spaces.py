import pytest

from pflnas.errors import ConfigError
from pflnas.spaces import list_spaces, load_space

SPACES = list_spaces()


def test_builtin_spaces():
    assert {"cell_v1", "darts", "nb201"} <= set(SPACES)


def test_cell_v1_definition():
    s = load_space("cell_v1")
    assert s.ops == ("conv_3x3", "dw_conv_3x3", "max_pool_3x3", "avg_pool_3x3", "skip_connect")
    assert s.alpha_mode == "individual" and len(s.edges()) == 14
    assert s.reduction_layers() == (2, 5)
    assert len(s.alpha_groups()) == 8
    assert s.replace(alpha_mode="shared").alpha_groups() == [("normal", "normal"), ("reduce", "reduce")]


def test_darts_and_nb201():
    d = load_space("darts")
    assert len(d.ops) == 8 and "none" in d.ops and d.alpha_mode == "shared"
    n = load_space("nb201")
    assert len(n.edges()) == 6 and n.concat() == (3,) and n.num_cells() == 15


def test_load_by_path(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("name: mine\nkind: darts_cell\nops: [max_pool_3x3, conv_3x3]\nnodes: 2\n")
    s = load_space(str(p))
    assert s.name == "mine" and len(s.edges()) == 2 + 3


@pytest.mark.parametrize(
    "body, match",
    [
        ("name: x\nkind: weird\nops: [conv_3x3]\n", "unknown kind"),
        ("name: x\nkind: darts_cell\nops: [conv_9x9]\n", "unknown op"),
        ("name: x\nkind: darts_cell\nops: [conv_3x3]\ncolour: red\n", "unknown key"),
        ("name: x\nkind: darts_cell\nops: [none]\n", "other than 'none'"),
        ("name: x\nkind: darts_cell\nops: [conv_3x3]\nalpha_mode: both\n", "alpha_mode"),
        ("name: x\nkind: darts_cell\nops: [conv_3x3]\nnodes: 0\n", "positive integer"),
        ("kind: darts_cell\nops: [conv_3x3]\n", "missing required key"),
        ("[1, 2", "not valid YAML"),
    ],
)
def test_bad_space_files(tmp_path, body, match):
    p = tmp_path / "bad.yaml"
    p.write_text(body)
    with pytest.raises(ConfigError, match=match):
        load_space(str(p))


def test_unknown_space_name():
    with pytest.raises(ConfigError, match="built-in spaces"):
        load_space("nope")
