"""What a program archive may do, checked before torch reads it: an allow-list of pure operators.

``torch.jit.load`` runs code while it reads a TorchScript archive (the ``__setstate__`` of every
pickled object), and any program runs its operators on the probe and on every batch. The
operators torch registers include ones that read and write files (``aten::from_file`` with
``shared=True`` maps a file for writing, ``aten::save``), print, talk to other processes or
run native code of custom extensions. ``torch.export.load`` also evaluates strings of the
``.pt2`` graph as Python (symbolic shape expressions through ``sympy.sympify``, guard code
through ``exec``). So, before either loader sees the file, `check_program_archive` reads what
the archive names and refuses anything that is not on the fixed lists below:

- TorchScript: the code files (``<archive>/code/**.py``, TorchScript's Python-syntax output of
  its own printer) are parsed with `ast`, never run. Every operator a function
  names (``torch.X`` = ``aten::X``, ``ops.NS.X``), every builtin (``print`` is not one of the
  allowed), every attribute read or call on a value that is not one of the archive's own
  classes, every type and every ``__torch__.`` reference (it must be a class or function the
  archive itself defines; ``__torch__.torch.classes.*`` are C++ custom classes) is checked. A
  ``__setstate__`` (run by the loader) may only assign values taken from its state argument.
  The pickles (data.pkl, constants.pkl, ...) are read with `pickletools.genops` (no
  unpickling): every global must be one of the few TorchScript's own pickler writes, or a class
  of the archive's code.
- torch.export (``.pt2``): every node target of the graph JSON (nested graphs included) must be
  an allowed ``aten`` operator or one of a few pure Python functions on integers; every
  symbolic expression must be arithmetic on symbol names; guard code must be comparisons of
  input sizes; the archive may hold only the files torch.export.save writes.

The lists are fixed data, reviewed by hand (``scripts/collect_program_ops.py`` prints what
torchvision's classifiers use, to review a new torch release against): a new torch release
adds operators, never permissions. Anything not on them is refused in one line that names it,
and ``--trust-checkpoints`` is the one way past the check. What the check does not bound: the
compute a program spends, memory it allocates, or the numbers it returns.

This module imports no torch (the check runs before torch reads anything).
"""

from __future__ import annotations

import ast
import json
import pickletools
import re
import zipfile
from collections import ChainMap
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field

from .errors import UserError, first_line

TRUST_HINT = "if you trust the file pass --trust-checkpoints"

# Bounds on the work (a hostile archive must not make the check itself slow or huge). The
# largest legitimate archives measured (scripts/collect_program_ops.py, every torchvision
# classifier) stay far below them.
MAX_ENTRIES = 200_000  # files in one archive
MAX_CODE_BYTES = 4 << 20  # all TorchScript code files together (largest measured: 0.6 MB)
MAX_PICKLE_BYTES = 16 << 20  # all pickles of a TorchScript archive together (largest: 2.1 MB)
MAX_GRAPH_BYTES = 32 << 20  # one .pt2 graph JSON (largest: 3.0 MB)
MAX_EXPR_CHARS = 4096  # one symbolic expression or guard of a .pt2 graph
MAX_NAME_PARTS = 64  # a.b.c... chains (qualified names have a handful)


class UnsafeProgramError(UserError):
    """A program archive names something outside the allow-list, or cannot be checked."""


# ---------------------------------------------------------------------------------------------
# The allow-lists: fixed data, reviewed by hand. Candidates come from
# scripts/collect_program_ops.py (every torchvision classifier up to 100M parameters scripted
# and traced, 15 exported with a dynamic batch, torch 2.14); the common operators of image
# classifiers that those do not happen to use were added by hand. Left out on purpose (refused):
# anything that reads or writes files or maps memory (from_file, save, load, _save_*, the
# storage-aliasing set_ / _set_storage, share_memory_, pin_memory, data_ptr), printing
# (prim::Print, the `print` builtin), process/thread/network operators (fork, wait, rpc_*, c10d,
# _c10d_functional), profiling (profiler::*, record_function), RNG state (manual_seed, seed,
# get/set_rng_state), device-side asserts (_assert_async: a failure poisons the CUDA context),
# and every namespace but aten and prim (custom operators run native code of an extension,
# quantized:: and C++ custom classes included). Allowed on purpose: random draws (dropout is
# the identity in eval mode; stochastic depth and dropout keep their training branch in
# scripted code), uninitialized memory (empty: stochastic depth allocates with it; its content
# can only reach the program's own outputs), and aten::warn (scripted GoogLeNet, Inception v3,
# Swin and MaxViT call it; programs.py runs every program with warnings ignored, so its text
# never reaches the terminal).

