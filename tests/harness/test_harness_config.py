"""Suite files: strict parsing (errors name file, table, key), sweeps, grid expansion, run_id stability."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import harness_fakes
import pytest

from ntkbayes.errors import UserError
from ntkbayes.harness.config import Cell, Device, canonical_json, load_suite, parse_suite, run_id_of


@pytest.fixture(autouse=True)
def fakes():
    harness_fakes.register_fakes()
    yield
    harness_fakes.unregister_fakes()


def write(tmp_path: Path, text: str, name: str = "suite.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


GOOD = """
    name = "t"
    seeds = [0, 1]
    device = "cpu"
    [datasets._tiny]
    n = 60
    [datasets.flat]
    dataset = "_tiny"
    dim = 2
    [methods._test_logreg]
    steps = 5
    [methods.ens]
    method = "_test_logreg"
    members = [2, 3]
    lr = [0.1, 1]
"""


def test_method_datasets_key_restricts_its_cells(tmp_path):
    text = GOOD.replace('    lr = [0.1, 1]\n', '    lr = [0.1, 1]\n    datasets = ["flat"]\n')
    cells = load_suite(write(tmp_path, text)).cells()
    assert len(cells) == 2 * 2 * 1 + 2 * 4  # _test_logreg everywhere, the ens sweep on `flat` only
    assert {c.dataset_label for c in cells if c.method_label.startswith("ens")} == {"flat"}
    # the restriction is not a parameter: the same cells (run_ids) as without it
    full = {c.run_id for c in load_suite(write(tmp_path, GOOD, "full.toml")).cells()}
    assert {c.run_id for c in cells} <= full


@pytest.mark.parametrize("value, expected", [
    ('["nope"]', "'nope' is not a [datasets.<label>] of this suite"),
    ('"flat"', "expected a non-empty array of dataset labels"),
    ("[]", "expected a non-empty array of dataset labels"),
    ('["flat", "flat"]', "repeats a label"),
])
def test_method_datasets_key_errors_name_the_key(tmp_path, value, expected):
    path = write(tmp_path, GOOD.replace('    lr = [0.1, 1]\n', f'    lr = [0.1, 1]\n    datasets = {value}\n'))
    with pytest.raises(UserError, match=r"\[methods\.ens\] datasets: ") as err:
        load_suite(path)
    assert expected in str(err.value) and str(path) in str(err.value)


def test_grid_expansion_counts_order_and_labels(tmp_path):
    suite = load_suite(write(tmp_path, GOOD))
    assert suite.name == "t" and suite.device is Device.CPU and suite.seeds == (0, 1)
    cells = suite.cells()
    # 2 datasets × 2 seeds × (1 + 2·2 sweep points)
    assert len(cells) == 2 * 2 * 5
    assert len({c.run_id for c in cells}) == len(cells)
    labels = [c.method_label for c in cells[:5]]
    assert labels == ["_test_logreg", "ens[members=2,lr=0.1]", "ens[members=2,lr=1.0]",
                      "ens[members=3,lr=0.1]", "ens[members=3,lr=1.0]"]
    assert [(c.dataset_label, c.seed) for c in cells[::5]] == [("_tiny", 0), ("_tiny", 1), ("flat", 0), ("flat", 1)]
    ens = cells[1]
    assert ens.params == {"members": 2, "lr": 0.1}  # explicit, passed to methods.create
    assert ens.resolved_params == {"steps": 30, "lr": 0.1, "members": 2, "fail": "none", "sleep": 0.0,
                                   "alloc_mb": 0}
    assert cells[0].dataset_options == {"n": 60}
    assert cells[0].resolved_options == {"n": 60, "classes": 3, "dim": 4}
    assert isinstance(cells[2].params["lr"], float)  # TOML int 1 for a float parameter becomes 1.0
    assert suite.cells(seeds=[5])[0].seed == 5 and len(suite.cells(seeds=[5])) == 10


def test_run_id_is_sha256_of_canonical_json_and_stable(tmp_path):
    cell = load_suite(write(tmp_path, GOOD)).cells()[0]
    payload = {"dataset": "_tiny", "dataset_options": {"classes": 3, "dim": 4, "n": 60}, "method": "_test_logreg",
               "params": {"alloc_mb": 0, "fail": "none", "lr": 0.5, "members": 1, "sleep": 0.0, "steps": 5},
               "seed": 0}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    assert cell.run_id == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert canonical_json(payload) == text
    # spelling out a default, key order, and 1 vs 1.0 for a float parameter do not change the cell
    same = parse_suite({"seeds": [0], "datasets": {"_tiny": {"dim": 4, "n": 60}},
                        "methods": {"_test_logreg": {"lr": 0.5, "steps": 5, "members": 1}}}, "x.toml")
    assert same.cells()[0].run_id == cell.run_id
    assert run_id_of("_tiny", {"n": 1}, "m", {"lr": 1.0}, 0) == run_id_of("_tiny", {"n": 1}, "m", {"lr": 1.0}, 0)
    assert run_id_of("_tiny", {"n": 1}, "m", {"lr": 1.0}, 0) != run_id_of("_tiny", {"n": 1}, "m", {"lr": 1.0}, 1)
    assert run_id_of("_tiny", {"n": 1}, "m", {"lr": 1.0}, 0) != run_id_of("_tiny", {"n": 2}, "m", {"lr": 1.0}, 0)


def test_list_valued_options_are_values_not_sweeps(tmp_path, monkeypatch):
    from ntkbayes.methods.base import Method

    class ListParam(Method):
        name = "_test_listparam"

        def __init__(self, hidden: tuple = (8, 8), extra=None):
            self.hidden = hidden
            self.extra = extra

    try:
        suite = parse_suite({"seeds": [0], "datasets": {"_tiny": {}},
                             "methods": {"a": {"method": "_test_listparam", "hidden": [4, 4, 4]},
                                         "b": {"method": "_test_listparam", "hidden": [[4], [16, 16]]},
                                         "c": {"method": "_test_listparam", "extra": [[1, 2]]}}}, "x.toml")
        cells = suite.cells()
        assert [c.method_label for c in cells] == ["a", "b[hidden=[4]]", "b[hidden=[16,16]]", "c[extra=[1,2]]"]
        assert cells[0].params == {"hidden": [4, 4, 4]}
        assert cells[3].params == {"extra": [1, 2]}
        with pytest.raises(UserError, match=r"\[methods.a\] hidden: expected integer"):
            parse_suite({"seeds": [0], "datasets": {"_tiny": {}},
                         "methods": {"a": {"method": "_test_listparam", "hidden": ["x"]}}}, "x.toml")
    finally:
        from ntkbayes.methods import base

        base._REGISTRY.pop("_test_listparam", None)


BASE = """
    seeds = [0]
    [datasets._tiny]
    [methods._test_logreg]
