"""Before any loader runs: what a checkpoint file declares, read without building or running anything.

A file can ask a loader for far more memory than it holds (a zip entry of 1 GiB of zeros
deflated into 1 MB; a 20-byte pickle calling bytearray(10**10)), and a pickle can name any
Python callable. Both are read here from the zip directory and the pickles' opcodes
(pickletools.genops only parses), before torch.load, torch.jit.load or torch.export.load:
`check_torch_file` (torch.save files, zip or legacy) and `check_archive_sizes`
(TorchScript and torch.export archives; their operators are checked by opcheck).
Only the dtype sizes come from torch.
"""

from __future__ import annotations

import io
import math
import os
import pickletools
import re
import zipfile

import torch

from .errors import first_line

MAX_TENSOR_ELEMENTS = 1 << 28  # 268M: far beyond any layer of a supported architecture


class Refusal(Exception):
    """A file-level problem, turned into an ERROR verdict by members.inspection.inspect_checkpoint."""


MAX_ARCHIVE_BYTES = 64 << 30  # declared (uncompressed) bytes of one archive's entries: 16G float32 values
MAX_COMPRESSION_RATIO = 10  # compressed entries may expand this much (float weights deflate about 1.1:1) ...
COMPRESSION_SLACK = 64 << 20  # ... plus this many bytes in all
MAX_PICKLE_BYTES = 64 << 20  # one pickle (data.pkl, a legacy file's object pickle); state dicts: KBs to a few MB
MAX_PICKLE_BUILD = 256 << 20  # bytes a pickle's own objects may build beyond the storages it declares
MAX_PICKLE_ITEMS = 1 << 22  # stack + memo entries while scanning one pickle
TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy torch.save file

# Callables that run processes, code, files or the network: refused in any pickle, with or
# without --trust-checkpoints (which is for pickled model classes).
CODE_MODULES = frozenset(
    """os posix nt subprocess _posixsubprocess sys importlib runpy socket _socket shutil pty ctypes _ctypes
    marshal pickle _pickle code codeop webbrowser multiprocessing _multiprocessing concurrent asyncio signal
    _signal threading _thread ssl _ssl select selectors urllib.request urllib3 requests http.client http.server
    ftplib smtplib telnetlib poplib imaplib xmlrpc fileinput tempfile glob shelve dbm sqlite3 zipimport pkgutil
    timeit pdb bdb trace profile cProfile doctest platform sysconfig distutils setuptools pip dill cloudpickle
    joblib gc resource mmap fcntl termios tty pydoc tkinter IPython torch.hub torch.package torch.utils.cpp_extension
    torch.multiprocessing torch.distributed torch._dynamo torch._inductor numpy.f2py numpy.distutils
    numpy.ctypeslib numpy.testing numpy.lib.npyio""".split()
)
CODE_BUILTINS = frozenset(
    """eval exec compile open __import__ getattr setattr delattr globals locals vars input breakpoint exit quit
    help execfile reload file apply""".split()
)
CODE_NAMES = frozenset(
    """operator.attrgetter operator.methodcaller functools.reduce torch.load torch.save torch.serialization.load
    torch.serialization.save torch.jit.load torch.jit.save torch.export.load torch.export.save numpy.load
    numpy.save numpy.savez numpy.fromfile numpy.loadtxt numpy.genfromtxt numpy.memmap io.open io.open_code
    io.FileIO _io.open _io.open_code _io.FileIO types.FunctionType types.LambdaType types.CodeType types.MethodType
    types.ModuleType""".split()
)
CODE_ATTRIBUTES = frozenset(  # as the last part of any name: a module reached as an attribute, or a spawner
    """os posix nt sys subprocess builtins importlib socket shutil ctypes marshal pickle runpy pty system popen
    execv execve execl execlp execvp execvpe spawnv spawnl spawnlp spawnvp posix_spawn posix_spawnp startfile
    fork forkpty import_module check_output check_call getoutput getstatusoutput eval exec __import__""".split()
)
TENSOR_REBUILDS = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3")
OTHER_TENSOR_KINDS = {  # rebuild functions of tensors no member can use; refused before they are built
    "torch._utils._rebuild_qtensor": "a quantized tensor",
    "torch._utils._rebuild_sparse_tensor": "a sparse tensor",
    "torch._utils._rebuild_meta_tensor_no_storage": "a tensor on device meta (no data)",
    "torch._utils._rebuild_nested_tensor": "a nested tensor",
    "torch._utils._rebuild_wrapper_subclass": "a tensor subclass without storage",
}
LATIN1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1")


