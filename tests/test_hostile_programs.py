"""Programs (TorchScript, torch.export) run no harmful operator: the allow-list check of
ensemble_eval/opcheck.py, before torch.jit.load / torch.export.load ever see the file.

The archives that write a file (from a __setstate__, a forward, a .pt2's shape expression or
guard) are first shown to write it when torch reads them without the check, so those tests
cannot pass vacuously; every file they could write is in tmp_path."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import DATA

from ensemble_eval import opcheck
from ensemble_eval.cli import main
from ensemble_eval.members.inspection import inspect_checkpoint
from ensemble_eval.opcheck import UnsafeProgramError, check_program_archive
from ensemble_eval.programs import check_pt2_archive, load_program

TRUST = "--trust-checkpoints"
TINY_CODE = "code/__torch__/test_hostile_programs.py"  # where TorchScript prints this module's classes


def _quiet_load(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path))


class Tiny(torch.nn.Module):
    """A classifier of 10 classes: [B, 3, H, W] -> [B, 10]."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(x).mean((2, 3)))


class WritesOnLoad(torch.nn.Module):
    """Its __setstate__ (run inside torch.jit.load) maps `target` for writing and fills it."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target
        self.n = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[str, int, bool]:
        return (self.target, self.n, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, int, bool]) -> None:
        self.target = state[0]
        self.n = state[1]
        self.training = state[2]
        mapped = torch.from_file(self.target, True, self.n, dtype=torch.uint8)
        self.n = self.n + int(mapped.fill_(65)[0]) * 0  # used, so the write survives compilation


class WritesOnForward(torch.nn.Module):
    """Its forward maps `target` for writing and fills it (the probe would run it)."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target
        self.fc = torch.nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mapped = torch.from_file(self.target, True, 8, dtype=torch.uint8)
        return self.fc(x.mean((2, 3))) + mapped.fill_(66)[0].float() * 0


class AssignsTooMuch(torch.nn.Module):
    """A __setstate__ that computes (with allowed operators) instead of only assigning."""

    def __init__(self):
        super().__init__()
        self.w = torch.ones(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) * self.w

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        self.w = torch.relu(state[0])
        self.training = state[1]