# fmt: off
ALLOWED_ATEN: frozenset[str] = frozenset(
    {
        # elementwise arithmetic and math (Tensor and scalar overloads alike)
        "abs", "abs_", "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "true_divide",
        "floor_divide", "floordiv", "remainder", "fmod", "neg", "neg_", "reciprocal", "pow", "pow_", "square",
        "sqrt", "sqrt_", "rsqrt", "exp", "exp_", "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos",
        "tan", "tanh", "tanh_", "atan", "atan2", "erf", "erfc", "erfinv", "sigmoid", "sigmoid_", "sign", "floor",
        "ceil", "round", "trunc", "frac", "clamp", "clamp_", "clamp_min", "clamp_min_", "clamp_max", "clamp_max_",
        "clip", "clip_", "maximum", "minimum", "lerp", "addcmul", "addcdiv", "where", "nan_to_num", "masked_fill",
        "masked_fill_", "fill", "fill_", "zero_", "copysign", "hypot",
        # comparisons, logic, identity tests
        "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "logical_xor",
        "bitwise_and", "bitwise_or", "bitwise_not", "bitwise_xor", "isnan", "isinf", "isfinite", "__and__",
        "__or__", "__xor__", "__not__", "__is__", "__isnot__", "__contains__", "__getitem__",
        # activations and softmax
        "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu",
        "selu_", "celu", "celu_", "gelu", "gelu_", "silu", "silu_", "mish", "mish_", "hardswish", "hardswish_",
        "hardsigmoid", "hardsigmoid_", "softplus", "prelu", "_prelu_kernel", "glu", "threshold", "threshold_",
        "log_sigmoid", "softmax", "log_softmax", "_softmax", "_log_softmax", "_masked_softmax",
        # normalization
        "batch_norm", "_batch_norm_impl_index", "native_batch_norm", "_native_batch_norm_legit",
        "_native_batch_norm_legit_no_training", "_native_batch_norm_legit_functional", "layer_norm",
        "native_layer_norm", "group_norm", "native_group_norm", "instance_norm", "rms_norm", "norm",
        "linalg_vector_norm", "frobenius_norm",
        # convolution and linear algebra
        "conv1d", "conv2d", "conv3d", "_convolution", "convolution", "conv_transpose1d", "conv_transpose2d",
        "conv_transpose3d", "linear", "addmm", "mm", "bmm", "baddbmm", "matmul", "einsum", "t", "dot", "mv",
        "outer",
        # pooling and resampling
        "max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "avg_pool1d", "avg_pool2d",
        "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "_adaptive_avg_pool2d",
        "adaptive_max_pool1d", "adaptive_max_pool2d", "upsample_nearest2d", "upsample_bilinear2d",
        "upsample_bicubic2d", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle",
        # attention
        "scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
        "_native_multi_head_attention", "_transformer_encoder_layer_fwd",
        # reductions, selection, sorting
        "sum", "mean", "prod", "amax", "amin", "max", "min", "argmax", "argmin", "std", "var", "var_mean",
        "std_mean", "all", "any", "cumsum", "logsumexp", "topk", "sort", "argsort",
        # shapes, views, copies, dtype and device moves
        "view", "view_as", "reshape", "reshape_as", "_reshape_alias", "_unsafe_view", "flatten", "unflatten",
        "squeeze", "squeeze_", "unsqueeze", "unsqueeze_", "permute", "transpose", "transpose_", "swapaxes",
        "movedim", "contiguous", "expand", "expand_as", "repeat", "narrow", "slice", "select", "index",
        "index_select", "gather", "cat", "concat", "concatenate", "stack", "split", "split_with_sizes", "chunk",
        "unbind", "tensor_split", "roll", "flip", "pad", "constant_pad_nd", "reflection_pad1d",
        "reflection_pad2d", "replication_pad1d", "replication_pad2d", "clone", "detach", "alias",
        "lift_fresh_copy", "copy", "copy_", "to", "type_as", "diagonal", "tril", "triu", "view_copy",
        "permute_copy", "expand_copy", "slice_copy", "select_copy", "unsqueeze_copy", "squeeze_copy",
        "transpose_copy", "t_copy", "alias_copy", "masked_select",
        # tensors from sizes and values
        "zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "empty", "empty_like", "new_zeros",
        "new_ones", "new_full", "new_empty", "arange", "linspace", "tensor", "scalar_tensor", "eye", "meshgrid",
        # random draws (see above)
        "dropout", "dropout_", "feature_dropout", "feature_dropout_", "alpha_dropout", "alpha_dropout_",
        "feature_alpha_dropout", "feature_alpha_dropout_", "native_dropout", "bernoulli", "bernoulli_",
        "rand", "rand_like", "randn", "randn_like",
        # sizes, scalars and symbolic shapes (TorchScript and torch.export)
        "size", "dim", "numel", "stride", "sym_size", "sym_numel", "sym_stride", "sym_storage_offset", "item",
        "_local_scalar_dense", "is_floating_point", "is_complex", "is_contiguous", "is_grad_enabled",
        "is_autocast_enabled", "Int", "Float", "Bool", "ScalarImplicit", "IntImplicit", "FloatImplicit",
        "__range_length", "__derive_index", "_assert_scalar", "_assert_tensor_metadata", "sym_constrain_range",
        "sym_constrain_range_for_size",
        # TorchScript lists, dicts and strings (the printer writes their methods as torch.X)
        "len", "append", "extend", "insert", "pop", "_set_item", "Delete", "keys", "values", "items", "list",
        "dict", "get", "count", "reverse", "format", "str", "join", "startswith", "endswith", "strip", "lower",
        "upper",
        # warnings (see above)
        "warn",
    }
)

# ops.prim.X in TorchScript code: properties of values, casts, and raising an exception
ALLOWED_PRIM: frozenset[str] = frozenset(
    {
        "NumToTensor", "RaiseException", "device", "dtype", "layout", "type", "is_cuda", "is_nested",
        "requires_grad", "data", "min", "max", "abs", "unchecked_unwrap_optional",
    }
)

# bare names of TorchScript's builtins (print, fork, awaitable are not among them)
ALLOWED_BUILTINS: frozenset[str] = frozenset(
    {
        "annotate", "unchecked_cast", "uninitialized", "isinstance", "getattr", "hasattr", "int", "float", "bool",
        "len", "range", "min", "max", "abs", "round", "inf", "nan",
    }
)

# type names of annotations (no Future/Await: async; no RRef: remote; no Storage, Stream,
# Generator, Capsule)
ALLOWED_TYPES: frozenset[str] = frozenset(
    {
        "Tensor", "int", "float", "bool", "str", "complex", "NoneType", "Optional", "List", "Dict", "Tuple",
        "Union", "Final", "Any", "Device", "Layout", "ScalarType", "MemoryFormat", "number",
    }
)

# attributes of a value whose type the check does not know (a tensor: properties, and any
# method, i.e. aten::<name>, of ALLOWED_ATEN)
ALLOWED_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "shape", "dtype", "device", "layout", "ndim", "T", "mT", "data", "requires_grad", "is_cuda", "is_nested",
        "is_sparse", "is_quantized", "is_meta", "real", "imag",
    }
)

# globals TorchScript's own pickler writes (data.pkl, constants.pkl, traced_inputs.pkl,
# *.debug_pkl), besides the archive's own __torch__ classes
ALLOWED_PICKLE_GLOBALS: frozenset[str] = frozenset(
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch.jit._pickle.build_intlist",
        "torch.jit._pickle.build_doublelist",
        "torch.jit._pickle.build_boollist",
        "torch.jit._pickle.build_tensorlist",
        "torch.jit._pickle.build_tensor_from_id",
        "torch.jit._pickle.restore_type_tag",
    }
    | {
        f"torch.{dtype}Storage"
        for dtype in (
            "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
            "ComplexFloat", "ComplexDouble",
        )
    }
)