"""


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("seed = [0]\n" + BASE, ["'seed'", "top-level"]),
        (BASE + "[methods.nosuch]\n", ["[methods.nosuch]", "unknown method 'nosuch'"]),
        (BASE + "[methods.x]\nmethod = 'nosuch'\n", ["[methods.x]", "unknown method 'nosuch'"]),
        (BASE + "stepz = 3\n", ["[methods._test_logreg] stepz", "unknown parameter"]),
        (BASE + "steps = 'many'\n", ["[methods._test_logreg] steps", "expected integer"]),
        (BASE + "steps = true\n", ["[methods._test_logreg] steps", "expected integer"]),
        (BASE + "steps = 2.5\n", ["[methods._test_logreg] steps", "expected integer"]),
        (BASE + "lr = '0.1'\n", ["[methods._test_logreg] lr", "expected float"]),
        (BASE + "steps = []\n", ["[methods._test_logreg] steps", "empty array"]),
        (BASE + "steps = [3, 3]\n", ["[methods._test_logreg] steps", "repeats"]),
        (BASE + "[methods.dup]\nmethod = '_test_logreg'\n", ["[methods.dup]", "same cell"]),
        ("seeds = [0]\n[datasets.nosuch]\n[methods._test_logreg]\n", ["[datasets.nosuch]", "unknown dataset"]),
        ("seeds = [0]\n[datasets._tiny]\nm = 3\n[methods._test_logreg]\n", ["[datasets._tiny] m", "unknown option"]),
        ("seeds = [0]\n[datasets._tiny]\nn = 'x'\n[methods._test_logreg]\n", ["[datasets._tiny] n", "integer"]),
        ("seeds = [0]\n[datasets._tiny]\nseed = 3\n[methods._test_logreg]\n", ["[datasets._tiny] seed", "harness"]),
        ("seeds = [0]\n[datasets._tiny]\nn = 1999-01-01\n[methods._test_logreg]\n", ["[datasets._tiny] n"]),
        ("seeds = 0\n[datasets._tiny]\n[methods._test_logreg]\n", ["seeds", "array"]),
        ("seeds = [0, 0]\n[datasets._tiny]\n[methods._test_logreg]\n", ["seeds", "repeat"]),
        ("seeds = [-1]\n[datasets._tiny]\n[methods._test_logreg]\n", ["seeds", "≥ 0"]),
        ("[datasets._tiny]\n[methods._test_logreg]\n", ["'seeds'"]),
        ("device = 'tpu'\n" + BASE, ["device", "tpu"]),
        ("threads = 0\n" + BASE, ["threads", "≥ 1"]),
        ("seeds = [0]\n[methods._test_logreg]\n", ["[datasets.<label>]"]),
        ("seeds = [0]\ndatasets = 3\n[methods._test_logreg]\n", ["[datasets]"]),
        ("seeds = [0]\n[datasets._tiny]\n[methods]\n", ["[methods]"]),
        ("seeds = [0]\n[datasets._tiny]\n[methods.'a b']\nmethod = '_test_logreg'\n", ["[methods.a b]", "label"]),
        ("seeds = [0]\n[datasets._tiny]\n[methods]\n_test_logreg = 3\n", ["[methods._test_logreg]", "table"]),
        ("seeds = [0\n", ["invalid TOML"]),
        ("seeds = [0]\nseeds = [1]\n", ["invalid TOML"]),
        ("seeds = " + "[" * 5000 + "]" * 5000 + "\n", ["invalid TOML", "nested too deeply"]),
        ("tf32 = 1\n" + BASE, ["tf32", "true or false"]),
        ("seeds = [0]\n[datasets._tiny]\nshift = 'rotation'\n[methods._test_logreg]\n",
         ["[datasets._tiny] shift", "array of shift kinds"]),
        ("seeds = [0]\n[datasets._tiny]\nshift = ['blur']\n[methods._test_logreg]\n",
         ["[datasets._tiny] shift", "unknown shift kind 'blur'", "gaussian_noise"]),
        ("seeds = [0]\n[datasets._tiny]\nshift = ['roll', 'roll']\n[methods._test_logreg]\n", ["shift", "repeats"]),
    ],
)
def test_bad_suites_name_file_table_and_key(tmp_path, text, needles):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_suite(path)
    msg = str(err.value)
    assert str(path) in msg
    for needle in needles:
        assert needle in msg, msg


def test_non_utf8_and_missing_files(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes("name = 'caf\xe9'\nseeds = [0]\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1\.toml: not UTF-8"):
        load_suite(p)
    with pytest.raises(UserError, match="suite file not found"):
        load_suite(tmp_path / "nope.toml")


def test_annotations_widen_types_and_mark_list_parameters():
    from ntkbayes.harness.config import annotation_kinds
    from ntkbayes.methods import base
    from ntkbayes.methods.base import Method

    assert annotation_kinds("tuple[float, ...] | None") == {"array", "none"}
    assert annotation_kinds("Optional[Dict[str, int]]") == {"table", "none"}
    assert annotation_kinds("str | Mode") == {"string", "?"}

    class Annotated(Method):
        name = "_test_annotated"

        def __init__(self, scale: str | float = "median", tol: float | None = None,
                     grid: tuple[float, ...] | None = None):
            self.scale, self.tol, self.grid = scale, tol, grid

    def parse(params):
        return parse_suite({"seeds": [0], "datasets": {"_tiny": {}},
                            "methods": {"a": {"method": "_test_annotated", **params}}}, "x.toml")

    try:
        cells = parse({"scale": ["median", 2], "tol": 1, "grid": [0.1, 1]}).cells()
        assert [c.params["scale"] for c in cells] == ["median", 2.0]  # str | float: both; 2 → 2.0
        assert cells[0].params["tol"] == 1.0 and cells[0].params["grid"] == [0.1, 1.0]  # a list, not a sweep
        assert [c.params["grid"] for c in parse({"grid": [[0.1], [1, 2]]}).cells()] == [[0.1], [1.0, 2.0]]
        with pytest.raises(UserError, match=r"\[methods.a\] tol: expected float or none, got string"):
            parse({"tol": "small"})
        with pytest.raises(UserError, match=r"\[methods.a\] scale: expected float or string, got boolean"):
            parse({"scale": True})
    finally:
        base._REGISTRY.pop("_test_annotated", None)


def test_enum_defaults_accept_member_values_only(tmp_path):
    import enum

    from ntkbayes.methods import base
    from ntkbayes.methods.base import Method

    class Mode(str, enum.Enum):
        A = "a"
        B = "b"

    class EnumParam(Method):
        name = "_test_enumparam"

        def __init__(self, mode: Mode = Mode.A):
            self.mode = mode

    try:
        ok = parse_suite({"seeds": [0], "datasets": {"_tiny": {}},
                          "methods": {"_test_enumparam": {"mode": ["a", "b"]}}}, "x.toml")
        assert [c.resolved_params["mode"] for c in ok.cells()] == ["a", "b"]
        with pytest.raises(UserError, match=r"x.toml: \[methods._test_enumparam\] mode: expected one of"):
            parse_suite({"seeds": [0], "datasets": {"_tiny": {}},
                         "methods": {"_test_enumparam": {"mode": "c"}}}, "x.toml")
    finally:
        base._REGISTRY.pop("_test_enumparam", None)


def test_repository_suites_parse():
    """smoke.toml and default.toml are valid once their methods are registered."""
    from ntkbayes import methods

    root = Path(__file__).resolve().parents[2] / "benchmarks" / "suites"
    for name in ("smoke", "default"):
        path = root / f"{name}.toml"
        import tomllib

        raw = tomllib.loads(path.read_text())
        missing = [t.get("method", k) for k, t in raw["methods"].items() if t.get("method", k) not in
                   methods.available()]
        if missing:
            pytest.skip(f"methods not written yet: {missing}")
        suite = load_suite(path)
        assert suite.name == name and len(suite.cells()) > 0


def test_shift_and_tf32_enter_cells_and_run_ids_only_when_set(tmp_path):
    plain = load_suite(write(tmp_path, GOOD)).cells()
    both = load_suite(write(tmp_path, "tf32 = true\n" + GOOD.replace("n = 60", "n = 60\n    shift = ['roll']"),
                            "b.toml")).cells()
    assert [c.run_id for c in plain] == [run_id_of(c.dataset, c.resolved_options, c.method, c.resolved_params, c.seed)
                                         for c in plain]  # no evaluation settings: the run_ids of before
    assert all(not c.shift and not c.tf32 for c in plain)
    shifted = [c for c in both if c.dataset_label == "_tiny"]
    assert all(c.shift == ("roll",) and c.tf32 for c in shifted)
    assert all(c.shift == () and c.tf32 for c in both if c.dataset_label == "flat")
    for p, b in zip(plain, both):
        assert p.run_id != b.run_id
        evaluation = {**({"shift": ["roll"]} if b.shift else {}), "tf32": True}
        assert b.run_id == run_id_of(b.dataset, b.resolved_options, b.method, b.resolved_params, b.seed, evaluation)
    cell = shifted[0]
    assert Cell.from_dict(json.loads(json.dumps(cell.to_dict()))) == cell  # what the Ray executor ships


def test_unknown_methods_can_be_kept_to_fail_later(tmp_path):
    text = GOOD + "    [methods.later]\n    method = 'not_written_yet'\n    width = [8, 16]\n"
    with pytest.raises(UserError, match="unknown method 'not_written_yet'"):
        load_suite(write(tmp_path, text))
    suite = load_suite(write(tmp_path, text), unknown_methods="fail")
    later = [c for c in suite.cells() if c.method == "not_written_yet"]
    assert len(later) == 8 and {c.params["width"] for c in later} == {8, 16}  # a list is a sweep, unchecked
    with pytest.raises(ValueError, match="unknown_methods"):
        load_suite(write(tmp_path, GOOD), unknown_methods="skip")