class Prints(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("the program says hello")
        return x.mean((2, 3))


def _save(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(module).save(str(path))
    return path


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """A copy of the zip archive `src` with edit(name, data) -> data applied to every entry."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename, zin.read(info)))
    return dst


def _validate(path: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["validate", str(path), *extra])
    return code, capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_archive(tmp_path_factory) -> Path:
    return _save(Tiny().eval(), tmp_path_factory.mktemp("tiny") / "tiny.ts")


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny_pt2") / "tiny.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(Tiny().eval(), (torch.zeros(2, 3, 8, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


# ---------------------------------------------------------------------------------------
# (a) __setstate__ writing a file inside torch.jit.load


def test_a_setstate_that_writes_a_file_is_refused_before_torch_reads_the_archive(tmp_path, capsys):
    target = tmp_path / "written_by_setstate.bin"
    archive = _save(torch.nn.Sequential(WritesOnLoad(str(target)), Tiny()), tmp_path / "evil.ts")
    assert not target.exists()
    _quiet_load(archive)  # what the check prevents: torch.jit.load alone writes the file
    assert target.read_bytes() == b"A" * 8
    target.unlink()

    code, out = _validate(archive, capsys)
    assert code == 1
    (error,) = [line for line in out.splitlines() if "ERROR:" in line]
    assert "aten::from_file" in error and "__setstate__" in error and TRUST in error
    assert not target.exists()


# ---------------------------------------------------------------------------------------
# (b) the same call in forward (the probe of validate and of every run)


def test_a_forward_that_writes_a_file_is_refused_before_any_probe(tmp_path, capsys):
    target = tmp_path / "written_by_forward.bin"
    archive = _save(WritesOnForward(str(target)).eval(), tmp_path / "evil.ts")
    _quiet_load(archive)(torch.zeros(1, 3, 4, 4))  # without the check: loading and one forward write it
    assert target.read_bytes() == b"B" * 8
    target.unlink()

    code, out = _validate(archive, capsys)
    assert code == 1 and "aten::from_file" in out and "WritesOnForward.forward" in out and TRUST in out
    code = main(["--models", str(archive), "--data", str(DATA), "--out", str(tmp_path / "run"), "--compile"])
    err = capsys.readouterr().err
    assert code == 2 and "aten::from_file" in err and not target.exists()


# ---------------------------------------------------------------------------------------
# (c) a .pt2 whose graph names aten::from_file


def _pt2_with_target(src: Path, dst: Path, target: str, inputs: list | None = None) -> Path:
    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith("models/model.json"):
            return data
        program = json.loads(data)
        node = program["graph_module"]["graph"]["nodes"][0]
        node["target"] = target
        if inputs is not None:
            node["inputs"] = inputs
        return json.dumps(program).encode()

    return _rewrite(src, dst, edit)


def test_a_pt2_whose_graph_names_from_file_is_refused(tmp_path, tiny_pt2, capsys):
    target = tmp_path / "written_by_graph.bin"
    inputs = [  # aten::from_file(filename, shared=True, size=8) in place of the first node, relu(x)
        {"name": "filename", "arg": {"as_string": str(target)}, "kind": 1},
        {"name": "shared", "arg": {"as_bool": True}, "kind": 1},
        {"name": "size", "arg": {"as_int": 8}, "kind": 1},
    ]
    archive = _pt2_with_target(tiny_pt2, tmp_path / "evil.pt2", "torch.ops.aten.from_file.default", inputs)
    check_pt2_archive(str(archive))  # the payload check alone lets it through
    with warnings.catch_warnings(), pytest.raises(IndexError):  # the rest of the graph fails on its output
        warnings.simplefilter("ignore")
        torch.export.load(str(archive)).module()(torch.zeros(2, 3, 8, 8))
    assert target.stat().st_size == 32  # but the file was made first (8 floats)
    target.unlink()

    code, out = _validate(archive, capsys)
    assert code == 1 and "aten::from_file" in out and "models/model.json, node relu" in out and TRUST in out
    assert not target.exists()


def test_a_pt2_whose_graph_names_a_python_function_or_custom_op_is_refused(tmp_path, tiny_pt2):
    for target, named in [
        ("torch.save", "torch.save"),
        ("builtins.exec", "builtins.exec"),
        ("torch.ops.myns.foo.default", "myns::foo"),
        ("torch.ops.higher_order.run_const_graph", "higher_order::run_const_graph"),
        ("#custom:foo", "#custom:foo"),
    ]:
        archive = _pt2_with_target(tiny_pt2, tmp_path / "evil.pt2", target)
        with pytest.raises(UnsafeProgramError, match=named.replace(".", r"\.")):
            check_program_archive(str(archive), "torch.export")


def _pt2_with_expression(src: Path, dst: Path, expr: str | None = None, guard: str | None = None) -> Path:
    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith("models/model.json"):
            return data
        program = json.loads(data)
        if guard is not None:
            program["guards_code"] = [guard]
        if expr is not None:
            for value in program["graph_module"]["graph"]["tensor_values"].values():
                for size in value["sizes"]:
                    if "as_expr" in size:
                        size["as_expr"]["expr_str"] = expr
        return json.dumps(program).encode()

    return _rewrite(src, dst, edit)


def test_a_pt2_whose_shape_expressions_or_guards_hold_python_is_refused(tmp_path, tiny_pt2, capsys):
    target = tmp_path / "written_by_sympify.txt"
    payload = f"__import__('pathlib').Path({str(target)!r}).write_text('x')"
    archive = _pt2_with_expression(tiny_pt2, tmp_path / "expr.pt2", expr=payload)
    with warnings.catch_warnings(), pytest.raises(Exception):  # noqa: B017 (what fails after the write is torch's)
        warnings.simplefilter("ignore")
        torch.export.load(str(archive))  # without the check: sympify evaluates the Python
    assert target.read_text() == "x"
    target.unlink()
    with pytest.raises(UnsafeProgramError, match="symbolic expression"):
        check_program_archive(str(archive), "torch.export")

    guard = f"{payload} > 0"  # exec'd into the guard function the first forward pass runs
    archive = _pt2_with_expression(tiny_pt2, tmp_path / "guard.pt2", guard=guard)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.load(str(archive)).module()(torch.zeros(2, 3, 8, 8))
    assert target.read_text() == "x"
    target.unlink()
    with pytest.raises(UnsafeProgramError, match="guards_code"):
        check_program_archive(str(archive), "torch.export")
    tuple_guard = "L['x'].size()[0] >= 1, 2"  # would become two arguments of the generated assert
    with pytest.raises(UnsafeProgramError, match="guards_code"):
        check_program_archive(
            str(_pt2_with_expression(tiny_pt2, tmp_path / "g2.pt2", guard=tuple_guard)), "torch.export"
        )
    code, _ = _validate(archive, capsys)
    assert code == 1 and not target.exists()


def test_a_pt2_with_files_torch_export_save_never_writes_is_refused(tmp_path, tiny_pt2):
    archive = tmp_path / "legacy.pt2"
    archive.write_bytes(tiny_pt2.read_bytes())
    with zipfile.ZipFile(archive, "a") as zf:  # the legacy-format fallback would unpickle this
        zf.writestr("serialized_state_dict.json", pickle.dumps({"a": 1}))
    with pytest.raises(UnsafeProgramError, match="outside its folder"):
        check_program_archive(str(archive), "torch.export")


# ---------------------------------------------------------------------------------------
# (d) print, (e) custom operators, (f) a __setstate__ beyond assignments, (g) pickle globals


def test_print_in_forward_is_refused(tmp_path, capsys):
    code, out = _validate(_save(Prints(), tmp_path / "prints.ts"), capsys)
    assert code == 1 and "builtin print" in out and "Prints.forward" in out and TRUST in out


@torch.library.custom_op("ensemble_eval_test::scale", mutates_args=())
def _scale(x: torch.Tensor) -> torch.Tensor:
    return x * 2


class CallsCustomOp(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.ensemble_eval_test.scale(x).mean((2, 3))


def test_custom_namespace_operators_are_refused(tmp_path, tiny_archive):
    archive = _save(CallsCustomOp(), tmp_path / "custom.ts")
    with pytest.raises(UnsafeProgramError, match="ensemble_eval_test::scale.*outside the aten and prim"):
        check_program_archive(str(archive), "torchscript")
    # the same edited into a program's code by hand
    edited = _rewrite(tiny_archive, tmp_path / "edited.ts", lambda n, d: d.replace(b"torch.relu(", b"ops.myns.foo("))
    with pytest.raises(UnsafeProgramError, match="myns::foo"):
        check_program_archive(str(edited), "torchscript")


def test_a_setstate_that_does_more_than_assign_is_refused(tmp_path):
    archive = _save(AssignsTooMuch(), tmp_path / "computes.ts")
    with pytest.raises(UnsafeProgramError, match=r"__setstate__ that does more than assign.*torch\.relu"):
        check_program_archive(str(archive), "torchscript")


def test_a_pickle_global_off_the_list_is_refused(tmp_path, tiny_archive):
    # same length, so the pickle stays well formed: GLOBAL 'collections OrderedDict' -> 'subprocess check_output'
    edited = _rewrite(
        tiny_archive,
        tmp_path / "global.ts",
        lambda n, d: (
            d.replace(b"collections\nOrderedDict\n", b"subprocess\ncheck_output\n") if n.endswith("data.pkl") else d
        ),
    )
    with pytest.raises(UnsafeProgramError, match=r"global subprocess\.check_output \(data\.pkl\)"):
        check_program_archive(str(edited), "torchscript")
    custom = _rewrite(
        tiny_archive,
        tmp_path / "custom_class.ts",
        lambda n, d: (
            re.sub(rb"c__torch__[.\w]*\nTiny\n", b"c__torch__.torch.classes.x\nY\n", d) if n.endswith("data.pkl") else d
        ),
    )
    with pytest.raises(UnsafeProgramError, match=r"C\+\+ custom class x\.Y \(data\.pkl\)"):
        check_program_archive(str(custom), "torchscript")


def test_pickle_globals_are_read_without_unpickling():
    class Hostile:
        def __reduce__(self):
            return (os.system, ("exit 3",))

    for protocol in (0, 2, 4):  # GLOBAL, and STACK_GLOBAL with memoized strings
        assert list(opcheck.pickle_globals(pickle.dumps([Hostile()], protocol=protocol))) == [f"{os.name}.system"]
    assert list(opcheck.pickle_globals(b"\x80\x04\x8c\x02os\x94K\x01\x93.")) == [None]  # names not literal


# ---------------------------------------------------------------------------------------
# Evasions: names, attributes and syntax the scanner must not be fooled by


@pytest.mark.parametrize(
    ("code", "refused"),
    [
        ("    f = torch\n    _ = f.from_file('x', True, 8)\n", "torch used as a value"),
        ("    _ = getattr(x, 'from_file')\n", "from_file"),
        ("    _ = (x).from_file('x', True, 8)\n", "from_file"),
        ("    _ = torch.autograd.from_file('x')\n", "from_file"),
        ("    _ = ops.aten.save(x, 'x')\n", "aten::save"),
        ("    _ = ops.prim.Print(x)\n", "prim::Print"),
        ("    _ = torch.manual_seed(1)\n", "aten::manual_seed"),
        ("    _ = fork(torch.relu, x)\n", "builtin fork"),
        ("    _ = __torch__.torch.classes.myns.Foo.__new__(__torch__.torch.classes.myns.Foo)\n", "custom class"),
        ("    _ = __torch__.not_defined_here(x)\n", "does not define"),
        ("    _ = torch.relu(x) # comment\n", "a comment"),
        ("    _ = '''torch.from_file'''\n", "triple quotes"),
        ("    _ = '\u00e9'\n", "non-ASCII"),
        ("    _ = torch.relu(x, \\\n    )\n", "line continuation"),
        ("    _ = [torch.relu(y) for y in [x]]\n", "ListComp"),
        ("    _ = lambda: x\n", "Lambda"),
        ("    import os\n", "Import"),
        ("    _ = torch.relu(x" + "[0]" * 100_000 + ")\n", "cannot be checked"),
        ("    _ = ((((" * 200 + "x" + "))))" * 200 + "\n", "cannot be checked"),
        ("    _ = torch.relu(\n", "cannot be checked"),
    ],
)
def test_code_that_is_not_plain_allowed_torchscript_is_refused(tmp_path, tiny_archive, code, refused):
    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith(TINY_CODE):
            return data
        head, sep, tail = data.decode().partition("    fc = self.fc\n")  # the first statement of Tiny.forward
        assert sep
        return (head + code + sep + tail).encode("utf-8")

    archive = _rewrite(tiny_archive, tmp_path / "edited.ts", edit)
    with pytest.raises(UnsafeProgramError, match=refused):
        check_program_archive(str(archive), "torchscript")


def test_a_local_named_like_a_forbidden_builtin_does_not_open_it(tmp_path, tiny_archive):
    code = "    if torch.eq(1, 2):\n      print = 1\n    else:\n      pass\n    print('x')\n"
    edited = _rewrite(
        tiny_archive,
        tmp_path / "shadow.ts",
        lambda n, d: d.replace(b"    fc = ", code.encode() + b"    fc = ", 1) if n.endswith(TINY_CODE) else d,
    )
    with pytest.raises(UnsafeProgramError, match="builtin print"):
        check_program_archive(str(edited), "torchscript")


def test_archives_that_two_readers_could_read_differently_are_refused(tmp_path, tiny_archive):
    dup = tmp_path / "dup.ts"
    dup.write_bytes(tiny_archive.read_bytes())
    with warnings.catch_warnings(), zipfile.ZipFile(dup, "a") as zf:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        zf.writestr(f"tiny/{TINY_CODE}", "class Tiny(Module):\n  pass\n")
    with pytest.raises(UnsafeProgramError, match="two entries named"):
        check_program_archive(str(dup), "torchscript")
    flat = tmp_path / "flat.ts"
    data = bytearray(tiny_archive.read_bytes())
    data[4:8] = b"PTMF"  # torch.jit.load would read a flatbuffer module, not this zip
    flat.write_bytes(bytes(data))
    with pytest.raises(UnsafeProgramError, match="flatbuffer"):
        check_program_archive(str(flat), "torchscript")


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ("code/__torch__/torch/classes/myns.py", r"C\+\+ custom class myns"),  # found before any code by torch
        ("code/__torch__/test_hostile_programs/Tiny.py", "both a definition and a file's namespace"),
        ("code/__torch__/odd-name.py", "code file name"),
    ],
)
def test_code_files_torch_would_resolve_differently_are_refused(tmp_path, tiny_archive, path, refused):
    archive = tmp_path / "extra.ts"
    archive.write_bytes(tiny_archive.read_bytes())
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(f"tiny/{path}", "class Foo(Module):\n  training : bool\n")
    with pytest.raises(UnsafeProgramError, match=refused):
        check_program_archive(str(archive), "torchscript")


def test_the_work_of_the_check_is_bounded(tmp_path, tiny_archive, monkeypatch):
    monkeypatch.setattr(opcheck, "MAX_CODE_BYTES", 500)
    with pytest.raises(UnsafeProgramError, match="too large to be checked"):
        check_program_archive(str(tiny_archive), "torchscript")


# ---------------------------------------------------------------------------------------
# (h) legitimate programs pass, quickly; (i) --trust-checkpoints skips the check


@pytest.fixture(scope="module")
def torchvision_programs(tmp_path_factory) -> list[tuple[Path, str]]:
    d = tmp_path_factory.mktemp("torchvision_programs")
    x = torch.zeros(1, 3, 64, 64)
    archives = []
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for name in ("resnet18", "mobilenet_v3_small", "googlenet"):
            model = torchvision.models.get_model(name, num_classes=10).eval()
            torch.jit.script(model).save(str(d / f"{name}.scripted.ts"))
            torch.jit.trace(model, x, check_trace=False).save(str(d / f"{name}.traced.ts"))
            archives += [(d / f"{name}.scripted.ts", "torchscript"), (d / f"{name}.traced.ts", "torchscript")]
        batch = torch.export.Dim("batch", min=1, max=64)
        model = torchvision.models.get_model("mobilenet_v3_small", num_classes=10).eval()
        program = torch.export.export(model, (x.expand(2, -1, -1, -1),), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(d / "mobilenet_v3_small.pt2"))
        archives.append((d / "mobilenet_v3_small.pt2", "torch.export"))
    return archives


def test_torchvision_programs_pass_the_check_quickly(torchvision_programs, capsys):
    times = {}
    for path, kind in torchvision_programs:
        start = time.perf_counter()
        check_program_archive(str(path), kind)
        times[path.name] = time.perf_counter() - start
    with capsys.disabled():
        print("\ncheck time per archive: " + ", ".join(f"{n} {t * 1000:.0f} ms" for n, t in times.items()))
    # No wall-clock bound (a slow or loaded machine must not fail a test): the times are printed;
    # measured well under a second each on the 2-core CPU of docs/speed.md.


def test_checked_programs_load_and_their_warnings_stay_unseen(torchvision_programs):
    # scripted GoogLeNet calls aten::warn on every forward in eval mode; the tool runs it silenced
    path = next(p for p, _ in torchvision_programs if p.name == "googlenet.scripted.ts")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _quiet_load(path)(torch.zeros(1, 3, 64, 64))
        assert any("GoogleNetOutputs" in str(w.message) for w in seen)  # what the program says
        seen.clear()
        module, classes, _ = load_program(str(path), "torchscript", trust=False, input_size=64)
        assert classes == 10 and module(torch.zeros(3, 3, 64, 64)).shape == (3, 10)
    assert not seen


def test_trust_skips_the_check(tmp_path):
    target = tmp_path / "written_with_trust.bin"
    archive = _save(WritesOnForward(str(target)).eval(), tmp_path / "evil.ts")
    with pytest.raises(UnsafeProgramError):
        load_program(str(archive), "torchscript", trust=False, input_size=8)
    assert not target.exists()
    _, classes, _ = load_program(str(archive), "torchscript", trust=True, input_size=8)
    assert classes == 10 and target.read_bytes() == b"B" * 8  # the trusted program ran as it is
    assert inspect_checkpoint(str(archive), trust=True).verdict == "OK"


# ---------------------------------------------------------------------------------------
# The allow-list itself


def test_the_allow_list_is_fixed_data_without_harmful_names():
    harmful = {"from_file", "save", "load", "set_", "_assert_async", "share_memory_", "pin_memory", "manual_seed"}
    assert not harmful & opcheck.ALLOWED_ATEN and not harmful & opcheck.ALLOWED_ATTRIBUTES
    assert "Print" not in opcheck.ALLOWED_PRIM and not {"print", "fork", "awaitable"} & opcheck.ALLOWED_BUILTINS
    assert len(opcheck.ALLOWED_ATEN) > 100 and all(isinstance(n, str) for n in opcheck.ALLOWED_ATEN)
    # importable (and usable) without torch: the check runs before torch reads anything
    code = "import sys; sys.modules['torch'] = None; import ensemble_eval.opcheck as o; print(len(o.ALLOWED_ATEN))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(opcheck.ALLOWED_ATEN)


def test_unreadable_archives_are_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.ts"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(UnsafeProgramError, match="cannot be read as a TorchScript archive") as info:
        check_program_archive(str(bad), "torchscript")
    assert "\n" not in str(info.value)