# node targets of a .pt2 graph that are Python functions: getitem (multi-output operators) and
# integer arithmetic of symbolic sizes
ALLOWED_PT2_PYTHON: frozenset[str] = frozenset(
    {f"_operator.{name}" for name in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow")}
    | {f"_operator.{name}" for name in ("eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_")}
    | {f"torch.{name}" for name in ("sym_float", "sym_int", "sym_max", "sym_min", "sym_not", "sym_sum")}
    | {f"math.{name}" for name in ("ceil", "floor", "trunc", "sqrt")}
)

# functions and constants of symbolic expressions (sympy's names, and torch's sympy functions)
ALLOWED_SYMPY: frozenset[str] = frozenset(
    {
        "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Mod", "Abs", "floor",
        "ceiling", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan",
        "GreaterThan", "Equality", "Unequality", "And", "Or", "Not", "true", "false", "oo", "FloorDiv",
        "ModularIndexing", "PythonMod", "CleanDiv", "CeilDiv", "CeilToInt", "FloorToInt", "IntTrueDiv",
        "FloatTrueDiv", "TruncToInt", "TruncToFloat", "RoundToInt", "RoundDecimal", "ToFloat", "PowByNatural",
        "FloatPow", "LShift", "RShift", "Where",
    }
)

# keyword arguments of those functions: a symbol's assumptions, sympy's evaluate flag
ALLOWED_SYMBOL_KEYWORDS: frozenset[str] = frozenset(
    {
        "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "zero", "nonzero",
        "even", "odd", "rational", "commutative", "evaluate",
    }
)
# fmt: on


@dataclass(frozen=True)
class Use:
    """One thing an archive names. `kind` says which list decides it (see `allowed`);
    `where` is the archive file (and class.method or graph node) that names it."""

    kind: str
    name: str
    where: str


# kinds whose names are looked up in a list; every other kind ("syntax", "setstate",
# "reference", "archive", "expression") is refused whatever its name
_LISTS: dict[str, frozenset[str]] = {}


def _lists() -> dict[str, frozenset[str]]:
    if not _LISTS:
        _LISTS.update(
            aten=ALLOWED_ATEN,
            prim=ALLOWED_PRIM,
            builtin=ALLOWED_BUILTINS,
            type=ALLOWED_TYPES,
            attribute=ALLOWED_ATTRIBUTES | ALLOWED_ATEN,
            global_=ALLOWED_PICKLE_GLOBALS,
            python=ALLOWED_PT2_PYTHON,
        )
    return _LISTS


def allowed(use: Use) -> bool:
    """Whether the allow-list admits `use`."""
    names = _lists().get(use.kind)
    return names is not None and use.name in names


def refusal(use: Use) -> str:
    """The one-line message for a refused use."""
    name, where = use.name, use.where
    what = {
        "aten": f"calls the operator aten::{name} ({where})",
        "prim": f"calls the operator prim::{name} ({where})",
        "op": f"calls the operator {name} ({where}), outside the aten and prim namespaces (custom or native code)",
        "builtin": f"calls the TorchScript builtin {name} ({where})",
        "type": f"uses the type {name} ({where})",
        "attribute": f"reads or calls .{name} on a value that is none of the archive's own classes ({where})",
        "global_": f"has a pickle that names the global {name} ({where})",
        "python": f"calls the Python function {name} ({where})",
    }.get(use.kind)
    if what is not None:
        return f"{what}, which is not on the allow-list of pure tensor operators; {TRUST_HINT}"
    if use.kind == "setstate":
        return (
            f"has a __setstate__ that does more than assign its state to attributes ({where}: {name}); it would run "
            f"inside torch.jit.load; {TRUST_HINT}"
        )
    if use.kind == "reference":
        return f"names {name} ({where}), which the archive's own code does not define; {TRUST_HINT}"
    if use.kind == "custom_class":
        return f"names the C++ custom class {name} ({where}), which runs native code; {TRUST_HINT}"
    if use.kind == "archive":
        return f"holds {name} ({where}), which a program archive does not; {TRUST_HINT}"
    if use.kind == "expression":
        return f"has a symbolic expression or guard that is not plain arithmetic ({where}: {name}); {TRUST_HINT}"
    return f"has code that cannot be checked ({where}: {name}); {TRUST_HINT}"


# ---------------------------------------------------------------------------------------------
# Archive entries


@dataclass
class _Archive:
    zf: zipfile.ZipFile
    root: str  # the folder every entry is in ("r18" for "r18/data.pkl"); torch reads only inside it
    names: list[str]  # entry names without the root folder

    def read(self, name: str, limit: int) -> bytes:
        info = self.zf.getinfo(f"{self.root}/{name}")
        if info.file_size > limit:
            raise _TooBig(f"{name} is {info.file_size} bytes")
        return self.zf.read(info)


class _TooBig(Exception):
    pass


def _open_archive(zf: zipfile.ZipFile, use: Callable[[Use], None]) -> _Archive:
    infos = zf.infolist()
    if not infos:
        raise zipfile.BadZipFile("the archive is empty")
    if len(infos) > MAX_ENTRIES:
        raise _TooBig(f"{len(infos)} files")
    root = infos[0].filename.split("/", 1)[0]  # torch's reader takes the first entry's folder
    seen: set[str] = set()
    names = []
    for info in infos:
        name = info.filename
        if name in seen:  # two readers may pick different copies
            use(Use("archive", f"two entries named {name!r}", "the zip directory"))
        seen.add(name)
        if not name.startswith(root + "/"):
            use(Use("archive", f"an entry outside its folder ({name!r})", "the zip directory"))
            continue
        names.append(name[len(root) + 1 :])
    return _Archive(zf, root, names)


# ---------------------------------------------------------------------------------------------
# TorchScript code

_ROOTS = frozenset({"torch", "ops", "__torch__", "CONSTANTS"})
_CUSTOM_CLASSES = "__torch__.torch.classes"  # C++ classes registered with torch, found before any code
_CODE_PATH = re.compile(r"code/__torch__(/[A-Za-z_][A-Za-z0-9_]*)*\.py")
_CLASS_BASES = frozenset({"Module", "NamedTuple", "Enum", "Interface", "ModuleInterface"})
_CLASS_SPECIAL = frozenset({"__parameters__", "__buffers__", "__forward_pre_hooks__", "__forward_hooks__"})
_TYPED_BUILTINS = frozenset({"annotate", "unchecked_cast", "uninitialized", "isinstance", "getattr", "hasattr"})
_CONSTANT = re.compile(r"c[0-9]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# bytes TorchScript's printer writes: printable ASCII and newlines (strings escape the rest)
_CODE_BYTES = re.compile(rb"[\x20-\x7e\n]*")

# Expression and statement nodes of the printer's output (anything else is refused). Operators
# (+, ==, and, not, ...) are pure: on values they are aten operators, on the archive's own
# classes its own methods.
_EXPR_NODES = (
    ast.Constant,
    ast.Name,
    ast.Attribute,
    ast.Call,
    ast.Subscript,
    ast.Slice,
    ast.Tuple,
    ast.List,
    ast.Dict,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.IfExp,
)


@dataclass
class _Def:
    """A class or function of the archive's code, by qualified name (``__torch__.a.b.C``)."""

    qualname: str
    node: ast.ClassDef | ast.FunctionDef
    path: str
    fields: dict[str, ast.expr] = field(default_factory=dict)  # attribute -> annotation
    methods: dict[str, ast.FunctionDef] = field(default_factory=dict)
    constants: set[str] = field(default_factory=set)  # class-level names (enum values, ...)

    @property
    def is_class(self) -> bool:
        return isinstance(self.node, ast.ClassDef)

    def member(self, name: str) -> bool:
        return name in self.fields or name in self.methods or name in self.constants


# inferred types: an annotation node, or one of these tuples
# ("class", qualname) an instance; ("def", qualname) a function or class of the archive;
# ("method", qualname, name) a bound method; ("new", qualname) Class.__new__; ("tuple", [types])
_Type = object


def _dotted(node: ast.expr) -> str | None:
    """'a.b.c' for a chain of names, else None ('' for a chain longer than any qualified name)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
        if len(parts) > MAX_NAME_PARTS:
            return ""
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _type_key(t: _Type) -> str:
    if isinstance(t, ast.AST):
        return ast.dump(t)
    if isinstance(t, tuple):
        return repr(tuple(_type_key(x) if isinstance(x, (ast.AST, tuple, list)) else x for x in t))
    if isinstance(t, list):
        return repr([_type_key(x) for x in t])
    return repr(t)


class _CodeScan:
    """Checks the code files of one TorchScript archive; reports every `Use` to `use`."""

    def __init__(self, files: dict[str, str], use: Callable[[Use], None]):
        self.files = files  # archive path ("code/__torch__/a.py") -> source text
        self.use = use
        self.defs: dict[str, _Def] = {}

    # -- files and definitions ------------------------------------------------------------

    def run(self) -> None:
        modules = []
        for path, text in self.files.items():
            if not _CODE_PATH.fullmatch(path):
                self.use(Use("syntax", "a code file name TorchScript does not write", path))
                continue
            module = _module_name(path)
            if module == _CUSTOM_CLASSES or module.startswith(_CUSTOM_CLASSES + "."):
                self.use(Use("custom_class", module[len(_CUSTOM_CLASSES) + 1 :] or module, path))
                continue
            tree = self._parse(path, text)
            if tree is not None:
                modules.append((path, module, tree))
        for path, module, tree in modules:
            self._collect(path, module, tree)
        # TorchScript resolves __torch__.a.b.c one name at a time: a definition that is also a
        # namespace of another file would resolve differently here and there
        namespaces = {m.rsplit(".", k)[0] for _, m, _ in modules for k in range(m.count(".") + 1)}
        for qualname, d in self.defs.items():
            if qualname in namespaces:
                self.use(Use("syntax", f"{qualname} is both a definition and a file's namespace", d.path))
        for d in list(self.defs.values()):
            try:
                self._check_def(d)
            except (RecursionError, MemoryError) as exc:
                self.use(Use("syntax", f"{type(exc).__name__} while reading it", f"{d.path}, {_short(d.qualname)}"))

    def _parse(self, path: str, text: str) -> ast.Module | None:
        """The module, if its text is what TorchScript's printer writes, so that Python's parser and
        TorchScript's read it alike: printable ASCII and newlines, no line continuation, no
        triple-quoted string, no comment (TorchScript reads `# type:` comments as signatures)."""
        if not _CODE_BYTES.fullmatch(text.encode("utf-8", "surrogateescape")):
            self.use(Use("syntax", "characters TorchScript's printer never writes (non-ASCII or control)", path))
            return None
        if '"""' in text or "'''" in text:
            self.use(Use("syntax", "a string in triple quotes", path))
            return None
        if "\\\n" in text or text.endswith("\\"):
            self.use(Use("syntax", "a line continuation", path))
            return None
        try:
            tree = ast.parse(text, filename=path)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            self.use(Use("syntax", first_line(exc), path))
            return None
        if "#" in text:  # allowed inside one-line strings only
            strings: dict[int, list[tuple[int, int]]] = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    if node.end_lineno != node.lineno:
                        self.use(Use("syntax", "a string over several lines", f"{path}:{node.lineno}"))
                        return None
                    strings.setdefault(node.lineno, []).append((node.col_offset, node.end_col_offset or 0))
            for number, line in enumerate(text.split("\n"), start=1):
                for col in (i for i, c in enumerate(line) if c == "#"):
                    if not any(a < col < b for a, b in strings.get(number, ())):
                        self.use(Use("syntax", "a comment", f"{path}:{number}"))
                        return None
        return tree

    def _collect(self, path: str, module: str, tree: ast.Module) -> None:
        for stmt in tree.body:
            if isinstance(stmt, (ast.ClassDef, ast.FunctionDef)):
                qualname = f"{module}.{stmt.name}"
                if qualname in self.defs:
                    self.use(Use("syntax", f"{stmt.name} defined twice", path))
                    continue
                d = _Def(qualname, stmt, path)
                self.defs[qualname] = d
                if isinstance(stmt, ast.ClassDef):
                    self._collect_members(d, stmt)
            else:
                self.use(Use("syntax", f"a top-level {type(stmt).__name__}", f"{path}:{stmt.lineno}"))

    def _collect_members(self, d: _Def, cls: ast.ClassDef) -> None:
        where = f"{d.path}, {cls.name}"
        names: list[str] = []
        for stmt in cls.body:
            if isinstance(stmt, ast.FunctionDef):
                d.methods[stmt.name] = stmt
                names.append(stmt.name)
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                d.fields[stmt.target.id] = stmt.annotation
                names.append(stmt.target.id)
            elif (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Subscript)
                and isinstance(stmt.targets[0].value, ast.Name)
                and stmt.targets[0].value.id == "__annotations__"
                and isinstance(stmt.targets[0].slice, ast.Constant)
                and isinstance(stmt.targets[0].slice.value, str)
            ):
                d.fields[stmt.targets[0].slice.value] = stmt.value  # __annotations__["0"] = <type>
                names.append(stmt.targets[0].slice.value)
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                d.constants.add(stmt.targets[0].id)
                names.append(stmt.targets[0].id)
            elif not isinstance(stmt, ast.Pass):
                self.use(Use("syntax", f"a {type(stmt).__name__} in a class body", f"{where}:{stmt.lineno}"))
        if len(set(names)) != len(names):
            self.use(Use("syntax", "a member defined twice", where))

    # -- checks of one definition ---------------------------------------------------------

    def _check_def(self, d: _Def) -> None:
        node = d.node
        if isinstance(node, ast.FunctionDef):
            self._check_function(node, None, f"{d.path}, {node.name}")
            return
        where = f"{d.path}, {node.name}"
        if node.keywords or node.decorator_list:
            self.use(Use("syntax", "class keywords or decorators", where))
        for base in node.bases:
            if not (isinstance(base, ast.Name) and base.id in _CLASS_BASES):
                self.use(Use("syntax", f"the class base {ast.unparse(base)[:60]}", where))
        for stmt in node.body:
            if isinstance(stmt, ast.FunctionDef):
                self._check_function(stmt, d, f"{d.path}, {node.name}.{stmt.name}")
            elif isinstance(stmt, ast.AnnAssign):
                self._type(stmt.annotation, where)
                if stmt.value is not None:
                    self._expr(stmt.value, {}, where)
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:  # other shapes: refused when collected
                target = stmt.targets[0]
                if isinstance(target, ast.Subscript):  # __annotations__["0"] = <type>
                    self._type(stmt.value, where)
                elif not isinstance(target, ast.Name):
                    pass
                elif target.id in _CLASS_SPECIAL:
                    if not (
                        isinstance(stmt.value, ast.List)
                        and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in stmt.value.elts)
                    ):
                        self.use(Use("syntax", f"{target.id} is not a list of names", where))
                elif not isinstance(stmt.value, ast.Constant):  # an enum value
                    self.use(Use("syntax", f"the class attribute {target.id} is not a constant", where))

    def _check_function(self, fn: ast.FunctionDef, owner: _Def | None, where: str) -> None:
        args = fn.args
        if fn.decorator_list or args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs:
            self.use(Use("syntax", "decorators or */** arguments", where))
        env: MutableMapping[str, _Type] = {}
        for i, a in enumerate(args.args):
            if a.annotation is not None:
                self._type(a.annotation, where)
            env[a.arg] = ("class", owner.qualname) if owner is not None and i == 0 else a.annotation
        for default in args.defaults:
            self._expr(default, {}, where)
        if fn.returns is not None:
            self._type(fn.returns, where)
        self._block(fn.body, env, where)
        if owner is not None and fn.name == "__setstate__":
            self._check_setstate(fn, where)

    def _check_setstate(self, fn: ast.FunctionDef, where: str) -> None:
        """Runs inside torch.jit.load: only `self.x = <from state>` (and `return None`)."""
        names = {a.arg for a in fn.args.args[1:]}
        self_name = fn.args.args[0].arg if fn.args.args else "self"

        def pure(e: ast.expr) -> bool:
            if isinstance(e, ast.Name):
                return e.id in names
            if isinstance(e, ast.Constant):
                return True
            if isinstance(e, ast.Subscript):
                return pure(e.value) and isinstance(e.slice, ast.Constant)
            if isinstance(e, (ast.Tuple, ast.List)):
                return all(pure(x) for x in e.elts)
            if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id in ("unchecked_cast", "annotate"):
                return len(e.args) == 2 and not e.keywords and pure(e.args[1])
            return False

        for stmt in fn.body:
            if isinstance(stmt, ast.Assign) and pure(stmt.value):
                ok = True
                for target in stmt.targets:
                    flat = target.elts if isinstance(target, ast.Tuple) else [target]
                    for t in flat:
                        if isinstance(t, ast.Name):
                            names.add(t.id)
                        elif not (
                            isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == self_name
                        ):
                            ok = False
                if ok:
                    continue
            elif isinstance(stmt, ast.Pass) or (
                isinstance(stmt, ast.Return)
                and (stmt.value is None or (isinstance(stmt.value, ast.Constant) and stmt.value.value is None))
            ):
                continue
            call = next((n for n in ast.walk(stmt) if isinstance(n, ast.Call)), None)
            what = f"calls {ast.unparse(call.func)[:60]}" if call is not None else f"a {type(stmt).__name__}"
            self.use(Use("setstate", what, where))
            return

    # -- statements -----------------------------------------------------------------------

    def _block(self, body: list[ast.stmt], env: MutableMapping[str, _Type], where: str) -> None:
        for stmt in body:
            self._stmt(stmt, env, where)

    def _stmt(self, stmt: ast.stmt, env: MutableMapping[str, _Type], where: str) -> None:
        if isinstance(stmt, ast.Assign):
            t = self._expr(stmt.value, env, where)
            for target in stmt.targets:
                self._bind(target, t, env, where)
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            self._type(stmt.annotation, where)  # `aux1 : Optional[Tensor] = ...`
            self._expr(stmt.value, env, where)
            env[stmt.target.id] = stmt.annotation
        elif isinstance(stmt, ast.Expr):
            self._expr(stmt.value, env, where)
        elif isinstance(stmt, ast.Return):
            if stmt.value is not None:
                self._expr(stmt.value, env, where)
        elif isinstance(stmt, (ast.Pass, ast.Break, ast.Continue)):
            pass
        elif isinstance(stmt, ast.If):
            self._expr(stmt.test, env, where)
            yes, no = ChainMap({}, env), ChainMap({}, env)  # each branch writes its own layer
            self._block(stmt.body, yes, where)
            self._block(stmt.orelse, no, where)
            for name in yes.maps[0].keys() | no.maps[0].keys():
                if name in yes and name in no:  # bound after the if only if both branches bound it
                    env[name] = _same(yes[name], no[name])
        elif isinstance(stmt, (ast.For, ast.While)):
            loop = ChainMap({}, env)
            if isinstance(stmt, ast.For):
                self._bind(stmt.target, self._element(self._expr(stmt.iter, env, where), None), loop, where)
            else:
                self._expr(stmt.test, env, where)
            if stmt.orelse:
                self.use(Use("syntax", "a loop with else", where))
            self._block(stmt.body, loop, where)
            for name, t in loop.maps[0].items():  # names first bound in the loop are not bound after it
                if name in env:
                    env[name] = _same(env[name], t)
        else:
            self.use(Use("syntax", f"a {type(stmt).__name__} statement", f"{where}:{stmt.lineno}"))

    def _bind(self, target: ast.expr, t: _Type, env: MutableMapping[str, _Type], where: str) -> None:
        if isinstance(target, ast.Name):
            env[target.id] = t
        elif isinstance(target, (ast.Tuple, ast.List)):
            parts = _tuple_parts(t, len(target.elts))
            for i, element in enumerate(target.elts):
                self._bind(element, parts[i] if parts is not None else None, env, where)
        elif isinstance(target, ast.Attribute):
            owner = self._class_of(self._expr(target.value, env, where))
            if owner is None or target.attr not in owner.fields:
                self.use(Use("attribute", target.attr, where))
        elif isinstance(target, ast.Subscript):
            self._expr(target.value, env, where)
            self._expr(target.slice, env, where)
        else:
            self.use(Use("syntax", f"an assignment to a {type(target).__name__}", where))

    # -- expressions ----------------------------------------------------------------------

    def _expr(self, node: ast.expr, env: MutableMapping[str, _Type], where: str) -> _Type:
        if not isinstance(node, _EXPR_NODES):
            self.use(Use("syntax", f"a {type(node).__name__} expression", where))
            return None
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, (str, int, float, complex, bool, type(None))):
                self.use(Use("syntax", f"a {type(node.value).__name__} constant", where))
            return None
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            if node.id in _ROOTS:
                self.use(Use("syntax", f"{node.id} used as a value", where))
            else:
                self.use(Use("builtin", node.id, where))
            return None
        if isinstance(node, ast.Attribute):
            chain = _dotted(node)
            if chain == "":
                self.use(Use("syntax", f"a chain of more than {MAX_NAME_PARTS} attributes", where))
                return None
            if chain is not None and chain.split(".", 1)[0] in _ROOTS and chain.split(".", 1)[0] not in env:
                return self._root(chain, where)
            return self._member(self._expr(node.value, env, where), node.attr, where)
        if isinstance(node, ast.Call):
            return self._call(node, env, where)
        if isinstance(node, ast.Subscript):
            t = self._expr(node.value, env, where)
            self._expr(node.slice, env, where)
            return self._element(t, node.slice)
        if isinstance(node, ast.Tuple):
            return ("tuple", [self._expr(e, env, where) for e in node.elts])
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self._expr(child, env, where)
            elif not isinstance(child, (ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.expr_context)):
                self.use(Use("syntax", f"a {type(child).__name__}", where))
        return None

    def _call(self, node: ast.Call, env: MutableMapping[str, _Type], where: str) -> _Type:
        f = node.func
        if isinstance(f, ast.Name) and f.id in _TYPED_BUILTINS and f.id not in env:
            self.use(Use("builtin", f.id, where))
            args = node.args
            if node.keywords or any(isinstance(a, ast.Starred) for a in args):
                self.use(Use("syntax", f"{f.id} with keyword or starred arguments", where))
                return None
            if f.id in ("annotate", "unchecked_cast") and len(args) == 2:
                self._type(args[0], where)
                self._expr(args[1], env, where)
                return args[0]
            if f.id == "uninitialized" and len(args) == 1:
                self._type(args[0], where)
                return args[0]
            if f.id == "isinstance" and len(args) == 2:
                self._expr(args[0], env, where)
                self._type(args[1], where)
                return None
            if f.id in ("getattr", "hasattr") and len(args) in (2, 3):
                name = args[1]
                if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                    self.use(Use("syntax", f"{f.id} of a name that is not a string literal", where))
                    return None
                recv = self._expr(args[0], env, where)
                for extra in args[2:]:
                    self._expr(extra, env, where)
                return self._member(recv, name.value, where) if f.id == "getattr" else None
            self.use(Use("syntax", f"{f.id} with {len(args)} arguments", where))
            return None
        ft = self._expr(f, env, where)
        for a in node.args:
            self._expr(a, env, where)  # a Starred argument is refused there
        for k in node.keywords:
            if k.arg is None:
                self.use(Use("syntax", "a ** argument", where))
            self._expr(k.value, env, where)
        return self._result(ft)

    def _root(self, chain: str, where: str) -> _Type:
        """A name chain from torch / ops / __torch__ / CONSTANTS."""
        parts = chain.split(".")
        head = parts[0]
        if head == "torch":
            if len(parts) == 3 and parts[1] == "autograd":  # torch.autograd.X is aten::X too
                parts = [head, parts[2]]
            if len(parts) == 2:
                self.use(Use("aten", parts[1], where))
                return ("op",)
        elif head == "ops":
            if len(parts) == 3:
                ns, name = parts[1], parts[2]
                if ns in ("aten", "prim"):
                    self.use(Use(ns, name, where))
                else:
                    self.use(Use("op", f"{ns}::{name}", where))
                return ("op",)
        elif head == "CONSTANTS":
            if len(parts) == 2 and _CONSTANT.fullmatch(parts[1]):
                return None
        elif chain.startswith(_CUSTOM_CLASSES + "."):
            self.use(Use("custom_class", chain[len(_CUSTOM_CLASSES) + 1 :], where))
            return None
        else:  # __torch__.<qualified name>[.member]
            for cut in range(len(parts), 1, -1):
                d = self.defs.get(".".join(parts[:cut]))
                if d is None:
                    continue
                rest = parts[cut:]
                if not rest:
                    return ("def", d.qualname)
                if len(rest) == 1 and d.is_class and rest[0] == "__new__":
                    return ("new", d.qualname)
                if len(rest) == 1 and d.is_class and d.member(rest[0]):
                    return ("method", d.qualname, rest[0]) if rest[0] in d.methods else None
                break
            self.use(Use("reference", chain, where))
            return None
        self.use(Use("syntax", f"the name {chain}", where))
        return None

    def _member(self, recv: _Type, attr: str, where: str) -> _Type:
        owner = self._class_of(recv)
        if owner is not None and owner.member(attr):
            if attr in owner.methods:
                return ("method", owner.qualname, attr)
            return owner.fields.get(attr)
        self.use(Use("attribute", attr, where))  # a tensor's method is aten::<attr>
        return None

    def _result(self, ft: _Type) -> _Type:
        """The type a call of a value of type `ft` returns, where known."""
        if isinstance(ft, tuple) and ft and ft[0] in ("def", "new", "method"):
            d = self.defs[ft[1]]
            if ft[0] == "new" or (ft[0] == "def" and d.is_class):
                return ("class", d.qualname)  # Class.__new__(Class), a NamedTuple's constructor
            fn = d.methods[ft[2]] if ft[0] == "method" else d.node
            return fn.returns if isinstance(fn, ast.FunctionDef) else None
        return None

    def _class_of(self, t: _Type) -> _Def | None:
        if isinstance(t, tuple) and t and t[0] == "class":
            return self.defs.get(t[1])
        if isinstance(t, (ast.Attribute, ast.Name)):
            chain = _dotted(t)
            d = self.defs.get(chain) if chain is not None else None
            return d if d is not None and d.is_class else None
        return None

    def _element(self, t: _Type, index: ast.expr | None) -> _Type:
        """The type of t[index] (index None: an element of an iteration), where known."""
        if isinstance(index, ast.Slice):
            return None
        if isinstance(t, tuple) and t and t[0] == "tuple":
            if isinstance(index, ast.Constant) and isinstance(index.value, int) and 0 <= index.value < len(t[1]):
                return t[1][index.value]
            return None
        if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name):
            args = t.slice.elts if isinstance(t.slice, ast.Tuple) else [t.slice]
            if t.value.id == "List" and len(args) == 1:
                return args[0]
            if t.value.id == "Dict" and len(args) == 2:
                return args[1] if index is not None else args[0]
            if t.value.id == "Tuple" and isinstance(index, ast.Constant) and isinstance(index.value, int):
                return args[index.value] if 0 <= index.value < len(args) else None
        return None

    # -- types ----------------------------------------------------------------------------

    def _type(self, node: ast.expr, where: str) -> None:
        if isinstance(node, ast.Name):
            self.use(Use("type", node.id, where))
        elif isinstance(node, ast.Constant) and node.value is None:
            pass
        elif isinstance(node, ast.Attribute):
            chain = _dotted(node)
            if chain is None or not chain.startswith("__torch__."):
                self.use(Use("type", ast.unparse(node)[:80], where))
            elif chain not in self.defs or chain.startswith(_CUSTOM_CLASSES + "."):
                self._root(chain, where)  # refused: a custom class or an undefined name
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            self.use(Use("type", node.value.id, where))
            for arg in node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]:
                self._type(arg, where)
        elif isinstance(node, ast.Tuple):
            for arg in node.elts:
                self._type(arg, where)
        else:
            self.use(Use("syntax", f"the type {ast.unparse(node)[:60]}", where))


