"""``pflnas arch`` / ``pflnas profile`` and the DARTS genotype import: valid records round-trip, every kind
of malformed found.json or genotype is refused with one line and exit code 2, never a traceback."""

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_models import DARTS_V1, DARTS_V2, PC_DARTS_CIFAR, random_arch

from pflnas.arch.darts_genotype import architecture_from_genotype, parse_genotype
from pflnas.arch.record import load_architecture
from pflnas.cli.main import main
from pflnas.errors import ArchitectureError
from pflnas.measure.counting import count_parameters
from pflnas.models import build_network
from pflnas.spaces import load_space

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets and timings: one thread


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def valid_dict():
    """A valid individual-alpha cell_v1 record (8 cells) as a dict."""
    return random_arch(load_space("cell_v1"), seed=5).to_dict()


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err, command="arch"):
    assert code == 2
    assert err.startswith(f"pflnas {command}: error: ")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


# --- validate / show ---------------------------------------------------------------------------------
def test_validate_ok(tmp_path, capsys, valid_dict):
    path = write_json(tmp_path / "found.json", valid_dict)
    code, out, err = run_cli(capsys, "arch", "validate", path)
    assert code == 0 and err == ""
    assert out.startswith(
        f"ok: {path}: space cell_v1 (darts_cell, individual alphas), 8 cells, 64 kept edges"
    )


def _set(path_keys, value):
    def mutate(d):
        target = d
        for key in path_keys[:-1]:
            target = target[key]
        target[path_keys[-1]] = value

    return mutate


def _delete(path_keys):
    def mutate(d):
        target = d
        for key in path_keys[:-1]:
            target = target[key]
        del target[path_keys[-1]]

    return mutate


EDGE0 = ("cells", 0, "edges", 0)
MUTATIONS = {
    "unknown schema version": (_set(("schema_version",), 2), "unsupported schema_version 2"),
    "schema version missing": (_delete(("schema_version",)), "unsupported schema_version None"),
    "unknown op": (_set((*EDGE0, "op"), "conv_9x9"), "not a registered op"),
    "op from another space": (_set((*EDGE0, "op"), "sep_conv_5x5"), "not a candidate of space 'cell_v1'"),
    "edge to a missing node": (_set((*EDGE0, "node"), 7), "edge into node 7"),
    "source >= node": (_set((*EDGE0, "source"), 2), "reads a missing or later node"),
    "negative source": (_set((*EDGE0, "source"), -1), "reads a missing or later node"),
    "wrong number of cells": (lambda d: d["cells"].pop(), "wrong number of cells"),
    "cells out of order": (lambda d: d["cells"].reverse(), "out of place"),
    "wrong kind for a built-in space": (_set(("space", "kind"), "nb201_cell"), "built-in space"),
    "unknown space key": (_set(("space", "colour"), "red"), "invalid 'space'"),
    "space not an object": (_set(("space",), "cell_v1"), "'space' must be an object"),
    "missing cells": (_delete(("cells",)), "missing key 'cells'"),
    "missing space": (_delete(("space",)), "'space' must be an object"),
    "missing edges": (_delete(("cells", 0, "edges")), "missing key 'edges'"),
    "missing op": (_delete((*EDGE0, "op")), "missing key 'op'"),
    "cells not a list": (_set(("cells",), {}), "'cells' must be a list"),
    "cell not an object": (_set(("cells", 0), []), r"cells\[0\] must be an object"),
    "node is a string": (_set((*EDGE0, "node"), "2"), "'node' must be an integer"),
    "node is a bool": (_set((*EDGE0, "node"), True), "'node' must be an integer"),
    "op is a number": (_set((*EDGE0, "op"), 3), "'op' must be a str"),
    "concat of strings": (_set(("cells", 0, "concat"), ["2", "3"]), "list of node ids"),
    "wrong concat": (_set(("cells", 0, "concat"), [2, 3]), "concat"),
    "too many edges into a node": (
        lambda d: d["cells"][0]["edges"].append(dict(d["cells"][0]["edges"][0])),
        "incoming edges",
    ),
    "provenance not an object": (_set(("provenance",), []), "'provenance' must be an object"),
    "probabilities not an object": (_set(("probabilities",), [1]), "'probabilities' must map"),
    "probability out of range": (
        lambda d: d["probabilities"]["cell0.edge2<-0"].update(conv_3x3=1.5),
        r"\[0, 1\]",
    ),
    "probability of a foreign op": (
        lambda d: d["probabilities"]["cell0.edge2<-0"].update(sep_conv_5x5=0.1),
        "not in space",
    ),
    "unknown top-level key": (_set(("genotype",), "x"), "unknown key"),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_validate_rejects_malformed_records(tmp_path, capsys, valid_dict, case):
    mutate, message = MUTATIONS[case]
    data = copy.deepcopy(valid_dict)
    mutate(data)
    path = write_json(tmp_path / "bad.json", data)
    code, out, err = run_cli(capsys, "arch", "validate", path)
    assert_one_line_error(code, out, err)
    assert out == ""
    assert str(path) in err
    assert re.search(message, err), err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"found"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b"\xff\xfe\x00garbage", "not a UTF-8 text file"),
    ],
)
def test_validate_rejects_files_that_are_not_records(tmp_path, capsys, content, message):
    path = tmp_path / "found.json"
    path.write_bytes(content)
    for command in (["arch", "validate"], ["arch", "show"]):
        code, out, err = run_cli(capsys, *command, path)
        assert_one_line_error(code, out, err)
        assert message in err


