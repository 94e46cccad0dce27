"""Reading NVlabs network pickles (stylegan2-ada-pytorch, stylegan3) without running anything in them.

NVlabs' own loader executes the Python source each network record carries (``module_src``) and
rebuilds storages with an unrestricted ``torch.load``. Here the pickle is read by an unpickler that
resolves only an allow-list of names, each mapped to a function of ours:

- ``torch_utils.persistence._reconstruct_persistent_obj`` -> a :class:`Record` (class name, state and
  the source as inert text, never compiled);
- torch's tensor, parameter and storage rebuilders -> checked rebuilds; storages are read by
  ``torch.load(weights_only=True)``;
- ``collections.OrderedDict``, ``builtins.set``, ``dnnlib.util.EasyDict`` -> plain containers;
- numpy's scalar, dtype and array -> a Python number or a numpy array decoded from its bytes
  (numeric dtypes only).

Anything else the file asks for is a :class:`ForeignPickleError` naming it, raised before it could
be called. What the records mean (which network, which settings) is the model family's business
(bigtrain/models/stylegan2/nvlabs.py).
"""
from __future__ import annotations

import collections
import io
import pickle
import warnings
from typing import Any

import numpy as np
import torch


class ForeignPickleError(ValueError):
    """A pickle that is not one bigtrain reads; the message names the file and what it asked for."""


class Record:
    """One NVlabs persistent object (a network or a layer), as data: ``class_name``, ``state`` (the
    object's attribute dict: nn.Module's _parameters/_buffers/_modules, the init arguments, plain
    attributes) and ``module_src``, the source text NVlabs would execute, kept only to tell which
    code wrote the record."""

    def __init__(self, meta: Any):
        if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
            raise ForeignPickleError("a torch_utils.persistence record without type 'class' and a class name")
        if not isinstance(meta.get("state"), dict):
            raise ForeignPickleError(f"the persistence record of {meta['class_name']} has no attribute dict")
        self.class_name: str = meta["class_name"]
        self.version = meta.get("version")
        self.module_src: str = meta.get("module_src") if isinstance(meta.get("module_src"), str) else ""
        self.state: dict = meta["state"]

    @property
    def init_kwargs(self) -> dict:
        kw = self.state.get("_init_kwargs") or {}
        return dict(kw) if isinstance(kw, dict) else {}

    @property
    def init_args(self) -> tuple:
        args = self.state.get("_init_args") or ()
        return tuple(args) if isinstance(args, (tuple, list)) else ()

    def child(self, name: str) -> "Record | None":
        mods = self.state.get("_modules") or {}
        m = mods.get(name)
        return m if isinstance(m, Record) else None

    def tensors(self, prefix: str = "", _path: tuple = ()) -> dict[str, torch.Tensor]:
        """Parameters and persistent buffers of this record and its children, by dotted name (as
        nn.Module.state_dict names them)."""
        if any(r is self for r in _path):  # a pickle can make a record its own descendant
            raise ForeignPickleError(f"{self.class_name}: submodule '{prefix[:-1]}' contains itself")
        out: dict[str, torch.Tensor] = {}
        skip = self.state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            for name, t in (self.state.get(group) or {}).items():
                if t is None or (group == "_buffers" and name in skip):
                    continue
                if not isinstance(t, torch.Tensor):
                    raise ForeignPickleError(f"{self.class_name}: {group[1:-1]} '{prefix}{name}' is a "
                                             f"{type(t).__name__}, not a tensor")
                out[prefix + name] = t
        for name, m in (self.state.get("_modules") or {}).items():
            if isinstance(m, Record):
                out.update(m.tensors(f"{prefix}{name}.", (*_path, self)))
            elif m is not None:
                raise ForeignPickleError(f"{self.class_name}: submodule '{prefix}{name}' is a "
                                         f"{type(m).__name__}, not a persistence record")
        return out

    def __repr__(self) -> str:
        return f"Record({self.class_name})"


class _EasyDict(dict):
    """dnnlib.util.EasyDict as a plain dict (attribute access is not needed here)."""


_NUMERIC_DTYPES = {"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"}


class _DType:
    """numpy.dtype(name, align, copy) of a numeric scalar; its pickled state gives the byte order."""

    def __init__(self, name: Any, *_):
        if not isinstance(name, str) or name not in _NUMERIC_DTYPES:
            raise ForeignPickleError(f"numpy dtype {name!r} (only numeric scalars are read)")
        self.name, self.order = name, "<"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.order = state[1] if state[1] in "<>" else "<"


def _np_scalar(dtype: Any, data: Any = None) -> int | float | bool:
    if not isinstance(dtype, _DType) or not isinstance(data, bytes):
        raise ForeignPickleError("a numpy scalar without a numeric dtype and its bytes")
    dt = np.dtype(dtype.name).newbyteorder(dtype.order)
    if len(data) != dt.itemsize:
        raise ForeignPickleError(f"a numpy {dtype.name} scalar of {len(data)} bytes")
    return np.frombuffer(data, dtype=dt)[0].item()