def _same(a: _Type, b: _Type) -> _Type:
    """The type of a name two paths bound: theirs if they agree, else unknown."""
    return a if a is b or _type_key(a) == _type_key(b) else None


def _tuple_parts(t: _Type, n: int) -> list[_Type] | None:
    if isinstance(t, tuple) and t and t[0] == "tuple" and len(t[1]) == n:
        return list(t[1])
    if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id == "Tuple":
        args = t.slice.elts if isinstance(t.slice, ast.Tuple) else [t.slice]
        return list(args) if len(args) == n else None
    return None


def _module_name(path: str) -> str:
    """'code/__torch__/a/b.py' -> '__torch__.a.b' (where TorchScript's importer looks it up)."""
    return path[len("code/") : -len(".py")].replace("/", ".")


def _short(qualname: str) -> str:
    return qualname.rsplit(".", 1)[-1]


# ---------------------------------------------------------------------------------------------
# Pickles (read as opcodes, never unpickled)

_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
)
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


def pickle_globals(data: bytes) -> Iterator[str | None]:
    """Every global a pickle names, as 'module.name'; None for one that cannot be read statically
    (a STACK_GLOBAL whose two names are not string literals, or an extension code)."""
    memo: dict[int, object] = {}
    pushed: list[object] = []  # the strings (or None) the last opcodes pushed, newest last
    not_str = object()
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            yield f"{module}.{attr}"
            pushed = [not_str]
        elif name == "STACK_GLOBAL":
            if len(pushed) >= 2 and isinstance(pushed[-2], str) and isinstance(pushed[-1], str):
                yield f"{pushed[-2]}.{pushed[-1]}"
            else:
                yield None
            pushed = [not_str]
        elif name in ("EXT1", "EXT2", "EXT4"):
            yield None
        elif name in _STRING_OPS:
            pushed.append(arg if isinstance(arg, str) else arg.decode("latin-1") if isinstance(arg, bytes) else not_str)
        elif name in _GET_OPS:
            pushed.append(memo.get(arg, not_str))
        elif name in _PUT_OPS:
            memo[arg] = pushed[-1] if pushed else not_str
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else not_str
        elif name in ("PROTO", "FRAME"):  # no stack effect
            continue
        else:
            pushed = [not_str]
        del pushed[:-2]