def test_missing_file(tmp_path, capsys):
    code, out, err = run_cli(capsys, "arch", "validate", tmp_path / "nope.json")
    assert_one_line_error(code, out, err)
    assert "no such file" in err


def test_show_darts_v2(tmp_path, capsys):
    path = tmp_path / "v2.json"
    assert run_cli(capsys, "arch", "from-darts", DARTS_V2, "--out", path)[0] == 0
    code, out, err = run_cli(capsys, "arch", "show", path)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == str(path)
    assert (
        "  space        darts (darts_cell): 6 nodes (2 input, 4 intermediate), ops none, max_pool_3x3" in out
    )
    assert "  alphas       shared; search network of 8 layers, 2 record cells, 16 kept edges" in lines
    assert "  normal cell (shared by every normal cell of the network)" in lines
    assert "  reduction cell (shared by every reduction cell of the network)" in lines
    assert "    2 <- 0: sep_conv_3x3" in lines
    assert "    4 <- 0: skip_connect  parameter-free" in lines
    assert "    2 <- 0: max_pool_3x3  stride 2, parameter-free" in lines  # reduce cell, from an input
    assert "    3 <- 2: skip_connect  parameter-free" in lines  # reduce cell, between nodes: stride 1
    assert lines.count("    output: concat of nodes 2 3 4 5") == 2
    assert "  op counts    max_pool_3x3 5, sep_conv_3x3 5, skip_connect 5, dil_conv_3x3 1" in lines
    # chance: uniformly random weights keep 3 of 7 non-none ops parameter-free in normal cells, fewer in
    # reduction cells (stride-2 skip_connect is a FactorizedReduce): 0.383 over both
    assert "  param-free   10 of 16 kept edges with an op (share 0.625, chance 0.383)" in lines
    assert "  probabilities  none recorded" in lines
    assert "    source: darts-genotype" in lines


def test_show_marks_trainable_ops_at_stride_2_and_none_edges(tmp_path, capsys):
    genotype = DARTS_V2.replace(
        "('max_pool_3x3', 0), ('max_pool_3x3', 1)", "('skip_connect', 0), ('max_pool_3x3', 1)"
    )
    path = tmp_path / "r.json"
    run_cli(capsys, "arch", "from-darts", genotype, "--out", path)
    out = run_cli(capsys, "arch", "show", path)[1]
    assert "    2 <- 0: skip_connect  stride 2\n" in out  # a FactorizedReduce, with parameters

    nb = random_arch(load_space("nb201"), seed=0).to_dict()
    nb["cells"][0]["edges"][0]["op"] = "none"
    code, out, _ = run_cli(capsys, "arch", "show", write_json(tmp_path / "nb.json", nb))
    assert code == 0
    assert "    1 <- 0: none" in out and "no connection" in out
    assert "    output: node 3" in out
    assert "  probabilities  6 edges" in out