def is_code_global(name: str) -> bool:
    """Whether `module.name` (as a pickle names it) runs processes, code, files or the network.

    `builtins.getattr` is judged where it is called (`_PickleScan`): fetching an enum member by
    name is data."""
    module, _, attr = name.rpartition(".")
    if module == "builtins":
        return attr in CODE_BUILTINS and attr != "getattr"
    return (
        any(module == m or module.startswith(m + ".") for m in CODE_MODULES)
        or name in CODE_NAMES
        or attr in CODE_ATTRIBUTES
    )


class _Global:
    """A global a pickle names (module.name): referenced, never imported."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _Storage:
    __slots__ = ("key", "nbytes", "itemsize")

    def __init__(self, key: object, nbytes: int, itemsize: int):
        self.key, self.nbytes, self.itemsize = key, nbytes, itemsize


class _Tensor:
    __slots__ = ("numel",)

    def __init__(self, numel: int):
        self.numel = numel


class _Built:
    """An object of `size` bytes that the pickle's own calls would build (bytearray, bytes)."""

    __slots__ = ("size",)

    def __init__(self, size: int):
        self.size = size


_OTHER = object()  # any other object (lists, dicts, instances): its contents do not matter here
_MARK = object()


def _itemsize(sym: object) -> int | None:
    """Element size of a dtype or storage type the pickle names (torch.float32, torch.FloatStorage)."""
    if not isinstance(sym, _Global):
        return None
    module, _, attr = sym.name.rpartition(".")
    if attr == "UntypedStorage":
        return 1
    if attr.endswith("Storage"):
        try:
            return torch.serialization.StorageType(attr).dtype.itemsize
        except (RuntimeError, KeyError, AttributeError):
            return None
    dtype = getattr(torch, attr, None) if module == "torch" else None
    return dtype.itemsize if isinstance(dtype, torch.dtype) else None


def _size_of(value: object) -> int:
    if isinstance(value, (str, bytes)):
        return len(value)
    return value.size if isinstance(value, _Built) else 0