def _check_pickles(archive: _Archive, defs: dict[str, _Def], use: Callable[[Use], None]) -> None:
    budget = MAX_PICKLE_BYTES
    for name in archive.names:
        if not name.endswith("pkl"):
            continue
        data = archive.read(name, budget)
        budget -= len(data)
        try:
            found = list(pickle_globals(data))
        except (ValueError, EOFError, KeyError, IndexError, TypeError, UnicodeDecodeError) as exc:
            use(Use("syntax", f"a damaged pickle ({first_line(exc)})", name))
            continue
        for g in found:
            if g is None:
                use(Use("syntax", "a global that cannot be read without unpickling", name))
            elif g.startswith(_CUSTOM_CLASSES + "."):
                use(Use("custom_class", g[len(_CUSTOM_CLASSES) + 1 :], name))
            elif g.startswith("__torch__."):
                d = defs.get(g)
                if d is None or not d.is_class:
                    use(Use("reference", g, name))
            else:
                use(Use("global_", g, name))


def torchscript_uses(archive: _Archive, use: Callable[[Use], None]) -> None:
    """Report everything the TorchScript archive's code and pickles name."""
    files: dict[str, str] = {}
    budget = MAX_CODE_BYTES
    for name in archive.names:
        if name.startswith("code/") and name.endswith(".py"):
            data = archive.read(name, budget)
            budget -= len(data)
            files[name] = data.decode("utf-8", "surrogateescape")
    scan = _CodeScan(files, use)
    scan.run()
    _check_pickles(archive, scan.defs, use)