# --- from-darts --------------------------------------------------------------------------------------
@pytest.mark.parametrize("genotype", [DARTS_V1, DARTS_V2, PC_DARTS_CIFAR])
def test_from_darts_round_trip_builds_a_network(tmp_path, capsys, genotype):
    path = tmp_path / "arch" / "found.json"
    code, out, err = run_cli(capsys, "arch", "from-darts", genotype, "--out", path)
    assert code == 0 and err == "" and out.startswith(f"wrote {path}: space darts, 16 edges")
    assert run_cli(capsys, "arch", "validate", path)[0] == 0
    arch = load_architecture(path)
    assert arch.to_dict() == architecture_from_genotype(genotype).to_dict()
    assert arch.provenance == {"source": "darts-genotype", "genotype": genotype}
    assert arch.probabilities == {} and arch.space.alpha_mode == "shared"
    net = build_network(arch, init_channels=4, layers=3).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def test_from_darts_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "found.json"
    path.write_text("keep me")
    code, out, err = run_cli(capsys, "arch", "from-darts", DARTS_V2, "--out", path)
    assert_one_line_error(code, out, err)
    assert "--force" in err and path.read_text() == "keep me"
    assert run_cli(capsys, "arch", "from-darts", DARTS_V2, "--out", path, "--force")[0] == 0
    assert load_architecture(path).cell("normal").edges[0].op == "sep_conv_3x3"
    assert list(tmp_path.iterdir()) == [path]  # atomic write leaves no temp file


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("cell_v1", "not a candidate of space 'cell_v1'"),
        ("nb201", "not a DARTS-cell space"),
        ("nope", "unknown"),
    ],
)
def test_from_darts_with_an_unsuitable_space(tmp_path, capsys, space, message):
    code, out, err = run_cli(
        capsys, "arch", "from-darts", DARTS_V2, "--out", tmp_path / "x.json", "--space", space
    )
    assert_one_line_error(code, out, err)
    assert message in err
    assert not (tmp_path / "x.json").exists()


def test_from_darts_prints_the_record_without_out(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "arch", "from-darts", DARTS_V2)
    assert code == 0 and list(tmp_path.iterdir()) == []  # nothing written
    assert json.loads(out) == architecture_from_genotype(DARTS_V2).to_dict()  # stdout is the record alone
    assert "16 edges" in err and len(err.splitlines()) == 1


def test_show_nb201_names_its_one_cell_and_counts_its_input_node(tmp_path, capsys):
    path = tmp_path / "nb201.json"
    assert (
        run_cli(capsys, "arch", "homogeneous", "--space", "nb201", "--op", "conv_3x3", "--out", path)[0] == 0
    )
    lines = run_cli(capsys, "arch", "show", path)[1].splitlines()
    assert lines[1].startswith("  space        nb201 (nb201_cell): 4 nodes (1 input, 3 intermediate), ops")
    assert "1 record cell, 6 kept edges" in lines[2]
    assert "  the cell (shared by every cell of the network)" in lines
    assert not any("cell cell" in line for line in lines)


def test_committed_darts_v2_record_is_current():
    arch = load_architecture(REPO / "experiments" / "archs" / "darts_v2.json")
    assert arch.to_dict() == architecture_from_genotype(DARTS_V2).to_dict()


# --- genotype parsing ----------------------------------------------------------------------------------
def test_parse_genotype_shapes():
    normal, normal_concat, reduce, reduce_concat = parse_genotype(PC_DARTS_CIFAR)
    assert normal[:2] == [("sep_conv_3x3", 1), ("skip_connect", 0)]
    assert normal_concat == reduce_concat == [2, 3, 4, 5]  # range(2, 6)
    assert len(reduce) == 8
    positional = "Genotype([('a', 0)], [2], [('b', 1)], range(2, 3))"
    assert parse_genotype(positional) == ([("a", 0)], [2], [("b", 1)], [2])


