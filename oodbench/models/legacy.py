"""Read checkpoints of every format oodbench meets, without executing code from the file.

* PyTorch <= 1.5 "legacy" files (ODIN's 0.3-era whole-model pickles, Mahalanobis' ``OrderedDict``): five
  consecutive pickles -- magic number, protocol version, sys_info, the object (tensor storages appear as
  persistent ids), the list of storage keys -- then, per key, an int64 element count and the raw
  little-endian storage bytes. They are read by :class:`RestrictedUnpickler`, whose ``find_class`` maps
  every allowed global onto an inert stub (module classes, ``Parameter``, storage types) or a safe builtin
  and refuses everything else, so nothing in the file can run code.
* Modern zip files (DICE ``{'epoch', 'state_dict'}``, plain state dicts, oodbench's ``{'state_dict', 'meta'}``)
  go through ``torch.load(weights_only=True)``.

:func:`read_state_dict` returns a flat ``OrderedDict[str, Tensor]`` with the modern key names.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from ..errors import CheckpointError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
# Python modules whose classes a legacy whole-model pickle may name (the authors' ``densenet.py`` etc.).
_MODEL_MODULES = frozenset({"densenet", "models.densenet", "wrn", "models.wrn", "wideresnet",
                            "models.wideresnet", "resnet", "models.resnet"})


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` etc.: only carries the dtype (deliberately not callable)."""

    dtype: torch.dtype


@dataclass
class _Storage:
    """A storage whose bytes follow the pickle; filled in by :func:`_read_storages`."""

    key: str
    dtype: torch.dtype
    numel: int
    data: Tensor | None = None


@dataclass(frozen=True)
class _StorageRef:
    storage: _Storage
    offset: int = 0


@dataclass(frozen=True)
class _LazyTensor:
    ref: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _StubModule:
    """Inert stand-in for an ``nn.Module`` subclass: keeps the pickled ``__dict__`` and nothing else."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)


class _StubParameter:
    """Stand-in for ``torch.nn.Parameter``: holds the tensor, ignores the old Variable state."""

    def __init__(self, data: Any = None, *_ignored: Any) -> None:
        self.data = data

    def __setstate__(self, state: Any) -> None:
        pass


def _rebuild_tensor(ref: Any, offset: int, size: Any, stride: Any, *_ignored: Any) -> _LazyTensor:
    """``torch._utils._rebuild_tensor(_v2)``: remember where the tensor lives; storages are read later."""
    if not isinstance(ref, _StorageRef):
        raise CheckpointError("malformed legacy checkpoint: a tensor is not backed by a storage")
    return _LazyTensor(ref, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _no_backend(*_args: Any) -> None:
    """``torch.nn.backends.thnn._get_thnn_function_backend``: the 0.3 backend object is not needed."""
    return


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _StubParameter,
    ("torch.nn.parameter", "Parameter"): _StubParameter,
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _no_backend,
}


@cache
def _stub_class(module: str, name: str) -> type[_StubModule]:
    return type(name, (_StubModule,), {"__module__": __name__, "origin": f"{module}.{name}"})


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for legacy torch files that maps allowed globals onto stubs and refuses all others."""

    def __init__(self, file: BinaryIO, source: str, storages: dict[str, _Storage] | None = None) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        model_module = module.startswith("torch.nn.modules.") or module in _MODEL_MODULES
        if model_module and name.isidentifier() and name[:1].isupper():
            return _stub_class(module, name)
        raise CheckpointError(
            f"refusing to load {self.source}: its pickle references {module}.{name}, which no checkpoint "
            "needs (the file may be malicious or of an unsupported kind); use only trusted weights files"
        )

    def persistent_load(self, pid: Any) -> Any:
        if self.storages is None or not isinstance(pid, tuple) or not pid:
            raise CheckpointError(f"malformed legacy checkpoint {self.source}: unexpected persistent id")
        if pid[0] == "module" and isinstance(pid[1], type) and issubclass(pid[1], _StubModule):
            return pid[1]
        if pid[0] == "storage" and len(pid) >= 5 and isinstance(pid[1], _StorageType):
            _, stype, key, _location, numel = pid[:5]
            storage = self.storages.setdefault(str(key), _Storage(str(key), stype.dtype, int(numel)))
            view = pid[5] if len(pid) > 5 else None
            return _StorageRef(storage, int(view[1]) if view else 0)
        raise CheckpointError(f"malformed legacy checkpoint {self.source}: unknown persistent id {pid[0]!r}")


def _read_storages(f: BinaryIO, keys: list[Any], storages: dict[str, _Storage], source: str) -> None:
    """Fill in each storage: int64 element count, then the raw little-endian bytes."""
    for key in keys:
        storage = storages.get(str(key))
        header = f.read(8)
        if storage is None or len(header) != 8:
            raise CheckpointError(f"legacy checkpoint {source} is truncated or corrupt; re-download it")
        (numel,) = struct.unpack("<q", header)
        nbytes = numel * torch.empty((), dtype=storage.dtype).element_size()
        raw = f.read(nbytes)
        if numel != storage.numel or len(raw) != nbytes:
            raise CheckpointError(f"legacy checkpoint {source} is truncated or corrupt; re-download it")
        storage.data = torch.frombuffer(bytearray(raw), dtype=storage.dtype) if numel else \
            torch.empty(0, dtype=storage.dtype)