# ---------------------------------------------------------------------------------------------
# torch.export (.pt2)

_PT2_FILES = re.compile(
    r"(archive_format|archive_version|byteorder|version|\.data/[^/]+|models/[^/]+\.json"
    r"|data/(weights|constants|sample_inputs)/[^/]+|extra/.+)"
)
_TARGET = re.compile(r"torch\.ops\.([A-Za-z_]\w*)\.([A-Za-z_]\w*)(\.[A-Za-z]\w*)?")  # no _attribute overload
_SYMBOL = re.compile(r"[a-z]+[0-9]+")


def _check_expression(text: str, where: str, use: Callable[[Use], None], guard: bool) -> None:
    """A symbolic shape expression (sympy syntax) or a guard: refuse anything but arithmetic,
    comparisons and the allowed functions of symbol names (guards: of L['input'].size()[i])."""
    if len(text) > MAX_EXPR_CHARS or not re.fullmatch(r"[A-Za-z0-9_ .,()\[\]'+\-*/%<>=!&|~]*", text):
        use(Use("expression", text[:80], where))
        return
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        use(Use("expression", text[:80], where))
        return
    for node in ast.walk(tree):
        ok = isinstance(
            node,
            (
                ast.Expression,
                ast.BinOp,
                ast.UnaryOp,
                ast.BoolOp,
                ast.Compare,
                ast.Load,
                ast.operator,
                ast.unaryop,
                ast.boolop,
                ast.cmpop,
                ast.keyword,
            ),
        )
        if isinstance(node, ast.Constant):
            ok = isinstance(node.value, (int, float, bool)) or (
                isinstance(node.value, str) and _IDENT.fullmatch(node.value) is not None
            )
        elif isinstance(node, ast.Name):
            ok = node.id in ALLOWED_SYMPY or (_SYMBOL.fullmatch(node.id) is not None) or (guard and node.id == "L")
        elif isinstance(node, ast.Call):
            ok = (
                isinstance(node.func, ast.Name)
                and node.func.id in ALLOWED_SYMPY
                or (guard and isinstance(node.func, ast.Attribute) and node.func.attr in ("size", "stride"))
            )
            ok = ok and all(k.arg in ALLOWED_SYMBOL_KEYWORDS for k in node.keywords)
        elif isinstance(node, ast.keyword):
            ok = isinstance(node.value, ast.Constant) and isinstance(node.value.value, bool)
        elif isinstance(node, ast.Subscript):
            ok = guard and isinstance(node.slice, ast.Constant)
        elif isinstance(node, ast.Attribute):
            ok = guard and node.attr in ("size", "stride")
        if not ok:
            use(Use("expression", text[:80], where))
            return