class _NdArray:
    """numpy.core.multiarray._reconstruct(ndarray, ...) + its state: a numeric array decoded from its
    bytes (StyleGAN3's records keep filter parameters as arrays)."""

    def __init__(self, cls: Any = None, shape: Any = None, typecode: Any = None):
        if cls is not _NDARRAY:
            raise ForeignPickleError("a numpy array of a class other than numpy.ndarray")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], _DType)
                and isinstance(state[4], bytes) and isinstance(state[1], tuple)
                and all(isinstance(n, int) and n >= 0 for n in state[1])):
            raise ForeignPickleError("a numpy array that is not a numeric array with its bytes")
        _, shape, dtype, fortran, raw = state
        dt = np.dtype(dtype.name).newbyteorder(dtype.order)
        if int(np.prod(shape, dtype=np.int64)) * dt.itemsize != len(raw):
            raise ForeignPickleError(f"a numpy array of shape {shape} with {len(raw)} bytes")
        self.array = np.frombuffer(raw, dtype=dt).reshape(shape, order="F" if fortran else "C").copy()


_NDARRAY = object()  # what numpy.ndarray resolves to: only a marker for _NdArray


def _storage_from_bytes(data: Any):
    """torch.storage._load_from_bytes, but the bytes are read as weights only."""
    if not isinstance(data, (bytes, bytearray)):
        raise ForeignPickleError("a tensor storage that is not bytes")
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as e:  # torch names the global it refused
        raise ForeignPickleError(f"a tensor storage that is not plain data ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(storage, (torch.UntypedStorage, torch.TypedStorage)):
        raise ForeignPickleError(f"a tensor storage that holds a {type(storage).__name__}")
    return storage


def _tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, (torch.UntypedStorage, torch.TypedStorage)):
        raise ForeignPickleError(f"a tensor whose storage is a {type(storage).__name__}")
    if not (isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list)) and len(size) == len(stride)
            and all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride))):
        raise ForeignPickleError("a tensor whose size, stride or offset is not non-negative integers of "
                                 "matching lengths")
    if backward_hooks:
        raise ForeignPickleError("a tensor with backward hooks")
    need = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0
    with warnings.catch_warnings():  # TypedStorage.size() warns that TypedStorage is deprecated
        warnings.simplefilter("ignore")
        have = storage.size() if isinstance(storage, torch.TypedStorage) else storage.nbytes()
    if need > have:
        raise ForeignPickleError(f"a tensor of size {tuple(size)} that reaches past its storage")
    return torch._utils._rebuild_tensor_v2(storage, offset, tuple(size), tuple(stride), False,
                                           collections.OrderedDict())


def _parameter(data, requires_grad=False, backward_hooks=None, *state):
    if not isinstance(data, torch.Tensor):
        raise ForeignPickleError("a parameter that is not a tensor")
    return data  # the weights, not a Parameter: nothing here trains the record


def _set(items=()):
    return set(items)


def _record(meta: Any) -> Record:
    return Record(meta)


def _dtype(*args: Any) -> _DType:
    return _DType(*args)


def _ndarray(*args: Any) -> _NdArray:
    return _NdArray(*args)


# Functions, not classes: NEWOBJ could otherwise make a Record without its checks.
_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _record,
    ("torch._utils", "_rebuild_tensor_v2"): _tensor,
    ("torch._utils", "_rebuild_parameter"): _parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): _set,
    ("__builtin__", "set"): _set,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): _dtype,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy.core.multiarray", "_reconstruct"): _ndarray,
    ("numpy._core.multiarray", "_reconstruct"): _ndarray,
}


def _refuse(op: str):
    def refuse(self):
        raise ForeignPickleError(f"it uses the {op} opcode, which an NVlabs network pickle does not")
    return refuse


class _Unpickler(pickle._Unpickler):
    """pickle's Python unpickler with BUILD confined to numpy's dtype and array state (a BUILD on a
    tensor would resize it past the checks, one on our functions would change them) and INST, OBJ
    and the extension registry refused."""
    dispatch = dict(pickle._Unpickler.dispatch)

    def _build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, (_DType, _NdArray)):
            raise ForeignPickleError(f"it sets the state of a {type(inst).__name__} (BUILD), which an NVlabs "
                                     f"network pickle does only for numpy values")
        inst.__setstate__(state)

    dispatch[pickle.BUILD[0]] = _build
    for _op in ("INST", "OBJ", "EXT1", "EXT2", "EXT4"):
        dispatch[getattr(pickle, _op)[0]] = _refuse(_op)

    def find_class(self, module: str, name: str):
        fn = _ALLOWED.get((module, name))
        if fn is None:
            raise ForeignPickleError(f"it asks for {module}.{name}, which bigtrain does not load (an NVlabs "
                                     f"network pickle holds only persistence records, tensors and plain values)")
        return fn

    def persistent_load(self, pid):
        raise ForeignPickleError(f"it has a persistent id ({str(pid)[:60]}): a torch.save file, not an NVlabs pickle")


def read_pickle(path: str) -> dict:
    """The top-level dict of an NVlabs network pickle (G, D, G_ema as :class:`Record`, other values as
    plain data); nothing in the file is executed. Raises ForeignPickleError naming the file."""
    try:
        with open(path, "rb") as f:
            obj = _Unpickler(f).load()
    except ForeignPickleError as e:
        raise ForeignPickleError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, RecursionError, UnicodeDecodeError, RuntimeError, OverflowError) as e:
        raise ForeignPickleError(f"{path}: not a readable NVlabs pickle ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(obj, dict):
        raise ForeignPickleError(f"{path}: holds a {type(obj).__name__}, not the dict of networks NVlabs writes "
                                 f"(G, D, G_ema)")
    return obj