def _materialize(obj: Any) -> Any:
    """Replace lazy tensors by real ones and stub modules by their flat state dict."""
    if isinstance(obj, _LazyTensor):
        data = obj.ref.storage.data
        if data is None:
            raise CheckpointError(f"legacy checkpoint lacks the bytes of storage {obj.ref.storage.key}")
        if math.prod(obj.size) > data.numel():
            raise CheckpointError(f"legacy checkpoint: tensor of size {obj.size} exceeds its storage")
        return torch.as_strided(data, obj.size, obj.stride, obj.ref.offset + obj.offset).clone()
    if isinstance(obj, _StubParameter):
        return _materialize(obj.data)
    if isinstance(obj, _StubModule):
        return _module_state_dict(obj)
    if isinstance(obj, Mapping):
        return OrderedDict((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def _module_state_dict(module: _StubModule, prefix: str = "",
                       out: OrderedDict[str, Tensor] | None = None) -> OrderedDict[str, Tensor]:
    """Walk ``_parameters``, ``_buffers`` and ``_modules`` like ``nn.Module.state_dict`` does."""
    out = OrderedDict() if out is None else out
    attrs = module.__dict__
    for table in ("_parameters", "_buffers"):
        for name, value in (attrs.get(table) or {}).items():
            if value is not None:
                out[prefix + name] = _materialize(value)
    for name, child in (attrs.get("_modules") or {}).items():
        if isinstance(child, _StubModule):
            _module_state_dict(child, f"{prefix}{name}.", out)
    return out


def load_legacy(path: Path) -> tuple[Any, bool]:
    """Unpickle a legacy (non-zip) torch file safely; returns (object with real tensors, was_module)."""
    source = str(path)
    with open(path, "rb") as f:
        data = io.BytesIO(f.read())
    magic = RestrictedUnpickler(data, source).load()
    protocol = RestrictedUnpickler(data, source).load()
    sys_info = RestrictedUnpickler(data, source).load()
    if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL:
        raise CheckpointError(f"{source} is not a PyTorch checkpoint (bad magic number); re-download it")
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise CheckpointError(f"{source} was saved on a big-endian machine, which is not supported")
    storages: dict[str, _Storage] = {}
    obj = RestrictedUnpickler(data, source, storages).load()
    keys = RestrictedUnpickler(data, source).load()
    if not isinstance(keys, list):
        raise CheckpointError(f"legacy checkpoint {source} is corrupt (no storage list); re-download it")
    _read_storages(data, keys, storages, source)
    return _materialize(obj), isinstance(obj, _StubModule)


def _first_line(err: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _load_any(path: Path) -> tuple[Any, str]:
    """Load the raw object of any supported file and name its container format."""
    with open(path, "rb") as f:
        head = f.read(4)
    if zipfile.is_zipfile(path):
        return torch.load(path, map_location="cpu", weights_only=True), "zip"
    if head[:2] == b"\x80\x02":
        obj, was_module = load_legacy(path)
        return obj, "legacy_module" if was_module else "legacy"
    if head[:2] == b"\x1f\x8b":
        raise CheckpointError(f"{path} is a gzip/tar archive (as ODIN distributes its weights); "
                              "extract the .pth file inside it and point to that")
    raise CheckpointError(f"{path} is not a PyTorch checkpoint (unknown file header); re-download it")


def read_state_dict(path: Path) -> tuple[OrderedDict[str, Tensor], dict[str, Any], str]:
    """Read any supported checkpoint file into (state dict, meta, fmt).

    ``fmt`` is one of ``legacy_module`` (ODIN), ``legacy_state_dict`` (Mahalanobis),
    ``checkpoint_dict`` (``{'epoch', 'state_dict'}``, DICE), ``oodbench`` (``{'state_dict', 'meta'}``)
    or ``state_dict`` (a plain modern state dict); a ``legacy_`` prefix marks pre-1.6 files.
    A ``module.`` prefix (from ``nn.DataParallel``) is stripped. Raises :class:`CheckpointError`.
    """
    path = Path(path)
    try:
        obj, container = _load_any(path)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise CheckpointError(f"cannot read checkpoint {path} ({_first_line(err)}); re-download it") from err
        raise CheckpointError(f"checkpoint {path} pickles Python objects besides tensors (e.g. a whole model "
                              "saved with torch.save(model)), which oodbench does not unpickle; save "
                              "model.state_dict() instead") from err
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint {path} ({_first_line(err)}); the file is corrupt or "
                              "not a weights file: re-download it, or save model.state_dict()") from err
    meta: dict[str, Any] = {}
    if container == "legacy_module":
        return obj, meta, "legacy_module"
    prefix = "legacy_" if container == "legacy" else ""
    fmt = "state_dict"
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        meta = dict(obj.get("meta") or {})
        fmt = "oodbench" if "meta" in obj else "checkpoint_dict"
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        found = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"checkpoint {path} holds no state dict of tensors (found {found}); "
                              "save {'state_dict': model.state_dict(), 'meta': {...}}")
    state = OrderedDict((str(k), v) for k, v in obj.items())
    if all(k.startswith("module.") for k in state):
        state = OrderedDict((k[len("module."):], v) for k, v in state.items())
    return state, meta, prefix + fmt
