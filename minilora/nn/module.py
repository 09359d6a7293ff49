"""``Module`` and ``Parameter``: how layers own their weights, PyTorch-style.

Assigning a ``Parameter`` or a ``Module`` to an attribute registers it; the dotted names that
``named_parameters()`` yields (``model.layers.0.self_attn.q_proj.weight``) are the checkpoint keys,
so they match Hugging Face's exactly when the attribute names do.
"""
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from .. import parallel
from ..device import Device
from ..device import device as _get_device
from ..tensor import Tensor, _to_dtype, no_grad

__all__ = ["Parameter", "Module", "ModuleList", "ModuleDict", "Sequential", "StateDictError",
           "IncompatibleKeys", "RemovableHandle"]


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates (``requires_grad=True`` by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True, device=None, dtype=None):
        if isinstance(data, Tensor):
            device = data.device if device is None else device
        elif dtype is None and hasattr(data, "dtype"):
            dtype = data.dtype  # an array keeps its dtype (Tensor(array) alone would make it float32)
        super().__init__(data, dtype=dtype, device=device, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class StateDictError(RuntimeError):
    """``load_state_dict`` found missing keys, unexpected keys or shape mismatches.

    ``missing``, ``unexpected``: key lists; ``mismatched``: ``(key, checkpoint shape, model shape)``.
    """

    def __init__(self, missing=(), unexpected=(), mismatched=(), module=None):
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)
        parts = []
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {_show(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys ({len(self.unexpected)}): {_show(self.unexpected)}")
        if self.mismatched:
            shown = [f"{k}: checkpoint {a} vs model {b}" for k, a, b in self.mismatched]
            parts.append(f"shape mismatches ({len(shown)}): {_show(shown)}")
        where = f" for {module}" if module else ""
        super().__init__(f"error loading state_dict{where}: " + "; ".join(parts))


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns: keys the model has and the dict lacks, and the reverse."""

    missing_keys: list
    unexpected_keys: list


def _show(items, limit=8):
    text = ", ".join(str(i) for i in items[:limit])
    return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


class RemovableHandle:
    """What ``register_forward_hook`` returns: ``handle.remove()`` takes the hook out again (also as
    ``with module.register_forward_hook(fn):``), as ``torch.utils.hooks.RemovableHandle``."""

    _ids = iter(range(1, 1 << 62))

    def __init__(self, hooks):
        self.hooks_dict_ref, self.id = hooks, next(RemovableHandle._ids)

    def remove(self):
        self.hooks_dict_ref.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class Module:
    """Base class of every layer. Subclasses set attributes in ``__init__`` and define ``forward``."""

    # No hooks until one is registered (then the instance gets its own dicts): calling a module
    # costs one truth test per kind of hook.
    _forward_pre_hooks = {}
    _forward_hooks = {}

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "training", True)

    # --- registration ---------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning '{name}'")
        if isinstance(value, Parameter):
            self._forget(name, keep=self._parameters)  # re-assigning keeps the place in the order
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._forget(name, keep=self._modules)
            self._modules[name] = value
        elif name in self._buffers and (value is None or isinstance(value, Tensor)):
            self._buffers[name] = value  # a new value for a registered buffer
        else:
            # A plain Tensor or a number where a Parameter or Module sat is almost always a bug
            # (the weight would silently vanish from parameters() and state_dict()).
            for table, kind in ((self._parameters, "parameter"), (self._modules, "child module")):
                if name in table and value is not None:
                    expected = "nn.Parameter" if kind == "parameter" else "nn.Module"
                    raise TypeError(f"cannot assign a {type(value).__name__} as {kind} '{name}' "
                                    f"of {type(self).__name__} ({expected} or None expected)")
            self._forget(name)
            object.__setattr__(self, name, value)

    def _forget(self, name, keep=None):
        """Drop ``name`` from the tables (but ``keep``) and the plain attributes: it is being re-set."""
        for table in (self._parameters, self._modules, self._buffers):
            if table is not keep:
                table.pop(name, None)
        self._non_persistent.discard(name)
        self.__dict__.pop(name, None)

    def __getattr__(self, name):  # only called when normal lookup fails
        for table in ("_parameters", "_modules", "_buffers"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for table in (self._parameters, self._modules, self._buffers):
            if name in table:
                del table[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def register_buffer(self, name, tensor, persistent=True):
        """A tensor that belongs to the module but is not trained (e.g. RoPE tables). It moves
        with ``to()``; ``persistent=False`` keeps it out of ``state_dict()``."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"buffer '{name}' must be a Tensor or None, got {type(tensor).__name__}")
        if "." in name or not name:
            raise KeyError(f"buffer name must be non-empty and contain no '.', got {name!r}")
        self._forget(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)

    def register_parameter(self, name, param):
        if param is None:
            self._parameters.pop(name, None)
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, param)

    def add_module(self, name, module):
        setattr(self, name, module)

    # --- traversal ------------------------------------------------------------------------------
    def named_modules(self, prefix="", memo=None):
        """``(dotted_name, module)`` for this module and every descendant, each module once."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self):
        return (m for _, m in self.named_children())

    def named_parameters(self, prefix="", recurse=True):
        """``(dotted_name, Parameter)`` pairs; a parameter shared by two modules comes once."""
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_prefix, module in modules:
            for name, p in module._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), p

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix=""):
        for mod_prefix, module in self.named_modules(prefix):
            for name, buf in module._buffers.items():
                if buf is not None:
                    yield (f"{mod_prefix}.{name}" if mod_prefix else name), buf

    def buffers(self):
        return (b for _, b in self.named_buffers())

    def get_submodule(self, target):
        module = self
        for part in target.split(".") if target else []:
            if part not in module._modules:
                raise AttributeError(f"{type(module).__name__} has no submodule '{part}' "
                                     f"(looking for '{target}')")
            module = module._modules[part]
        return module

    def apply(self, fn):
        """``fn(module)`` for every descendant, children before parents (as PyTorch)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # --- modes and movement ---------------------------------------------------------------------
    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise ValueError(f"train(mode) expects a bool, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = Tensor._make(p.grad._array * 0, p.device, False, None)

    def to(self, device=None, dtype=None):
        """Move/cast every parameter and buffer in place (the Parameter objects stay the same,
        so an optimizer built before ``.to`` still holds them). Only floating-point tensors are
        cast. ``model.to("float64")`` works too, as ``model.to(torch.float64)`` does."""
        if dtype is None and device is not None and _is_dtype(device):
            device, dtype = None, device
        dev = _get_device(device) if device is not None else None
        dtype = _to_dtype(dtype)
        if dtype is not None and dtype.kind != "f":
            raise TypeError(f"Module.to() only casts to floating-point dtypes, got {dtype}")
        for module in self.modules():
            for p in module._parameters.values():
                if p is not None:
                    _move_in_place(p, dev, dtype)
            for buf in module._buffers.values():
                if buf is not None:
                    _move_in_place(buf, dev, dtype if buf.dtype.kind == "f" else None)
        return self

    def float(self):
        return self.to(dtype="float32")

    def double(self):
        return self.to(dtype="float64")

    def half(self):
        return self.to(dtype="float16")

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    # --- state dict -----------------------------------------------------------------------------
    def state_dict(self, keep_vars=False):
        """Name -> Tensor for every parameter and persistent buffer (shared ones under each name).

        The tensors share memory with the model (``.detach()``ed unless ``keep_vars``), as in
        PyTorch: copy them if the model will keep training and you need a snapshot.
        """
        out = OrderedDict()
        for mod_prefix, module in self.named_modules():
            entries = list(module._parameters.items()) + [
                (n, b) for n, b in module._buffers.items() if n not in module._non_persistent]
            for name, t in entries:
                if t is not None:
                    out[f"{mod_prefix}.{name}" if mod_prefix else name] = t if keep_vars else t.detach()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy values in (minilora or torch tensors, NumPy arrays), cast to each target's dtype.

        ``strict``: the keys must match exactly. Shapes must always match. On failure the error
        (``StateDictError``) lists every missing key, unexpected key and shape mismatch, and the
        model is left unchanged. Returns ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        """
        own = self.state_dict(keep_vars=True)
        given = {key: _array(state_dict[key]) for key in own if key in state_dict}
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched = [(k, tuple(np.shape(a)), own[k].shape) for k, a in given.items()
                      if tuple(np.shape(a)) != own[k].shape]
        if mismatched or (strict and (missing or unexpected)):
            raise StateDictError(missing if strict else (), unexpected if strict else (), mismatched,
                                 module=type(self).__name__)
        # Convert everything first, then write: a value that fails to convert changes nothing.
        values = {k: own[k].device.xp.asarray(a, dtype=own[k].dtype) for k, a in given.items()}
        with no_grad():
            for key, value in values.items():
                own[key]._array[...] = value
                own[key]._bump_version()  # an in-place change, as torch's param.copy_(value)
        return IncompatibleKeys(missing, unexpected)

    # --- calling --------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        if self._forward_pre_hooks or self._forward_hooks:
            return self._call_with_hooks(args, kwargs)
        with parallel.computing():  # BLAS on one thread while minilora computes (minilora/parallel.py)
            return self.forward(*args, **kwargs)

    def _call_with_hooks(self, args, kwargs):
        """``forward`` between the hooks, with torch's rules: a pre-hook that returns something
        replaces the positional inputs (a non-tuple becomes a 1-tuple); a forward hook that returns
        something replaces the output."""
        for hook, with_kwargs in list(self._forward_pre_hooks.values()):
            if with_kwargs:
                result = hook(self, args, kwargs)
                if result is not None:
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise RuntimeError("forward pre-hook with with_kwargs=True must return None or "
                                           f"a tuple of (new_args, new_kwargs), got {result!r}")
                    args, kwargs = result
            else:
                result = hook(self, args)
                if result is not None:
                    args = result if isinstance(result, tuple) else (result,)
        with parallel.computing():
            output = self.forward(*args, **kwargs)
        for hook, with_kwargs in list(self._forward_hooks.values()):
            result = hook(self, args, kwargs, output) if with_kwargs else hook(self, args, output)
            if result is not None:
                output = result
        return output

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """``hook(module, args)`` runs before ``forward`` (``with_kwargs``: ``hook(module, args,
        kwargs)``); returns a handle whose ``remove()`` unregisters it."""
        return self._add_hook("_forward_pre_hooks", hook, prepend, with_kwargs)

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False, always_call=False):
        """``hook(module, args, output)`` runs after ``forward`` (``with_kwargs``: ``hook(module,
        args, kwargs, output)``); returns a handle whose ``remove()`` unregisters it."""
        if always_call:
            raise NotImplementedError("register_forward_hook: always_call=True (run the hook when "
                                      "forward raises) is not supported by minilora")
        return self._add_hook("_forward_hooks", hook, prepend, with_kwargs)

    def _add_hook(self, kind, hook, prepend, with_kwargs):
        if kind not in self.__dict__:  # this module's first hook of this kind
            object.__setattr__(self, kind, OrderedDict())
        hooks = self.__dict__[kind]
        handle = RemovableHandle(hooks)
        hooks[handle.id] = (hook, with_kwargs)
        if prepend:
            hooks.move_to_end(handle.id, last=False)
        return handle

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")  # abstract

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self.named_children():
            child_text = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_text}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


def _is_dtype(value):
    """Is ``value`` a dtype (``"float64"``, ``np.float32``) rather than a device name?"""
    if isinstance(value, Device):
        return False
    try:
        _to_dtype(value)
    except TypeError:
        return False
    return True


def _array(value):
    if isinstance(value, Tensor):
        return value.numpy()
    if hasattr(value, "detach"):  # a torch tensor (NumPy has no bfloat16: widen it first)
        value = value.detach().cpu()
        return (value.float() if str(value.dtype) == "torch.bfloat16" else value).numpy()
    return value


def _convert(array, dev, dtype):
    if dtype is not None and array.dtype != dtype:
        array = array.astype(dtype)
    if dev is not None:
        if dev.xp is np:
            array = array if isinstance(array, np.ndarray) else array.get()
        else:
            array = dev.xp.asarray(array)
    return array


def _move_in_place(t, dev, dtype):
    """Change a tensor's device/dtype keeping the object (optimizers and modules hold it)."""
    dev = dev if dev is not t.device else None
    t._array = _convert(t._array, dev, dtype)
    if t.grad is not None:
        t.grad._array = _convert(t.grad._array, dev, dtype)
        if dev is not None:
            t.grad._device = dev
    if dev is not None:
        t._device = dev


def _check_module(value, where):
    if not isinstance(value, Module):
        raise TypeError(f"{where}: expected an nn.Module, got {type(value).__name__}")
    return value


def _renumber(container, modules):
    """Register ``modules`` under 0, 1, ... (a ModuleList or a Sequential after an insert or delete)."""
    object.__setattr__(container, "_modules", OrderedDict((str(i), m) for i, m in enumerate(modules)))


class ModuleList(Module):
    """A list of modules registered as ``0``, ``1``, ... (``model.layers.3.mlp``)."""

    def __init__(self, modules=None):
        super().__init__()
        self.extend(modules or ())

    def append(self, module):
        self._modules[str(len(self._modules))] = _check_module(module, "ModuleList.append")
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def _index(self, index):
        n = len(self._modules)
        if not -n <= index < n:
            raise IndexError(f"ModuleList index {index} out of range for {n} modules")
        return str(index % n)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return self._modules[self._index(index)]

    def __setitem__(self, index, module):
        self._modules[self._index(index)] = _check_module(module, "ModuleList[...] =")

    def __delitem__(self, index):
        modules = list(self._modules.values())
        del modules[index if isinstance(index, slice) else int(self._index(index))]
        _renumber(self, modules)

    def insert(self, index, module):
        """Insert ``module`` before ``index`` (names stay 0, 1, ..., as torch)."""
        modules = list(self._modules.values())
        modules.insert(index, _check_module(module, "ModuleList.insert"))
        _renumber(self, modules)

    def pop(self, index=-1):
        module = self[index]
        del self[index]
        return module

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleDict(Module):
    """A dict of modules registered under their keys (``lora_A.default``)."""

    def __init__(self, modules=None):
        super().__init__()
        self.update(modules or {})

    def __getitem__(self, key):
        if key not in self._modules:
            raise KeyError(f"ModuleDict has no key {key!r} (keys: {list(self._modules)})")
        return self._modules[key]

    def __setitem__(self, key, module):
        if not isinstance(key, str) or "." in key or not key:
            raise KeyError(f"ModuleDict keys must be non-empty strings without '.', got {key!r}")
        self._modules[key] = _check_module(module, f"ModuleDict[{key!r}] =")

    def __delitem__(self, key):
        del self._modules[key]

    def __contains__(self, key):
        return key in self._modules

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def update(self, modules):
        for key, module in dict(modules).items():
            self[key] = module

    def pop(self, key):
        module = self[key]
        del self[key]
        return module


class Sequential(Module):
    """Modules called one after another: ``Sequential(a, b, c)(x) == c(b(a(x)))``.

    Registered as ``0``, ``1``, ... or, from one ``OrderedDict``, under its keys (as torch).
    Indexing gives a module (a slice: a new Sequential of the same modules).
    """

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for key, module in args[0].items():
                self.add_module(key, _check_module(module, f"Sequential[{key!r}]"))
        else:
            for i, module in enumerate(args):
                self.add_module(str(i), _check_module(module, f"Sequential argument {i}"))

    def _key(self, index):
        n = len(self._modules)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for a Sequential of {n} modules")
        return list(self._modules)[index % n]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return self._modules[self._key(index)]

    def __setitem__(self, index, module):
        self._modules[self._key(index)] = _check_module(module, "Sequential[...] =")

    def __delitem__(self, index):
        keys = list(self._modules)[index] if isinstance(index, slice) else [self._key(index)]
        for key in keys:
            del self._modules[key]
        _renumber(self, list(self._modules.values()))  # as torch: indices and names stay 0, 1, ...

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self._modules)), _check_module(module, "Sequential.append"))
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def insert(self, index, module):
        modules = list(self._modules.values())
        modules.insert(index, _check_module(module, "Sequential.insert"))
        _renumber(self, modules)
        return self

    def pop(self, index):
        module = self[index]
        del self[index]
        return module

    def forward(self, input):
        for module in self._modules.values():
            input = module(input)
        return input
