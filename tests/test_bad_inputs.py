"""Every bad input a user can give the CLI: one line on stderr, exit code 2, no traceback, before training.

Each case runs ``pflnas.cli.main.main`` in-process on tiny fixtures. Training entry points are replaced by a
function that fails the test, so a case that would start training (instead of refusing its input) fails;
downloads are disabled so a missing data set never reaches the network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from _data_fixtures import make_tree
from _spaces import tiny

from pflnas.arch.homogeneous import homogeneous_architecture
from pflnas.arch.record import save_architecture
from pflnas.cli.main import main
from pflnas.config.loader import build_config, read_yaml, to_dict
from pflnas.config.presets import preset_path
from pflnas.config.search import SearchConfig
from pflnas.errors import DataError, PflnasError
from pflnas.models import build_from_config, resolve_network_config
from pflnas.rundir import mark
from pflnas.train.recipe import RetrainConfig, recipe_layer

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


def _write(path: Path, content: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def _found_variants(root: Path, good: dict) -> dict[str, str]:
    """Broken found.json files, each wrong in one way."""

    def variant(name: str, edit) -> str:
        doc = json.loads(json.dumps(good))
        edit(doc)
        return _write(root / "arch" / f"{name}.json", json.dumps(doc))

    edge = lambda d: d["cells"][0]["edges"][0]  # noqa: E731
    return {
        "schema99": variant("schema99", lambda d: d.update(schema_version=99)),
        "no_schema": variant("no_schema", lambda d: d.pop("schema_version")),
        "unknown_op": variant("unknown_op", lambda d: edge(d).update(op="frobnicate")),
        "foreign_op": variant("foreign_op", lambda d: edge(d).update(op="sep_conv_5x5")),
        "wrong_space": variant("wrong_space", lambda d: d["space"].update(name="nb201")),
        "source_oob": variant("source_oob", lambda d: edge(d).update(source=99)),
        "self_loop": variant("self_loop", lambda d: edge(d).update(source=edge(d)["node"])),
        "node_oob": variant("node_oob", lambda d: edge(d).update(node=50)),
        "few_inputs": variant("few_inputs", lambda d: d["cells"][0]["edges"].pop()),
        "many_inputs": variant("many_inputs", lambda d: d["cells"][0]["edges"].append(edge(d))),
        "cell_count": variant("cell_count", lambda d: d["cells"].pop()),
        "bad_concat": variant("bad_concat", lambda d: d["cells"][0].update(concat=[0])),
        "node_type": variant("node_type", lambda d: edge(d).update(node="2")),
        "cells_type": variant("cells_type", lambda d: d.update(cells={})),
        "unknown_key": variant("unknown_key", lambda d: d.update(extra=1)),
        "bad_probs": variant("bad_probs", lambda d: d.update(probabilities={"x": {"conv_3x3": 1}})),
        "huge_nodes": variant("huge_nodes", lambda d: d["space"].update(nodes=10**9)),
        "huge_layers": variant("huge_layers", lambda d: d["space"].update(layers=10**9)),
        "not_json": _write(root / "arch/not_json.json", "{not json"),
        "empty": _write(root / "arch/empty.json", ""),
        "list": _write(root / "arch/list.json", "[1, 2]"),
        "number": _write(root / "arch/number.json", "42"),
        "non_utf8": _write(root / "arch/non_utf8.json", b"\xff\xfe\x00garbage\x80"),
        "deep": _write(root / "arch/deep.json", "[" * 100_000 + "]" * 100_000),
        "long_int": _write(root / "arch/long_int.json", "9" * 5000),
    }


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict[str, str]:
    """Paths of every fixture, keyed by the names the case table uses in ``{braces}``."""
    root = tmp_path_factory.mktemp("bad-inputs")
    space = tiny("cell_v1")  # 3 layers, C=4
    arch = homogeneous_architecture(space, "max_pool_3x3")
    found = save_architecture(arch, root / "found.json")
    other = homogeneous_architecture(space, "avg_pool_3x3")
    paths = {"root": str(root), "found": str(found), "missing": str(root / "missing")}
    paths.update(_found_variants(root, arch.to_dict()))
    huge = root / "arch/huge.json"
    with huge.open("wb") as fh:  # sparse: costs no disk
        fh.truncate(64 * 1024 * 1024)
    paths["huge"] = str(huge)
    paths["nb201"] = str(
        save_architecture(homogeneous_architecture(tiny("nb201"), "conv_3x3"), root / "nb.json")
    )

    make_tree(root / "data", n_train=2, n_test=1)
    make_tree(root / "data3", classes=("a", "b", "c"), n_train=2, n_test=1)
    make_tree(root / "corrupt", n_train=2, n_test=1)
    _write(root / "corrupt/train/class0/0000.png", b"not a png")
    make_tree(root / "small", n_train=2, n_test=1, size=16)
    (root / "empty").mkdir()
    _write(root / "layout/images/x.png", b"x")
    for name in ("data", "data3", "corrupt", "small", "empty", "layout"):
        paths[name] = str(root / name)

    network = resolve_network_config(arch, dataset="cifar10", init_channels=4, layers=3)
    state = {"model": build_from_config(arch, network).state_dict(), "network": network.to_dict()}
    torch.save({**state, "arch": arch.to_dict()}, root / "good.pt")
    torch.save({**state, "arch": other.to_dict()}, root / "other_arch.pt")
    torch.save([1, 2], root / "list.pt")
    raw = (root / "good.pt").read_bytes()
    paths["truncated_pt"] = _write(root / "truncated.pt", raw[: len(raw) // 2])
    paths["text_pt"] = _write(root / "text.pt", "hello")
    for name in ("good", "other_arch", "list"):
        paths[f"{name}_pt"] = str(root / f"{name}.pt")

    yamls = {
        "y_unknown_key": "run:\n  epochz: 3\n",
        "y_unknown_section": "runn:\n  epochs: 3\n",
        "y_wrong_type": "run:\n  epochs: three\n",
        "y_neg_epochs": "run:\n  epochs: -1\n",
        "y_zero_batch": "data:\n  eval_batch_size: 0\n",
        "y_neg_lr": "weights:\n  lr: -0.1\n",
        "y_inf_lr": "weights:\n  lr: .inf\n",
        "y_malformed": "run: [epochs: 3\n",
        "y_list": "- 1\n- 2\n",
        "y_scalar": "42\n",
        "y_section_scalar": "run: 5\n",
        "y_duplicate": "run:\n  epochs: 3\n  epochs: 4\n",
        "y_python_tag": "run: !!python/object/apply:os.system ['true']\n",
        "y_int_key": "1: 2\n",
        "y_tabs": "run:\n\tepochs: 3\n",
        "r_unknown_key": "optim:\n  lrr: 0.1\n",
        "r_drop_path": "model:\n  drop_path: 1.5\n",
    }
    for name, text in yamls.items():
        paths[name] = _write(root / "yaml" / f"{name}.yaml", text)
    paths["y_non_utf8"] = _write(root / "yaml/non_utf8.yaml", b"run:\n  epochs: \xff\xfe\n")
    paths["nonempty"] = _write(root / "nonempty/file", "x").rsplit("/", 1)[0]
    search_run = root / "search_run"
    _write(search_run / "config.yaml", "run: [\n")
    mark(search_run, "search")  # a run pflnas wrote whose config.yaml was damaged since
    paths["search_run_bad_config"] = str(search_run)
    paths.update(_run_dirs(root, paths, raw))
    return paths


def _run_dirs(root: Path, paths: dict[str, str], checkpoint: bytes) -> dict[str, str]:
    """Search and retrain run directories whose checkpoint is truncated or belongs to another run."""
    data = f"data.data_dir={paths['data']}"
    search = build_config(SearchConfig, [read_yaml(preset_path("quick"))], [*SMALL_SEARCH, data])
    retrain = build_config(RetrainConfig, [recipe_layer("quick")], [*SMALL_RETRAIN, data])
    out = {}
    for name, ckpt in (("truncated", checkpoint[:1000]), ("foreign", checkpoint)):
        run = root / f"search_{name}"
        _write(run / "config.yaml", yaml.safe_dump(to_dict(search)))
        _write(run / "checkpoint.pt", ckpt)
        mark(run, "search")
        out[f"search_run_{name}"] = str(run)
    for name, ckpt in (
        ("truncated", checkpoint[:1000]),
        ("foreign", Path(paths["other_arch_pt"]).read_bytes()),
    ):
        run = root / f"retrain_{name}"
        _write(run / "config.yaml", yaml.safe_dump(to_dict(retrain)))
        _write(run / "arch.json", Path(paths["found"]).read_text())
        _write(run / "last.pt", ckpt)
        mark(run, "retrain")
        out[f"retrain_run_{name}"] = str(run)
    return out


@pytest.fixture(autouse=True)
def no_training_no_download(monkeypatch, tmp_path):
    """Any case that gets as far as training fails; a data set that is not found is never downloaded."""

    def started(*args, **kwargs):
        pytest.fail("training started: the bad input was not refused at the door")

    import pflnas.data.load as data_load
    import pflnas.train.retrain as retrain
    import pflnas.train.retrain_eval as retrain_eval
    import pflnas.train.search as search

    monkeypatch.setattr(search.SearchRun, "_train_epoch", started)
    monkeypatch.setattr(retrain.RetrainRun, "train_one_epoch", started)
    monkeypatch.setattr(retrain_eval, "evaluate", started)  # pflnas evaluate imports it when it runs

    def no_download(root, spec):
        raise DataError("downloads are disabled in tests")

    monkeypatch.setattr(data_load, "download_torchvision", no_download)
    monkeypatch.delenv("PFLNAS_DATA", raising=False)
    monkeypatch.setenv("PFLNAS_CACHE", str(tmp_path / "cache"))


# A small valid search / retrain that would train if its input were accepted.
SMALL_SEARCH = ["space.init_channels=4", "space.layers=3", "data.subset=20", "data.batch_size=4"]
SMALL_RETRAIN = ["data.subset=20", "data.batch_size=4", "model.init_channels=4", "model.layers=3"]
SEARCH = (
    f"search --space cell_v1 --preset quick {' '.join(f'--set {s}' for s in SMALL_SEARCH)} "
    "--data-dir {data} --out {out}"
)
RETRAIN = f"retrain --arch {{found}} --recipe quick {' '.join(f'--set {s}' for s in SMALL_RETRAIN)} "
RETRAIN += "--data-dir {data} --out {out}"
EVALUATE = "evaluate --arch {found} --checkpoint {good_pt} --data-dir {data}"
EXPORT = "export --arch {found} --no-check --layers 3 --init-channels 4 --onnx {out}/model.onnx"

# (case id, command line with {fixture} placeholders, words the one-line message must contain)
CASES = [
    # --- found.json, through the command that only reads it, and through every command that takes one
    *[
        (f"found-{name}", f"arch validate {{{name}}}", words)
        for name, words in [
            ("schema99", "schema_version 99"),
            ("no_schema", "schema_version"),
            ("unknown_op", "'frobnicate' (not a registered op)"),
            ("foreign_op", "not a candidate of space"),
            ("wrong_space", "not those of the built-in space"),
            ("source_oob", "reads a missing or later node"),
            ("self_loop", "reads a missing or later node"),
            ("node_oob", "edge into node 50"),
            ("few_inputs", "incoming edges"),
            ("many_inputs", "incoming edges"),
            ("cell_count", "wrong number of cells"),
            ("bad_concat", "concat"),
            ("node_type", "'node' must be an integer"),
            ("cells_type", "'cells' must be a list"),
            ("unknown_key", "unknown key"),
            ("bad_probs", "not an edge of this space"),
            ("huge_nodes", "nodes 1000000000 is far too large"),
            ("huge_layers", "layers 1000000000 is far too large"),
            ("not_json", "not valid JSON"),
            ("empty", "empty"),
            ("list", "must be a JSON object"),
            ("number", "must be a JSON object"),
            ("non_utf8", "not a UTF-8 text file"),
            ("deep", "nested too deeply"),
            ("long_int", "thousands of digits"),
            ("huge", "far too large for a found.json"),
            ("missing", "no such file"),
            ("root", "is a directory, not a regular file"),
        ]
    ],
    ("arch-show-bad", "arch show {list}", "JSON object"),
    ("retrain-arch-missing", "retrain --arch {missing} --out {out}", "no such file"),
    ("retrain-arch-bad", "retrain --arch {unknown_op} --out {out}", "frobnicate"),
    ("retrain-no-arch", "retrain --out {out}", "--arch FILE is required"),
    ("evaluate-arch-bad", "evaluate --arch {cell_count} --checkpoint {good_pt}", "wrong number of cells"),
    ("export-arch-bad", "export --arch {deep} --onnx {out}/m.onnx", "nested too deeply"),
    ("profile-arch-bad", "profile --no-speed --arch {found} {schema99}", "schema_version"),
    # --- search configs: --config files, --set overrides, flags
    *[
        (f"search-config-{name[2:]}", f"{SEARCH} --config {{{name}}}", words)
        for name, words in [
            ("y_unknown_key", "unknown config key(s) run.epochz"),
            ("y_unknown_section", "unknown config key(s) runn"),
            ("y_wrong_type", "run.epochs must be an integer"),
            ("y_neg_epochs", "run.epochs must be >= 1"),
            ("y_zero_batch", "data.eval_batch_size must be >= 1"),
            ("y_neg_lr", "weights.lr must be > 0"),
            ("y_inf_lr", "weights.lr must be a finite number"),
            ("y_malformed", "not valid YAML"),
            ("y_list", "top level must be a mapping"),
            ("y_scalar", "top level must be a mapping"),
            ("y_section_scalar", "run must be a mapping"),
            ("y_duplicate", "'epochs' is given twice"),
            ("y_python_tag", "not valid YAML"),
            ("y_int_key", "key 1 is not a name"),
            ("y_tabs", "not valid YAML"),
            ("y_non_utf8", "not a UTF-8 text file"),
            ("missing", "does not exist"),
            ("root", "is a directory, not a regular file"),
        ]
    ],
    *[
        (f"search-set-{item}", f"{SEARCH} --set {item}", words)
        for item, words in [
            ("run.epochs", "section.key=value"),
            ("run..epochs=3", "section.key=value"),
            ("run.epochs=abc", "run.epochs must be an integer"),
            ("run.epochs=1.5", "run.epochs must be an integer"),
            ("run.epochs=-1", "run.epochs must be >= 1"),
            ("run=3", "run must be a mapping"),
            ("data.batch_size=0", "data.batch_size must be >= 1"),
            ("data.eval_batch_size=0", "data.eval_batch_size must be >= 1"),
            ("data.eval_limit=0", "data.eval_limit must be >= 1"),
            ("data.train_portion=1.5", "data.train_portion must be in (0, 1)"),
            ("data.subset=1", "data.subset must be >= 2"),
            ("data.subset=6", "fewer than data.batch_size=4, so no batch would be trained"),
            ("weights.lr=-1", "weights.lr must be > 0"),
            ("weights.lr=.nan", "weights.lr must be a finite number"),
            ("weights.momentum=-1", "weights.momentum must be in [0, 1)"),
            ("weights.weight_decay=-1", "weights.weight_decay must be >= 0"),
            ("arch.betas=[2,0.5]", "arch.betas must both be in [0, 1)"),
            ("arch.betas=[0.5]", "arch.betas must have 2 items"),
            ("collapse.max_skip_mass=2", "collapse.max_skip_mass must be in [0, 1]"),
            ("run.seed=-1", "run.seed must be in [0, 2**63)"),
            ("run.threads=0", "run.threads must be >= 1"),
            ("strategy.warmup_epochs=-1", "strategy.warmup_epochs"),
            ("strategy.name=bogus", "unknown strategy 'bogus'"),
            ("space.name=bogus", "unknown search space 'bogus'"),
            ("space.nodes=0", "nodes must be a positive integer"),
            ("space.nodes=100000000", "nodes 100000000 is far too large"),
            ("space.layers=1000000000", "layers 1000000000 is far too large"),
            ("space.ops=[bogus]", "unknown op(s) ['bogus']"),
            ("space.ops=[none]", "at least one op other than 'none'"),
            ("space.alpha_mode=bogus", "alpha_mode must be one of"),
            ("data.dataset=bogus", "unknown dataset 'bogus'"),
            ("spos.population=0", "spos.population must be >= 1"),
            ("latency.weight=-1", "latency.weight must be >= 0"),
            ("run.device=tpu", "unknown device 'tpu'"),
        ]
    ],
    ("search-epochs-negative", f"{SEARCH} --epochs -1", "run.epochs must be >= 1"),
    ("search-epochs-not-int", f"{SEARCH} --epochs abc", "invalid int value: 'abc'"),
    ("search-unknown-flag", f"{SEARCH} --bogus-flag", "unrecognized arguments: --bogus-flag"),
    ("search-strategy", f"{SEARCH} --strategy bogus", "unknown strategy 'bogus'"),
    ("search-space", f"{SEARCH} --space bogus", "unknown search space 'bogus'"),
    ("search-space-file", f"{SEARCH} --space {{missing}}.yaml", "does not exist"),
    ("search-preset", f"{SEARCH} --preset bogus", "unknown preset 'bogus'"),
    ("search-latency-device", f"{SEARCH} --latency-device tpu", "latency.device must be cpu or cuda"),
    ("search-trials", f"{SEARCH} --trials 0 --strategy random", "trials.n_trials must be >= 1"),
    # --- data directories
    ("search-data-missing", f"{SEARCH} --data-dir {{missing}}", "does not exist"),
    ("search-data-empty", f"{SEARCH} --data-dir {{empty}}", "holds no cifar10 data"),
    ("search-data-layout", f"{SEARCH} --data-dir {{layout}}", "holds no cifar10 data"),
    ("search-data-corrupt", f"{SEARCH} --data-dir {{corrupt}}", "cannot read image"),
    ("search-data-classes", f"{SEARCH} --data-dir {{data3}}", "3 class folders but cifar10 has 10"),
    ("search-data-size", f"{SEARCH} --data-dir {{small}}", "image is 16x16 but cifar10 needs 32x32"),
    ("search-data-file", f"{SEARCH} --data-dir {{found}}", "not a .tar.gz/.tgz/.tar archive"),
    # a batch larger than the data (no subset): it would train nothing and exit 0
    (
        "search-no-full-batch",
        f"{SEARCH} --set data.subset=null --set data.batch_size=64",
        "gives no full batch",
    ),
    ("search-too-wide", f"{SEARCH} --set space.init_channels=200000", "does not fit in memory"),
    ("retrain-too-wide", f"{RETRAIN} --set model.init_channels=60000", "does not fit in memory"),
    (
        "retrain-no-full-batch",
        f"{RETRAIN} --set data.subset=null --set data.batch_size=64",
        "gives no full batch",
    ),
    ("retrain-data-empty", f"{RETRAIN} --data-dir {{empty}}", "holds no cifar10 data"),
    ("retrain-data-corrupt", f"{RETRAIN} --data-dir {{corrupt}}", "cannot read image"),
    ("retrain-data-classes", f"{RETRAIN} --data-dir {{data3}}", "3 class folders but cifar10 has 10"),
    ("evaluate-data-classes", f"{EVALUATE} --data-dir {{data3}}", "3 class folders but cifar10 has 10"),
    ("evaluate-wrong-dataset", f"{EVALUATE} --dataset fashion-mnist", "1-channel images"),
    # --- output directories and resume
    ("search-out-nonempty", SEARCH.replace("{out}", "{nonempty}"), "is not a pflnas run directory"),
    (
        "search-out-nonempty-run",
        SEARCH.replace("{out}", "{search_run_truncated}"),
        "is not empty; use --resume",
    ),
    ("search-out-retrain-run", SEARCH.replace("{out}", "{retrain_run_truncated}"), "holds a pflnas retrain"),
    ("search-out-file", SEARCH.replace("{out}", "{found}"), "is not a directory"),
    ("search-out-under-file", SEARCH.replace("{out}", "{found}/run"), "Not a directory"),
    ("retrain-out-nonempty", RETRAIN.replace("{out}", "{nonempty}"), "is not a pflnas run directory"),
    ("retrain-out-nonempty-run", RETRAIN.replace("{out}", "{retrain_run_truncated}"), "is not empty; use"),
    ("search-resume-missing", "search --resume {missing}", "not a pflnas search run directory"),
    ("search-resume-flags", "search --resume {missing} --epochs 3", "drop --epochs"),
    ("search-resume-bad-config", "search --resume {search_run_bad_config}", "not valid YAML"),
    ("retrain-resume-missing", "retrain --resume {missing}", "not a pflnas retrain run directory"),
    ("retrain-resume-flags", "retrain --resume {missing} --arch {found}", "drop --arch"),
    ("search-resume-truncated", "search --resume {search_run_truncated}", "checkpoint"),
    ("search-resume-foreign", "search --resume {search_run_foreign}", "another search space"),
    ("retrain-resume-truncated", "retrain --resume {retrain_run_truncated}", "checkpoint"),
    ("retrain-resume-foreign", "retrain --resume {retrain_run_foreign}", "another architecture"),
    ("arch-out-is-dir", "arch homogeneous --space nb201 --op conv_3x3 --out {root}", "is a directory"),
    ("arch-out-under-file", "arch homogeneous --space nb201 --op conv_3x3 --out {found}/x.json", "is a file"),
    ("arch-out-exists", "arch homogeneous --space nb201 --op conv_3x3 --out {found}", "already exists"),
    ("export-onnx-is-dir", EXPORT.replace("{out}/model.onnx", "{root}"), "is a directory"),
    ("export-onnx-under-file", EXPORT.replace("{out}", "{found}"), "is a file"),
    ("report-out-file", "report {root} --out {found}", "is a file, not a directory"),
    ("bench-out-file", "bench nb201 --strategy random --seeds 1 --out {found}", "is a file, not a directory"),
    # --- retrain recipes and overrides
    ("retrain-recipe-unknown", f"{RETRAIN} --recipe bogus", "unknown recipe 'bogus'"),
    ("retrain-recipe-malformed", f"{RETRAIN} --recipe {{y_malformed}}", "not valid YAML"),
    (
        "retrain-recipe-unknown-key",
        f"{RETRAIN} --recipe {{r_unknown_key}}",
        "unknown config key(s) optim.lrr",
    ),
    ("retrain-recipe-range", f"{RETRAIN} --recipe {{r_drop_path}}", "model.drop_path must be in [0, 1)"),
    ("retrain-recipe-list", f"{RETRAIN} --recipe {{y_list}}", "top level must be a mapping"),
    *[
        (f"retrain-set-{item}", f"{RETRAIN} --set {item}", words)
        for item, words in [
            ("schedule.epochs=0", "schedule.epochs must be >= 1"),
            ("data.batch_size=64", "data.subset=20 is smaller than data.batch_size=64"),
            ("data.batch_size=0", "data.batch_size must be >= 1"),
            ("optim.lr=-1", "optim.lr must be > 0"),
            ("optim.lr=.inf", "optim.lr must be a finite number"),
            ("optim.momentum=-1", "optim.momentum must be >= 0"),
            ("optim.name=bogus", "optim.name 'bogus' is not a timm optimizer"),
            ("schedule.name=bogus", "schedule.name must be one of"),
            ("schedule.min_lr=-1", "schedule.min_lr must be >= 0"),
            ("schedule.warmup_lr=-1", "schedule.warmup_lr must be >= 0"),
            ("schedule.decay_rate=0", "schedule.decay_rate must be > 0"),
            ("model.drop_path=-0.1", "model.drop_path must be in [0, 1)"),
            ("data.reprob=2", "data.reprob must be in [0, 1]"),
            ("data.label_smoothing=1", "data.label_smoothing must be in [0, 1)"),
            ("run.amp=bogus", "run.amp must be one of"),
            ("run.ema_decay=1", "run.ema_decay must be in (0, 1)"),
            ("run.accumulation=0", "run.accumulation must be >= 1"),
            ("run.threads=0", "run.threads must be >= 1"),
            ("run.seed=-1", "run.seed must be in [0, 2**63)"),
            ("data.dataset=bogus", "unknown dataset 'bogus'"),
            ("model.layers=0", "layers must be a positive integer"),
            ("run.amp=fp16", "fp16 needs a CUDA device"),
        ]
    ],
    ("retrain-amp-choice", f"{RETRAIN} --amp bogus", "invalid choice: 'bogus'"),
    (
        "retrain-nb201-auxiliary",
        f"{RETRAIN} --arch {{nb201}} --set model.auxiliary=true",
        "no auxiliary head",
    ),
    # --- checkpoints
    ("evaluate-ckpt-missing", "evaluate --arch {found} --checkpoint {missing}", "no such file"),
    ("evaluate-ckpt-truncated", "evaluate --arch {found} --checkpoint {truncated_pt}", "cannot be read"),
    ("evaluate-ckpt-text", "evaluate --arch {found} --checkpoint {text_pt}", "cannot be read"),
    ("evaluate-ckpt-list", "evaluate --arch {found} --checkpoint {list_pt}", "not a dict"),
    (
        "evaluate-ckpt-other-arch",
        "evaluate --arch {found} --checkpoint {other_arch_pt}",
        "another architecture",
    ),
    ("evaluate-ckpt-other-space", "evaluate --arch {nb201} --checkpoint {good_pt}", "another architecture"),
    ("evaluate-batch-size", f"{EVALUATE} --batch-size 0", "batch size must be >= 1"),
    ("export-ckpt-truncated", f"{EXPORT} --checkpoint {{truncated_pt}}", "cannot be read"),
    ("export-ckpt-contradiction", f"{EXPORT} --checkpoint {{good_pt}} --layers 5", "contradicts the network"),
    ("export-opset", f"{EXPORT} --opset -1", "--opset -1 is not an ONNX opset"),
    ("export-batch-size", f"{EXPORT} --batch-size 0", "--batch-size must be >= 1"),
    ("export-ema-without-ckpt", f"{EXPORT} --ema", "EMA weights need a checkpoint"),
    # --- devices
    ("search-device-tpu", f"{SEARCH} --device tpu", "unknown device 'tpu'"),
    ("evaluate-device-tpu", f"{EVALUATE} --device tpu", "unknown device 'tpu'"),
    ("profile-device-choice", "profile --no-speed --arch {found} --device tpu", "invalid choice: 'tpu'"),
    # --- profile, report, bench, study, top level
    ("profile-no-arch", "profile", "give --arch FILE"),
    (
        "profile-batch-size",
        "profile --arch {found} --batch-size 0",
        "--batch-size must be a positive integer",
    ),
    ("profile-warmup", "profile --arch {found} --warmup -1", "--warmup must be an integer >= 0"),
    ("profile-num-classes", "profile --no-speed --arch {found} --num-classes 0", "num_classes must be"),
    ("profile-ops-no-space", "profile --ops", "--ops needs --space"),
    ("profile-ops-bad-set", "profile --ops --space nb201 --set space.bogus=1", "cannot override ['bogus']"),
    ("profile-ops-huge", "profile --ops --space nb201 --set space.nodes=100000000", "far too large"),
    ("arch-from-darts", "arch from-darts Genotype( --out {out}/g.json", "not a valid expression"),
    (
        "arch-homogeneous-op",
        "arch homogeneous --space nb201 --op bogus --out {out}/h.json",
        "not a candidate",
    ),
    (
        "arch-homogeneous-set",
        "arch homogeneous --space nb201 --op conv_3x3 --set space.nodes=x --out {out}/h",
        "nodes",
    ),
    ("report-missing", "report {missing}", "not a directory"),
    ("report-not-a-run", "report {empty} --out {out}", "neither a run directory"),
    ("report-several", "report {empty} {data}", "give --out DIR"),
    ("bench-seeds", "bench nb201 --strategy random --seeds 0 --out {out}", "--seeds must be >= 1"),
    ("bench-strategy", "bench nb201 --strategy bogus --out {out}", "unknown strategy 'bogus'"),
    ("bench-set", "bench nb201 --strategy darts --set run.epochs=-1 --out {out}", "run.epochs must be >= 1"),
    ("study-missing", "study {missing}.yaml", "does not exist"),
    ("study-malformed", "study {y_malformed}", "not valid YAML"),
    ("study-non-utf8", "study {y_non_utf8}", "not a UTF-8 text file"),
    ("study-unknown-key", "study {y_unknown_key}", "unknown config key(s) run"),
    ("no-command", "", "required: COMMAND"),
    ("unknown-command", "bogus", "invalid choice: 'bogus'"),
]


def _argv(template: str, fx: dict[str, str], out: Path) -> list[str]:
    return [part.format(**fx, out=out) for part in template.split()]


@pytest.mark.parametrize("template, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(fx, tmp_path, capsys, template, words):
    out = tmp_path / "out"
    try:
        code = main(_argv(template, fx, out))
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert words in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir()), "a refused run left files that block a rerun"


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize(
    "template",
    [
        f"{SEARCH} --device cuda",
        f"{RETRAIN} --device cuda",
        f"{EVALUATE} --device cuda",
        f"{SEARCH} --latency-device cuda",
    ],
    ids=["search", "retrain", "evaluate", "latency"],
)
def test_cuda_without_a_gpu(fx, tmp_path, capsys, template):
    assert main(_argv(template, fx, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU" in err[0], err


@pytest.mark.skipif(ROOT_USER or os.name != "posix", reason="root reads and writes anything")
def test_unreadable_and_unwritable_paths(fx, tmp_path, capsys):
    locked = Path(_write(tmp_path / "locked.json", Path(fx["found"]).read_text()))
    locked.chmod(0)
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        for argv, words in [
            (["arch", "validate", str(locked)], "cannot be read"),
            (_argv(SEARCH, fx, readonly / "run"), "cannot write"),
            (
                _argv("arch homogeneous --space nb201 --op conv_3x3 --out {out}", fx, readonly / "a.json"),
                "cannot write",
            ),
        ]:
            assert main(argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and words in err[0], err
    finally:
        locked.chmod(0o644)
        readonly.chmod(0o755)


def test_debug_shows_the_traceback(fx):
    with pytest.raises(PflnasError, match="schema_version"):
        main(["--debug", "arch", "validate", fx["schema99"]])


def test_messages_with_newlines_stay_on_one_line(fx, tmp_path, capsys):
    path = _write(tmp_path / "nl.yaml", '"bad\\nkey": 1\n')
    assert main(_argv(f"{SEARCH} --config {path}", fx, tmp_path / "out")) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