class _PickleScan:
    """One pickle's opcodes run on a model of the unpickler's stack, building nothing: the globals it
    names, the calls it makes (with their arguments where they are constants), the storages it declares.

    Raises Refusal for code, for tensors no member can use, and for objects far larger than the
    pickle (bytearray(10**10), chains of _codecs.encode, a tensor of 10**12 elements)."""

    def __init__(self, allowance: int = 0):
        self.code: list[str] = []
        self.storages: dict[object, int] = {}  # storage key -> declared bytes
        self.built = 0
        self.allowance = allowance  # bytes of declared storages the pickle may copy (device tensors)
        self.result: object = None

    def _code(self, name: str) -> None:
        if name not in self.code:
            self.code.append(name)

    def _check_escape(self, items) -> None:
        for item in items:
            if isinstance(item, _Global) and item.name == "builtins.getattr":
                self._code(item.name)  # getattr handed to something else to call later

    def _global(self, module: object, name: object) -> _Global:
        if not isinstance(module, str) or not isinstance(name, str):
            raise Refusal("its pickle names a global that is not a string; the file is corrupt")
        import _compat_pickle

        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        sym = _Global(f"{module}.{name}")
        if is_code_global(sym.name):
            self._code(sym.name)
        return sym

    def _persistent(self, pid: object) -> object:
        """A storage reference: ('storage', type, key, location, numel[, view])."""
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            return _OTHER
        itemsize = _itemsize(pid[1]) or 1
        numel = pid[4] if isinstance(pid[4], int) else 0
        if numel < 0:
            raise Refusal("its pickle declares a storage of negative size; the file is corrupt")
        self.storages[pid[2]] = max(self.storages.get(pid[2], 0), numel * itemsize)
        view = pid[5] if len(pid) > 5 else None
        if isinstance(view, tuple) and len(view) == 3 and isinstance(view[2], int):
            numel = view[2]
        return _Storage(pid[2], numel * itemsize, itemsize)

    def _grow(self, size: int) -> _Built:
        self.built += size
        if self.built > MAX_PICKLE_BUILD + self.allowance:
            raise Refusal(
                f"its pickle would build {self.built:,} bytes of objects beyond its tensors (at most "
                f"{MAX_PICKLE_BUILD + self.allowance:,} allowed): a memory bomb or a corrupt file, not loaded"
            )
        return _Built(size)

    def _tensor(self, args: tuple, dtype_at: int | None) -> _Tensor:
        storage, size = args[0], args[2] if len(args) > 2 else None
        if not (isinstance(size, tuple) and all(isinstance(d, int) for d in size)):
            return _Tensor(0)
        if any(d < 0 for d in size):
            raise Refusal("its pickle declares a tensor of negative size; the file is corrupt")
        numel = math.prod(size)
        if numel > MAX_TENSOR_ELEMENTS:
            raise Refusal(f"a tensor declares {numel:,} elements, far more than any supported layer")
        itemsize = _itemsize(args[dtype_at]) if dtype_at is not None and len(args) > dtype_at else None
        if isinstance(storage, _Storage) and numel and numel * (itemsize or storage.itemsize) > storage.nbytes:
            raise Refusal("a tensor is a broadcast view without its data (stride 0); re-save real weights")
        return _Tensor(numel)

    def _call(self, func: object, args: object) -> object:
        """The result of func(*args), as far as it matters: calls that build big objects are counted."""
        args = args if isinstance(args, tuple) else ()
        if not isinstance(func, _Global):
            return _OTHER
        module, _, attr = func.name.rpartition(".")
        if func.name in OTHER_TENSOR_KINDS:
            raise Refusal(
                f"holds {OTHER_TENSOR_KINDS[func.name]} ({func.name}), which is not read; only dense float weights "
                "are supported"
            )
        if func.name == "builtins.getattr":
            target, name = (args + (None, None))[:2]
            if not (isinstance(target, _Global) and isinstance(name, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*", name)):
                self._code(func.name)  # anything but SomeEnum.MEMBER by name
            return _OTHER
        if module == "torch._utils" and attr in TENSOR_REBUILDS and args:
            return self._tensor(args, 6 if attr == "_rebuild_tensor_v3" else None)
        if func.name == "torch._tensor._rebuild_from_type_v2" and len(args) >= 3:
            return self._call(args[0], args[2])
        if func.name in ("torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"):
            return args[0] if args else _OTHER
        if func.name in ("torch._utils._rebuild_device_tensor_from_cpu_tensor", "torch._utils._rebuild_xla_tensor"):
            data = args[0] if args else None
            itemsize = _itemsize(args[1]) if len(args) > 1 else None
            return self._grow(data.numel * (itemsize or 16)) if isinstance(data, _Tensor) else _OTHER
        if func.name == "builtins.bytearray":
            first = args[0] if args else b""
            return self._grow(first if isinstance(first, int) and not isinstance(first, bool) else _size_of(first))
        if func.name == "_codecs.encode":
            text = args[0] if args else ""
            codec = args[1] if len(args) > 1 else "utf-8"
            exact = isinstance(text, str) and isinstance(codec, str) and codec.lower() in LATIN1
            return self._grow(len(text) if exact else 10 * _size_of(text) + 64)
        sized = sum(_size_of(a) for a in args if isinstance(a, _Built))
        return self._grow(8 * sized) if sized else _OTHER

    def run(self, fh) -> None:
        """Scan one pickle from `fh` (which is left just after its STOP opcode)."""
        self.stack: list = []
        self.memo: dict = {}
        for op, arg, _pos in pickletools.genops(fh):
            name = op.name
            if name in ("PROTO", "FRAME", "STOP", "READONLY_BUFFER"):
                continue
            if not (self._build_step(name, arg) or self._container_step(name, arg)):
                raise Refusal(f"its pickle uses opcode {name}, which this tool does not know; re-save the file")
            if len(self.stack) + len(self.memo) > MAX_PICKLE_ITEMS:
                raise Refusal("its pickle holds more objects than any checkpoint; the file is hostile or corrupt")
        self.result = self.stack[-1] if self.stack else None

    def _pop_mark(self) -> list:
        stack = self.stack
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is _MARK:
                items = stack[i + 1 :]
                del stack[i:]
                self._check_escape(items)
                return items
        raise Refusal("its pickle is malformed (no MARK); the file is truncated or corrupt")

    def _pop(self) -> object:
        item = self.stack.pop()
        if item is _MARK:
            raise Refusal("its pickle is malformed (MARK); the file is truncated or corrupt")
        return item

    def _build_step(self, name: str, arg: object) -> bool:
        """The opcodes that push values, name globals and call them; False for any other."""
        stack, pop = self.stack, self._pop
        if name in _PUSH_ARG:
            stack.append(arg)
        elif name in _PUSH_CONST:
            stack.append(_PUSH_CONST[name])
        elif name == "MARK":
            stack.append(_MARK)
        elif name in ("GLOBAL", "INST"):
            module, _, attr = arg.partition(" ")
            sym = self._global(module, attr)
            stack.append(sym if name == "GLOBAL" else self._call(sym, tuple(self._pop_mark())))
        elif name == "STACK_GLOBAL":
            attr = pop()
            stack.append(self._global(pop(), attr))
        elif name in ("EXT1", "EXT2", "EXT4"):
            stack.append(_Global(f"copyreg.extension_{arg}"))
        elif name == "REDUCE" or name == "NEWOBJ":
            args = pop()
            func = pop()
            self._check_escape(args if isinstance(args, tuple) else ())
            stack.append(self._call(func, args))
        elif name == "NEWOBJ_EX":
            pop()
            args = pop()
            stack.append(self._call(pop(), args))
        elif name == "OBJ":
            items = self._pop_mark()
            stack.append(self._call(items[0], tuple(items[1:])) if items else _OTHER)
        elif name == "BUILD":
            self._check_escape((pop(),))
            if not stack:
                raise IndexError("BUILD on an empty stack")
        elif name == "PERSID":
            stack.append(self._persistent(arg))
        elif name == "BINPERSID":
            stack.append(self._persistent(pop()))
        else:
            return False
        return True

    def _container_step(self, name: str, arg: object) -> bool:
        """The opcodes that make tuples, lists, dicts and sets, fill them, and use the memo;
        False for any other."""
        stack, pop = self.stack, self._pop
        if name == "TUPLE":
            stack.append(tuple(self._pop_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            items = tuple(reversed([pop() for _ in range(int(name[-1]))]))
            self._check_escape(items)
            stack.append(items)
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "NEXT_BUFFER"):
            stack.append(_OTHER)
        elif name in ("LIST", "DICT", "FROZENSET"):
            self._pop_mark()
            stack.append(_OTHER)
        elif name in ("APPENDS", "SETITEMS", "ADDITEMS", "POP_MARK"):
            self._pop_mark()
        elif name == "POP" and stack and stack[-1] is _MARK:
            stack.pop()
        elif name in ("APPEND", "SETITEM", "POP"):
            self._check_escape([pop() for _ in range(2 if name == "SETITEM" else 1)])
        elif name == "DUP":
            stack.append(stack[-1])
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            self.memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(self.memo[arg])
        else:
            return False
        return True

    def code_refusal(self) -> Refusal | None:
        if not self.code:
            return None
        more = f" and {len(self.code) - 1} more" if len(self.code) > 1 else ""
        return Refusal(
            f"holds pickled code (calls {self.code[0]}{more}), which was not run; --trust-checkpoints does not "
            "load it either (trust is for pickled model classes); a checkpoint needs no code: get the weights "
            "from their source or re-save them as a state dict"
        )


_PUSH_ARG = frozenset(
    """INT BININT BININT1 BININT2 LONG LONG1 LONG4 STRING BINSTRING SHORT_BINSTRING BINBYTES SHORT_BINBYTES
    BINBYTES8 BYTEARRAY8 UNICODE SHORT_BINUNICODE BINUNICODE BINUNICODE8 FLOAT BINFLOAT""".split()
)
_PUSH_CONST = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


class _BoundedReader:
    """A pickle inside a bigger file: no read goes past MAX_PICKLE_BYTES from where it starts (a
    declared length of 2**60 is refused, not allocated); reads past the file's end come back short."""

    def __init__(self, fh):
        self.fh = fh
        self.limit = fh.tell() + MAX_PICKLE_BYTES

    def read(self, n: int = -1) -> bytes:
        room = self.limit - self.fh.tell()
        if n < 0 or n > room:
            raise Refusal(f"its pickle is larger than {MAX_PICKLE_BYTES:,} bytes, far more than any checkpoint's")
        return self.fh.read(n)

    def readline(self) -> bytes:
        return self.fh.readline(max(0, min(1 << 16, self.limit - self.fh.tell())))


def _scan(fh, allowance: int = 0) -> _PickleScan:
    """Scan one pickle (see _PickleScan); a malformed one is refused as truncated or corrupt."""
    scan = _PickleScan(allowance)
    try:
        scan.run(fh)
    except Refusal as exc:
        raise scan.code_refusal() or exc from None
    except (ValueError, IndexError, KeyError, EOFError, UnicodeDecodeError, OverflowError, MemoryError) as exc:
        refusal = scan.code_refusal()
        if refusal is not None:
            raise refusal from None
        raise Refusal(f"cannot be read ({first_line(exc)}); the file is truncated or corrupt") from exc
    refusal = scan.code_refusal()
    if refusal is not None:
        raise refusal
    return scan


def check_zip_directory(fh, size: int) -> list[zipfile.ZipInfo]:
    """The entries of a zip archive, refused (Refusal) when their declared sizes do not fit the file:
    entries outside it or overlapping, compressed entries expanding more than MAX_COMPRESSION_RATIO
    (COMPRESSION_SLACK bytes aside), or more than MAX_ARCHIVE_BYTES in all. Reads the directory only."""
    try:
        with zipfile.ZipFile(fh) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise Refusal(f"cannot be read as a zip archive ({first_line(exc)}); the file is truncated or corrupt") from exc
    declared = held = excess = 0
    worst: zipfile.ZipInfo | None = None
    for info in infos:
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or (
            info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size
        ):
            raise Refusal(f"zip entry {info.filename!r} is stored in a way torch does not write; the file is corrupt")
        if info.header_offset + 30 + len(info.filename) + info.compress_size > size:
            raise Refusal(f"zip entry {info.filename!r} ends past the end of the file; the file is truncated")
        declared += info.file_size
        held += info.compress_size
        if info.compress_type == zipfile.ZIP_DEFLATED:
            over = info.file_size - MAX_COMPRESSION_RATIO * info.compress_size
            if over > 0:
                excess += over
                if worst is None or over > worst.file_size - MAX_COMPRESSION_RATIO * worst.compress_size:
                    worst = info
    if held > size:
        raise Refusal("its zip entries overlap (they hold more bytes than the file); the file is hostile or corrupt")
    if excess > COMPRESSION_SLACK and worst is not None:
        ratio = worst.file_size // max(worst.compress_size, 1)
        raise Refusal(
            f"zip entry {worst.filename!r} declares {worst.file_size:,} bytes compressed into {worst.compress_size:,} "
            f"({ratio:,}:1); checkpoints are stored, not compressed that far: a decompression bomb or a corrupt "
            "file, not loaded"
        )
    if declared > MAX_ARCHIVE_BYTES:
        raise Refusal(
            f"its zip entries declare {declared:,} bytes, more than the {MAX_ARCHIVE_BYTES:,} allowed "
            "(the largest published classifiers are a few GB); not loaded"
        )
    return infos


def check_torch_file(fh, size: int) -> None:
    """Refuse (Refusal) a torch.save file, zip or legacy, whose loading would run code or allocate
    far more than the file holds; reads only the zip directory and the pickles' opcodes."""
    fh.seek(0)
    head = fh.read(4)
    fh.seek(0)
    if head == b"PK\x03\x04":
        _check_torch_zip(fh, size)
    elif head[:1] == b"\x80":
        _check_legacy_pickle(fh, size)


def _check_torch_zip(fh, size: int) -> None:
    infos = check_zip_directory(fh, size)
    entries = {info.filename: info for info in infos}
    storage_bytes = sum(info.file_size for info in infos if "/data/" in info.filename)
    with zipfile.ZipFile(fh) as zf:
        for info in infos:
            if not info.filename.endswith(".pkl"):
                continue
            if info.file_size > MAX_PICKLE_BYTES:
                raise Refusal(
                    f"its pickle {info.filename!r} has {info.file_size:,} bytes, far more than any checkpoint's"
                )
            try:
                data = zf.read(info)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise Refusal(f"cannot be read ({first_line(exc)}); the file is truncated or corrupt") from exc
            scan = _scan(io.BytesIO(data), allowance=2 * storage_bytes)
            folder = info.filename.rsplit("/", 1)[0] + "/" if "/" in info.filename else ""
            for key, nbytes in scan.storages.items():
                record = entries.get(f"{folder}data/{key}")
                if record is not None and nbytes > record.file_size:
                    raise Refusal(
                        f"storage {key!r} declares {nbytes:,} bytes but its record holds {record.file_size:,}; "
                        "the file is truncated or corrupt"
                    )


def _check_legacy_pickle(fh, size: int) -> None:
    """A pre-1.6 torch.save file: five pickles (magic number, protocol, system info, the objects, the
    storage keys), then each storage's bytes. torch.load allocates every storage at the size the
    object pickle declares before reading it, so the declared sizes must fit in what follows."""
    import tarfile

    if tarfile.is_tarfile(fh):  # the even older tar format: torch.load would extract it to a temporary folder
        raise Refusal("is a tar-format torch.save file (before PyTorch 0.4), which is not read; re-save it")
    fh.seek(0)
    declared: dict[object, int] = {}
    for i in range(5):
        scan = _scan(_BoundedReader(fh))
        if i == 0 and scan.result != TORCH_MAGIC:
            raise Refusal("is a pickle but not a torch.save file (no torch magic number); re-save it with torch.save")
        declared.update(scan.storages)
    need = sum(8 + nbytes for nbytes in declared.values())
    if need > size - fh.tell():
        raise Refusal(
            f"its pickle declares storages of {need:,} bytes but only {size - fh.tell():,} follow; the file is "
            "truncated or corrupt"
        )


def check_archive_sizes(path: str) -> None:
    """Refuse a TorchScript or torch.export archive whose declared sizes do not fit (check_zip_directory),
    or a .pt2 whose `.pt` entries would (check_torch_file); nothing is loaded."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        infos = check_zip_directory(fh, size)
        nested = [info for info in infos if info.filename.endswith(".pt")]
        if not nested:
            return
        with zipfile.ZipFile(fh) as zf:
            for info in nested:
                try:
                    data = zf.read(info)
                except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                    raise Refusal(f"cannot be read ({first_line(exc)}); the archive is truncated or corrupt") from exc
                try:
                    check_torch_file(io.BytesIO(data), len(data))
                except Refusal as exc:
                    raise Refusal(f"{info.filename.split('/', 1)[-1]} inside the archive: {exc}") from exc