def test_genotype_edges_go_to_nodes_in_pairs():
    arch = architecture_from_genotype(DARTS_V2)
    normal = arch.cell("normal")
    assert [e.node for e in normal.edges] == [2, 2, 3, 3, 4, 4, 5, 5]
    assert (normal.edges[-1].node, normal.edges[-1].source, normal.edges[-1].op) == (5, 2, "dil_conv_3x3")


BAD_GENOTYPES = {
    "syntax": ("Genotype(normal=[('sep_conv_3x3', 0)", "not a valid expression"),
    "empty": ("   ", "empty"),
    "not a Genotype call": ("dict(normal=[])", "expected Genotype"),
    "code instead of a literal": (
        DARTS_V2.replace("'sep_conv_3x3', 0", "__import__('os').getcwd(), 0", 1),
        "must be a string literal",
    ),
    "expression as index": (
        DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 1 + 1)"),
        "integer literal",
    ),
    "name as op": (DARTS_V2.replace("'dil_conv_3x3'", "dil_conv_3x3"), "string literal"),
    "unknown field": (
        DARTS_V2.replace("reduce_concat=", "reduction_concat="),
        "unknown field 'reduction_concat'",
    ),
    "field twice": (DARTS_V2[:-1] + ", normal=[])", "given twice"),
    "missing field": ("Genotype(normal=[], normal_concat=[2, 3, 4, 5], reduce=[])", "missing field"),
    "op not in space": (DARTS_V2.replace("dil_conv_3x3", "conv_7x1_1x7"), "not a candidate of space 'darts'"),
    "none edge": (DARTS_V2.replace("dil_conv_3x3", "none"), "'none' edge"),
    "seven pairs": (DARTS_V2.replace(", ('dil_conv_3x3', 2)", ""), r"7 \(op, input\) pairs"),
    "source >= node": (
        DARTS_V2.replace("('sep_conv_3x3', 1), ('sep_conv_3x3', 0)", "('sep_conv_3x3', 2), ('x', 0)"),
        "input 2 of node 2",
    ),
    "negative source": (
        DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', -1)"),
        "input -1 of node 5",
    ),
    "triple": (DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 2, 3)"), "pair"),
    "concat short": (
        DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 3, 4]"),
        "normal_concat",
    ),
    "concat range": (
        PC_DARTS_CIFAR.replace("reduce_concat=range(2, 6)", "reduce_concat=range(3, 6)"),
        "reduce_concat",
    ),
    "huge range": (PC_DARTS_CIFAR.replace("range(2, 6))", "range(0, 10**12))"), "range arguments"),
    "huge range literal": (
        PC_DARTS_CIFAR.replace("range(2, 6))", "range(0, 1000000000000))"),
        "far more nodes",
    ),
    "other call as concat": (
        PC_DARTS_CIFAR.replace("range(2, 6))", "list(range(2, 6)))"),
        "list of node ids",
    ),
    "star args": ("Genotype(**{'normal': []})", r"\*\* arguments"),
}


@pytest.mark.parametrize("case", sorted(BAD_GENOTYPES))
def test_bad_genotypes_are_refused_in_one_line(case):
    text, message = BAD_GENOTYPES[case]
    with pytest.raises(ArchitectureError, match=message) as exc:
        architecture_from_genotype(text)
    assert "\n" not in str(exc.value)


def test_bad_genotype_on_the_command_line(tmp_path, capsys):
    code, out, err = run_cli(capsys, "arch", "from-darts", "Genotype(normal=", "--out", tmp_path / "x.json")
    assert_one_line_error(code, out, err)
    assert "genotype: not a valid expression" in err