def _check_target(target: object, where: str, use: Callable[[Use], None]) -> None:
    if not isinstance(target, str):
        use(Use("syntax", "a node target that is not a name", where))
        return
    m = _TARGET.fullmatch(target)
    if m is not None:
        ns, name = m.group(1), m.group(2)
        use(Use("aten", name, where) if ns == "aten" else Use("op", f"{ns}::{name}", where))
    else:
        use(Use("python", target, where))


def _walk_json(obj: object) -> Iterator[tuple[str, object, object]]:
    """(key, value, the dict holding it) of every dict entry, iteratively (no recursion)."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            for k, v in o.items():
                yield k, v, o
                if isinstance(v, (dict, list)):
                    stack.append(v)
        elif isinstance(o, list):
            stack.extend(x for x in o if isinstance(x, (dict, list)))


def pt2_uses(archive: _Archive, use: Callable[[Use], None]) -> None:
    """Report everything a .pt2 archive's graphs name."""
    for name in archive.names:
        if not _PT2_FILES.fullmatch(name):
            use(Use("archive", f"the file {name}", "torch.export.save writes no such file"))
    for name in archive.names:
        if not (name.startswith("models/") and name.endswith(".json")):
            continue
        try:
            program = json.loads(archive.read(name, MAX_GRAPH_BYTES))
        except (ValueError, RecursionError, MemoryError) as exc:
            use(Use("syntax", f"unreadable JSON ({first_line(exc)})", name))
            continue
        if not isinstance(program, dict):
            use(Use("syntax", "not a program", name))
            continue
        for i, guard in enumerate(program.get("guards_code") or []):
            if not isinstance(guard, str):
                use(Use("expression", repr(guard)[:80], f"{name}, guards_code[{i}]"))
            else:
                _check_expression(guard, f"{name}, guards_code[{i}]", use, guard=True)
        for key, value, holder in _walk_json(program):
            if key == "target":  # of a node (the only "target" of the schema), nested graphs included
                _check_target(value, f"{name}, node {str(holder.get('name', '?'))[:60]}", use)
            elif key == "as_operator":
                _check_target(value, f"{name}, an operator argument", use)
            elif key == "expr_str":
                if not isinstance(value, str):
                    use(Use("expression", repr(value)[:80], name))
                else:
                    _check_expression(value, name, use, guard=False)
            elif key in ("custom_obj_values", "as_custom_obj") and value:
                use(Use("custom_class", "a torchbind object", name))