# --- profile -------------------------------------------------------------------------------------------
def test_profile_json_golden_darts_v2(capsys):
    code, out, err = run_cli(
        capsys, "profile", "--arch", REPO / "experiments/archs/darts_v2.json", "--json", "--no-speed"
    )
    assert code == 0 and err == ""
    report = json.loads(out)
    assert report["params"] == 3_349_342  # DARTS' count_parameters_in_MB, see tests/test_models.py
    assert report["macs"] == 528_359_040
    assert report["input_shape"] == [1, 3, 32, 32]
    assert report["space"] == "darts"
    assert report["params_include_auxiliary"] is False
    assert report["network"] == {
        "class": "NetworkCIFAR",
        "dataset": "cifar10",
        "num_classes": 10,
        "in_channels": 3,
        "init_channels": 36,
        "layers": 20,
        "auxiliary": False,
        "drop_path": 0.0,
        "image_size": 32,
    }


def test_profile_settings_and_auxiliary(tmp_path, capsys):
    path = tmp_path / "a.json"
    run_cli(capsys, "arch", "from-darts", PC_DARTS_CIFAR, "--out", path)
    base = [
        "profile",
        "--arch",
        path,
        "--init-channels",
        "8",
        "--layers",
        "5",
        "--num-classes",
        "7",
        "--json",
        "--no-speed",
    ]
    plain = json.loads(run_cli(capsys, *base)[1])
    with_aux = json.loads(run_cli(capsys, *base, "--auxiliary")[1])
    net = build_network(load_architecture(path), init_channels=8, layers=5, num_classes=7, auxiliary=True)
    assert plain["params"] == count_parameters(net)
    assert with_aux["params"] == count_parameters(net, exclude_auxiliary=False) > plain["params"]
    assert with_aux["macs"] == plain["macs"]  # the auxiliary head does not run in eval mode
    assert plain["network"]["init_channels"] == 8 and plain["network"]["num_classes"] == 7


def test_profile_imagenet_and_text_output(tmp_path, capsys):
    path = tmp_path / "a.json"
    run_cli(capsys, "arch", "from-darts", DARTS_V1, "--out", path)
    code, out, _ = run_cli(
        capsys, "profile", "--arch", path, "--dataset", "imagenet", "--init-channels", "8", "--no-speed"
    )
    assert code == 0
    assert "network   NetworkImageNet: imagenet, 1000 classes, C=8, layers=14" in out
    assert "input     1x3x224x224" in out
    assert "auxiliary head excluded" in out and out.count("\n") == 5


def test_profile_nb201(tmp_path, capsys):
    path = write_json(tmp_path / "nb.json", random_arch(load_space("nb201"), seed=2).to_dict())
    code, out, _ = run_cli(capsys, "profile", "--arch", path, "--json", "--init-channels", "4", "--no-speed")
    report = json.loads(out)
    assert report["network"]["class"] == "TinyNetwork" and report["network"]["layers"] == 5
    code, out, err = run_cli(capsys, "profile", "--arch", path, "--dataset", "imagenet")
    assert_one_line_error(code, out, err, "profile")
    code, out, err = run_cli(capsys, "profile", "--arch", path, "--auxiliary")
    assert_one_line_error(code, out, err, "profile")


@pytest.mark.parametrize("flags", [["--layers", "2"], ["--num-classes", "0"], ["--init-channels", "-4"]])
def test_profile_bad_settings(capsys, flags):
    code, out, err = run_cli(capsys, "profile", "--arch", REPO / "experiments/archs/darts_v2.json", *flags)
    assert_one_line_error(code, out, err, "profile")


def test_profile_bad_record(tmp_path, capsys, valid_dict):
    valid_dict["schema_version"] = 0
    code, out, err = run_cli(capsys, "profile", "--arch", write_json(tmp_path / "b.json", valid_dict))
    assert_one_line_error(code, out, err, "profile")


# --- a real process ----------------------------------------------------------------------------------
def test_subprocess_validate_bad_file_exits_2_without_traceback(tmp_path, valid_dict):
    valid_dict["cells"][0]["edges"][0]["op"] = "conv_9x9"
    path = write_json(tmp_path / "bad.json", valid_dict)
    proc = subprocess.run(
        [sys.executable, "-m", "pflnas", "arch", "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("pflnas arch: error: ") and "conv_9x9" in proc.stderr
    assert proc.stdout == ""