# ---------------------------------------------------------------------------------------------
# Entry points


def archive_uses(path: str, kind: str) -> list[Use]:
    """Everything the archive names, allowed or not (for scripts/collect_program_ops.py)."""
    found: list[Use] = []
    _scan(path, kind, found.append)
    return found


def check_program_archive(path: str, kind: str) -> None:
    """Refuse (UnsafeProgramError) a TorchScript ("torchscript") or torch.export ("torch.export")
    archive that names anything outside the allow-lists, before torch reads it."""

    def use(u: Use) -> None:
        if not allowed(u):
            raise UnsafeProgramError(refusal(u))

    _scan(path, kind, use)


def _scan(path: str, kind: str, use: Callable[[Use], None]) -> None:
    if kind not in ("torchscript", "torch.export"):
        raise ValueError(f"unknown program kind {kind!r}")
    what = "TorchScript" if kind == "torchscript" else "torch.export"
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head[4:8] == b"PTMF":  # torch would read it as a flatbuffer (mobile) module, not as a zip
            use(Use("archive", "a flatbuffer header", "the first bytes"))
        with zipfile.ZipFile(path) as zf:
            archive = _open_archive(zf, use)
            if kind == "torchscript":
                torchscript_uses(archive, use)
            else:
                pt2_uses(archive, use)
    except UnsafeProgramError:
        raise
    except _TooBig as exc:
        raise UnsafeProgramError(f"is too large to be checked ({exc}); {TRUST_HINT}") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, KeyError, ValueError, RuntimeError) as exc:
        # RuntimeError: zipfile's "encrypted" or "unsupported compression" refusals
        raise UnsafeProgramError(f"cannot be read as a {what} archive ({first_line(exc)}); re-save it") from exc
    except Exception as exc:  # anything else a hostile archive provokes: refused, not a crash
        raise UnsafeProgramError(f"cannot be checked ({first_line(exc)}); {TRUST_HINT}") from exc
