"""``Module`` and ``Parameter``: how layers own their weights, PyTorch-style.

Assigning a ``Parameter`` or a ``Module`` to an attribute registers it; the dotted names that
``named_parameters()`` yields (``model.layers.0.self_attn.q_proj.weight``) are the checkpoint keys,
so they match Hugging Face's exactly when the attribute names do.

Every public method of ``torch.nn.Module`` that minilora has takes torch's arguments, in torch's order,
with torch's defaults (``tests/test_torch_conformance_module.py`` compares them), and behaves as
torch's: ``named_modules(memo, prefix, remove_duplicate)``, ``state_dict(destination=, prefix=,
keep_vars=)``, ``load_state_dict(state_dict, strict, assign)`` returning ``IncompatibleKeys``, the
hooks (the full backward hooks too). What minilora cannot do (the deprecated ``register_backward_hook``,
``compile``) raises ``NotImplementedError`` saying so.
"""
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from itertools import chain
from typing import NamedTuple

import numpy as np

from .. import dtypes, parallel
from ..device import NO_DATA, Device, unwritten_zeros
from ..size import Size
from ..device import device as _get_device, device_errors_as_torch
from ..tensor import Function as _Node
from ..tensor import RemovableHandle, Tensor, _to_dtype, hook_result, is_grad_enabled, no_grad

__all__ = ["Parameter", "Module", "ModuleList", "ModuleDict", "Sequential", "ParameterList", "ParameterDict",
           "StateDictError", "IncompatibleKeys", "RemovableHandle", "Buffer"]

_EXTRA_STATE_KEY_SUFFIX = "_extra_state"  # torch's key for get_extra_state()'s value


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates (``requires_grad=True`` by default).

    ``Parameter(data=None, requires_grad=True)`` as torch (no data: an empty float32 tensor);
    minilora adds keyword-only ``device`` and ``dtype``."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True, *, device=None, dtype=None):
        if data is None:
            data = np.empty(0, dtype=np.float32)
        if isinstance(data, Tensor):
            device = data.device if device is None else device
        elif dtype is None and hasattr(data, "dtype"):
            dtype = data.dtype  # an array keeps its dtype (Tensor(array) alone would make it float32)
        super().__init__(data, dtype=dtype, device=device, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        """As torch: a new Parameter holding a copy of the values, with the same ``requires_grad``; the
        gradient stays behind (``copy.deepcopy(model)`` snapshots weights, not a step in progress)."""
        if id(self) not in memo:
            memo[id(self)] = type(self)(self.detach().clone(), self.requires_grad)
        return memo[id(self)]


class Buffer(Tensor):
    """torch's ``nn.Buffer``: a tensor that becomes a buffer of the module it is assigned to
    (``self.cache = nn.Buffer(t, persistent=False)`` is ``register_buffer('cache', t, persistent=False)``).
    It shares ``data``'s values (as torch's detach()) and keeps its ``requires_grad``."""

    __slots__ = ("persistent",)

    def __init__(self, data=None, *, persistent=True):
        if data is None:
            data = np.empty(0, dtype=np.float32)
        elif not isinstance(data, Tensor):  # (torch's calls data.detach())
            raise TypeError(f"nn.Buffer expects a Tensor, got {type(data).__name__}")
        if isinstance(data, Tensor):
            super().__init__(data._array, dtype=data.dtype, device=data.device, requires_grad=data.requires_grad)
        else:
            super().__init__(data, dtype=data.dtype)
        self.persistent = persistent


class StateDictError(RuntimeError):
    """``load_state_dict`` found missing keys, unexpected keys or shape mismatches (a RuntimeError, as
    torch raises).

    ``missing``, ``unexpected``: key lists; ``mismatched``: ``(key, checkpoint shape, model shape)``;
    ``messages``: what load-state-dict pre-hooks added to ``error_msgs``.
    """

    def __init__(self, missing=(), unexpected=(), mismatched=(), module=None, messages=()):
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)
        self.messages = list(messages)
        lines = []  # torch's message, line for line (what a learner compares, and searches the web for)
        if self.missing:
            lines.append(f"Missing key(s) in state_dict: {_quoted(self.missing)}. ")
        if self.unexpected:
            lines.append(f"Unexpected key(s) in state_dict: {_quoted(self.unexpected)}. ")
        lines += [f"size mismatch for {k}: copying a param with shape {Size(a)} from checkpoint, the shape in current "
                  f"model is {Size(b)}." for k, a, b in self.mismatched]
        lines += self.messages
        where = f" for {module}" if module else ""
        super().__init__(f"Error(s) in loading state_dict{where}:\n\t" + "\n\t".join(lines))


class _IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns: keys the model has and the dict lacks, and the reverse
    (torch's ``_IncompatibleKeys``: its class name, its ``<All keys matched successfully>`` repr)."""

    missing_keys: list
    unexpected_keys: list

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return f"_IncompatibleKeys(missing_keys={self.missing_keys!r}, unexpected_keys={self.unexpected_keys!r})"

    __str__ = __repr__


IncompatibleKeys = _IncompatibleKeys  # minilora's public name for it


def _quoted(keys):
    return ", ".join(f'"{k}"' for k in keys)


def _addindent(text, spaces):
    """Indent every line but the first (torch's helper for nested reprs); blank lines stay empty."""
    first, *rest = text.split("\n")
    return "\n".join([first] + [" " * spaces + line if line.strip() else "" for line in rest])


class Module:
    """Base class of every layer. Subclasses set attributes in ``__init__`` and define ``forward``."""

    # No hooks until one is registered (then the instance gets its own dict): calling a module costs
    # one truth test per kind of hook, and state_dict() one per module.
    # torch's layout: {id: hook}, the with_kwargs / always_call flags in their own {id: True} dicts (code
    # such as torch's pruning tutorial reads module._forward_pre_hooks.values() as the hooks themselves)
    _forward_pre_hooks = OrderedDict()
    _forward_pre_hooks_with_kwargs = OrderedDict()
    _forward_hooks = OrderedDict()
    _forward_hooks_with_kwargs = OrderedDict()
    _forward_hooks_always_called = OrderedDict()
    _backward_hooks = OrderedDict()
    _backward_pre_hooks = OrderedDict()
    _state_dict_pre_hooks = OrderedDict()
    _state_dict_hooks = OrderedDict()
    _load_state_dict_pre_hooks = OrderedDict()
    _load_state_dict_post_hooks = OrderedDict()
    call_super_init = False  # torch's switch: pass __init__'s arguments on to the next class (mixins)

    def __init__(self, *args, **kwargs):
        if not self.call_super_init and kwargs:
            raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument "
                            f"'{next(iter(kwargs))}'")
        if not self.call_super_init and args:
            raise TypeError(f"{type(self).__name__}.__init__() takes 1 positional argument but "
                            f"{len(args) + 1} were given")
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "_modules", OrderedDict())
        if self.call_super_init:
            super().__init__(*args, **kwargs)

    def _get_name(self):
        return type(self).__name__

    # --- registration ---------------------------------------------------------------------------
    # torch's rules: a Parameter or a Module assigned to an attribute is registered (and leaves any
    # other table it was in); a name registered as a parameter / module / buffer takes only its own
    # kind or None afterwards (None stays registered: `self.bias = None` keeps "bias" a parameter
    # slot); anything else is a plain attribute.
    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call "
                                     f"({type(self).__name__}.__init__ must call super().__init__() first)")
            self._forget(name, keep=params)
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{_typename(value)}' as parameter '{name}' "
                                "(torch.nn.Parameter or None expected)")
            self.register_parameter(name, value)
        elif isinstance(value, Module):
            modules = self.__dict__.get("_modules")
            if modules is None:
                raise AttributeError("cannot assign module before Module.__init__() call "
                                     f"({type(self).__name__}.__init__ must call super().__init__() first)")
            self._forget(name, keep=modules)
            modules[name] = value
        elif name in self.__dict__.get("_modules", ()):
            if value is not None:
                raise TypeError(f"cannot assign '{_typename(value)}' as child module '{name}' "
                                "(torch.nn.Module or None expected)")
            self._modules[name] = value
        elif isinstance(value, Buffer):
            buffers = self.__dict__.get("_buffers")
            if buffers is None:
                raise AttributeError("cannot assign buffer before Module.__init__() call")
            self._forget(name, keep=buffers)
            self.register_buffer(name, value, persistent=value.persistent)
        elif name in self.__dict__.get("_buffers", ()):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{_typename(value)}' as buffer '{name}' "
                                "(torch.nn.Buffer, torch.Tensor or None expected)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name, keep):
        """Take ``name`` out of the plain attributes and every table but ``keep``: something else takes
        its place (a re-assigned parameter or module keeps its place in the order, as in torch)."""
        self.__dict__.pop(name, None)
        for table in (self._parameters, self._buffers, self._modules):
            if table is not keep:
                table.pop(name, None)
        self._non_persistent_buffers_set.discard(name)

    def __getattr__(self, name):  # only called when normal lookup fails
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        if name in self._parameters:
            del self._parameters[name]
        elif name in self._buffers:
            del self._buffers[name]
            self._non_persistent_buffers_set.discard(name)
        elif name in self._modules:
            del self._modules[name]
        else:
            object.__delattr__(self, name)

    def __dir__(self):
        keys = list(dir(type(self))) + list(self.__dict__) + list(self._parameters) + \
            list(self._modules) + list(self._buffers)
        return sorted(key for key in keys if not key[0].isdigit())

    def _check_new_name(self, name, kind, table):
        """torch's checks on a name given to register_buffer/register_parameter/add_module."""
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string. Got {_typename(name)}")
        if "." in name:
            raise KeyError(f"{kind} name can't contain \".\"" + (f", got: {name}" if kind == "module" else ""))
        if name == "":
            raise KeyError(f"{kind} name can't be empty string \"\"")
        if hasattr(self, name) and name not in table:
            raise KeyError(f"attribute '{name}' already exists")

    def register_buffer(self, name, tensor, persistent=True):
        """A tensor that belongs to the module but is not trained (e.g. RoPE tables). It moves
        with ``to()``; ``persistent=False`` keeps it out of ``state_dict()``."""
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        self._check_new_name(name, "buffer", self._buffers)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{_typename(tensor)}' object to buffer '{name}' "
                            "(torch Tensor or None required)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def register_parameter(self, name, param):
        """Register ``param`` (a Parameter, or None for an empty slot such as ``bias=False``'s)."""
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign parameter before Module.__init__() call")
        self._check_new_name(name, "parameter", self._parameters)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{_typename(param)}' object to parameter '{name}' "
                            "(torch.nn.Parameter or None required)")
        if param is not None and not param.is_leaf:
            raise ValueError(f"Cannot assign non-leaf Tensor to parameter '{name}'. Model parameters must be "
                             f"created explicitly. To express '{name}' as a function of another Tensor, "
                             "compute the value in the forward() method.")
        self._parameters[name] = param

    def add_module(self, name, module):
        """Register ``module`` (or None) as the child ``name``, as ``self.name = module`` does."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{_typename(module)} is not a Module subclass")
        self._check_new_name(name, "module", self._modules)
        self._modules[name] = module

    def register_module(self, name, module):
        """The same as ``add_module``."""
        self.add_module(name, module)

    # --- traversal ------------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """``(dotted_name, module)`` for this module and every descendant; a module reachable under
        two names comes once (under the first) unless ``remove_duplicate=False``. ``memo``: a set
        of modules to skip (and to add to), as torch."""
        if memo is None:
            memo = set()
        if self in memo:
            return
        if remove_duplicate:
            memo.add(self)
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self, remove_duplicate=True):
        for _, module in self.named_modules(remove_duplicate=remove_duplicate):
            yield module

    def named_children(self):
        """``(name, module)`` of the direct children (each module once, None slots skipped)."""
        memo = set()
        for name, child in self._modules.items():
            if child is not None and child not in memo:
                memo.add(child)
                yield name, child

    def children(self):
        for _, child in self.named_children():
            yield child

    def _named_members(self, table, prefix, recurse, remove_duplicate):
        """Pairs from each module's ``table`` (``_parameters`` / ``_buffers``); a tensor shared by two
        modules comes once unless ``remove_duplicate=False`` (torch's ``_named_members``)."""
        seen = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse \
            else [(prefix, self)]
        for module_prefix, module in modules:
            for name, tensor in getattr(module, table).items():
                if tensor is None or id(tensor) in seen:
                    continue
                if remove_duplicate:
                    seen.add(id(tensor))
                yield (f"{module_prefix}.{name}" if module_prefix else name), tensor

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """``(dotted_name, Parameter)`` pairs; a parameter shared by two modules comes once."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        """``(dotted_name, Tensor)`` of every buffer, persistent or not (``state_dict`` has only the
        persistent ones)."""
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def get_submodule(self, target):
        """The module at dotted path ``target`` (``""``: this module), as torch's."""
        module = self
        for item in target.split(".") if target else []:
            if not hasattr(module, item):
                raise AttributeError(f"{module._get_name()} has no attribute `{item}`")
            module = getattr(module, item)
            if not isinstance(module, Module):
                raise AttributeError(f"`{item}` is not an nn.Module")
        return module

    def set_submodule(self, target, module, strict=False):
        """Put ``module`` at dotted path ``target`` (its parent must exist; ``strict``: the
        attribute too), as torch's."""
        if target == "":
            raise ValueError("Cannot set the submodule without a target name!")
        if not isinstance(module, Module):
            raise ValueError(f"`module` is not an nn.Module, found {type(module)}")
        parent_path, _, name = target.rpartition(".")
        parent = self.get_submodule(parent_path)
        if strict and not hasattr(parent, name):
            raise AttributeError(f"{parent._get_name()} has no attribute `{name}`")
        if hasattr(parent, name) and not isinstance(getattr(parent, name), Module):
            raise AttributeError(f"`{name}` is not an nn.Module")
        setattr(parent, name, module)

    def get_parameter(self, target):
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if not hasattr(module, name):
            raise AttributeError(f"{module._get_name()} has no attribute `{name}`")
        param = getattr(module, name)
        if not isinstance(param, Parameter):
            raise AttributeError(f"`{name}` is not an nn.Parameter")
        return param

    def get_buffer(self, target):
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if not hasattr(module, name):
            raise AttributeError(f"{module._get_name()} has no attribute `{name}`")
        if name not in module._buffers:
            raise AttributeError(f"`{name}` is not a buffer")
        return getattr(module, name)

    def apply(self, fn):
        """``fn(module)`` for every descendant, children before parents (as PyTorch)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # --- modes and gradients --------------------------------------------------------------------
    def train(self, mode=True):
        """Training mode on (``mode=True``) or off for this module and, through their own
        ``train``, every child."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for child in self.children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        dtypes.bool_argument("requires_grad_", "requires_grad", requires_grad, position=1)  # ("no" is truthy)
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Forget the gradients: ``None`` (the default) or, with ``set_to_none=False``, zeroed in
        place (someone holding ``p.grad`` sees the zeros, as in torch)."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.requires_grad_(False)
                with no_grad():
                    p.grad.zero_()

    # --- movement and casts ---------------------------------------------------------------------
    def _apply_to_tensors(self, convert, recurse=True):
        """``convert(tensor)`` on every parameter and buffer (and its gradient) of this module and,
        with ``recurse``, its descendants. The objects stay the same (an optimizer built before
        ``.to`` still holds them), as torch's ``param.data = fn(param)``."""
        modules = self.modules() if recurse else [self]
        for module in modules:
            for t in chain(module._parameters.values(), module._buffers.values()):
                if t is not None:
                    convert(t)
        return self

    def to(self, *args, **kwargs):
        """``to(device=None, dtype=None, non_blocking=False)``, ``to(dtype, non_blocking=False)`` or
        ``to(tensor, non_blocking=False)``, as torch: moves every parameter and buffer, and casts the
        floating-point ones (integer buffers keep their dtype). A dtype's name is torch's error
        (``model.to("float64")`` reads a device). ``non_blocking`` changes nothing here (every copy is synchronous);
        ``memory_format`` is not supported."""
        device, dtype = _parse_to(args, kwargs)
        if dtype is not None and not dtypes.is_floating(dtype):
            raise TypeError(f"nn.Module.to only accepts floating point or complex dtypes, but got desired "
                            f"dtype={dtype}")
        dev = _get_device(device) if device is not None else None
        if dev is not None and dev.type != "meta" and any(t.is_meta for t in self._tensors_and_grads()):
            raise NotImplementedError(f"{NO_DATA} Please use torch.nn.Module.to_empty() instead of torch.nn.Module.to() "
                                      f"when moving module from meta to a different device.")
        return self._apply_to_tensors(
            lambda t: _move_in_place(t, dev, dtype if dtypes.is_floating(t.dtype) else None))

    def _tensors_and_grads(self):
        """Every parameter and buffer of this module and its descendants, and their gradients."""
        for module in self.modules():
            for t in chain(module._parameters.values(), module._buffers.values()):
                if t is not None:
                    yield t
                    if t._grad is not None:
                        yield t._grad

    def to_empty(self, *, device, recurse=True):
        """Parameters and buffers on ``device`` with their shapes and dtypes but *uninitialized*
        values (torch's ``empty_like``): for a model built only to be filled by ``load_state_dict``."""
        dev = _get_device(device)
        return self._apply_to_tensors(lambda t: _empty_in_place(t, dev), recurse=recurse)

    def type(self, dst_type):
        """Cast *every* parameter and buffer (integer ones too) to ``dst_type``, as torch's; a parameter that
        requires grad cannot become integer or bool (torch's RuntimeError, before anything is cast)."""
        dtype = _to_dtype(dst_type)
        if dtype.kind in "biu" and any(p.requires_grad for p in self.parameters()):
            raise RuntimeError("data set to a tensor that requires gradients must be floating point or complex dtype")
        return self._apply_to_tensors(lambda t: _move_in_place(t, None, dtype))

    def float(self):
        return self.to(dtype=dtypes.float32)

    def double(self):
        return self.to(dtype=dtypes.float64)

    def half(self):
        return self.to(dtype=dtypes.float16)

    def bfloat16(self):
        return self.to(dtype=dtypes.bfloat16)  # (without ml_dtypes: a clear error naming the fix)

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else f"cuda:{device}" if isinstance(device, int) else device)

    def share_memory(self):
        """torch's ``model.share_memory()``: each parameter, gradient and buffer moved into shared memory
        (``Tensor.share_memory_``, minilora/storage.py), so processes forked afterwards update the same weights
        (Hogwild training: the optimizers write in place). A tensor another array views is refused by name."""
        for tensor in [*self.parameters(), *self.buffers()]:
            tensor.share_memory_()
            if tensor.grad is not None:
                tensor.grad.share_memory_()
        return self

    def compile(self, *args, **kwargs):
        """torch's in-place ``model.compile(mode=...)``: the arguments checked as ``torch.compile``'s;
        minilora compiles nothing (minilora/compiler.py), so the module runs as before."""
        from ..compiler import compile as check_arguments
        check_arguments(self.forward, *args, **kwargs)

    # --- state dict -----------------------------------------------------------------------------
    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        """Name -> Tensor for every parameter and persistent buffer (shared ones under each name),
        plus ``<prefix>_extra_state`` of modules that define ``get_extra_state``.

        The tensors share memory with the model (``.detach()``ed unless ``keep_vars``), as in
        PyTorch: copy them if the model will keep training and you need a snapshot. ``prefix`` is put
        before every key as given (``prefix="model."``). Positional arguments work, with torch's
        FutureWarning."""
        if args:
            warnings.warn("Positional args are being deprecated, use kwargs instead. Refer to "
                          "https://pytorch.org/docs/main/generated/torch.nn.Module.html"
                          "#torch.nn.Module.state_dict for details.", FutureWarning, stacklevel=2)
            destination = args[0] if destination is None else destination
            prefix = args[1] if len(args) > 1 and prefix == "" else prefix
            keep_vars = args[2] if len(args) > 2 and keep_vars is False else keep_vars
        if destination is None:
            destination = OrderedDict()
        for hook in self._state_dict_pre_hooks.values():
            hook(self, prefix, keep_vars)
        self._save_to_state_dict(destination, prefix, keep_vars)
        for name, child in self._modules.items():
            if child is not None:
                child.state_dict(destination=destination, prefix=f"{prefix}{name}.", keep_vars=keep_vars)
        for hook in self._state_dict_hooks.values():
            if hook(self, destination, prefix, {}) is not None:
                raise RuntimeError("state_dict post-hook must return None")
        return destination

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """This module's own entries (not its children's)."""
        for name, param in self._parameters.items():
            if param is not None:
                destination[prefix + name] = param if keep_vars else param.detach()
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = buf if keep_vars else buf.detach()
        if type(self).get_extra_state is not Module.get_extra_state:
            destination[prefix + _EXTRA_STATE_KEY_SUFFIX] = self.get_extra_state()

    def get_extra_state(self):
        """Override (with ``set_extra_state``) to put non-tensor state in ``state_dict()``."""
        raise RuntimeError("Reached a code path in Module.get_extra_state() that should never be called: "
                           "override get_extra_state in your module to use extra state")

    def set_extra_state(self, state):
        raise RuntimeError("Reached a code path in Module.set_extra_state() that should never be called: "
                           "override set_extra_state in your module to use extra state")

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Copy values in (minilora or torch tensors, NumPy arrays), cast to each target's dtype.

        ``strict``: the keys must match exactly; shapes must always match. torch's rules for which
        keys count as missing and unexpected. ``assign=True`` puts the given tensors themselves into
        the module (their dtype and device; a Parameter keeps ``requires_grad``) instead of copying.
        Returns ``IncompatibleKeys(missing_keys, unexpected_keys)``.

        On failure the error (``StateDictError``, a RuntimeError as torch raises) lists every
        problem. Unlike torch, nothing is written when it raises -- unless a load post-hook is
        registered: such a hook may clear the key lists, so it runs on the loaded model before the
        strict check, as in torch.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        plan = _LoadPlan(OrderedDict(state_dict), assign)
        plan.visit(self, plan.state_dict, "")
        if plan.mismatched or plan.messages:
            raise StateDictError(plan.missing if strict else (), plan.unexpected if strict else (),
                                 plan.mismatched, type(self).__name__, plan.messages)
        keys = IncompatibleKeys(plan.missing, plan.unexpected)
        has_post_hooks = any(m._load_state_dict_post_hooks for m in plan.visited)
        if strict and (keys.missing_keys or keys.unexpected_keys) and not has_post_hooks:
            raise StateDictError(keys.missing_keys, keys.unexpected_keys, module=type(self).__name__)
        plan.write(assign)
        for module in plan.visited:  # children before parents, as torch
            for hook in module._load_state_dict_post_hooks.values():
                if hook(module, keys) is not None:
                    raise AssertionError("Hooks registered with ``register_load_state_dict_post_hook`` are not "
                                       "expected to return new values, if incompatible_keys need to be "
                                       "modified, it should be done inplace.")
        if strict and (keys.missing_keys or keys.unexpected_keys):
            raise StateDictError(keys.missing_keys, keys.unexpected_keys, module=type(self).__name__)
        return keys

    # --- hooks ----------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        if (self._forward_pre_hooks or self._forward_hooks or self._backward_hooks or self._backward_pre_hooks
                or _global_forward_pre_hooks or _global_forward_hooks or _global_backward_hooks
                or _global_backward_pre_hooks):
            return self._call_with_hooks(args, kwargs)
        with parallel.computing():  # BLAS on one thread while minilora computes (minilora/parallel.py)
            return self.forward(*args, **kwargs)

    def _call_with_hooks(self, args, kwargs):
        """``forward`` between the hooks, with torch's rules: a pre-hook that returns something
        replaces the positional inputs (a non-tuple becomes a 1-tuple); a forward hook that returns
        something replaces the output; an ``always_call`` hook runs even when forward raises."""
        called, result = set(), None
        try:
            own = [(hook, hook_id in self._forward_pre_hooks_with_kwargs)
                   for hook_id, hook in self._forward_pre_hooks.items()]
            for hook, with_kwargs in [*_global_forward_pre_hooks.values(), *own]:
                if with_kwargs:
                    new = hook(self, args, kwargs)
                    if new is not None:
                        if not (isinstance(new, tuple) and len(new) == 2):
                            raise RuntimeError("forward pre-hook must return None or a tuple of "
                                               f"(new_args, new_kwargs), but got {new}.")
                        args, kwargs = new
                else:
                    new = hook(self, args)
                    if new is not None:
                        args = new if isinstance(new, tuple) else (new,)
            backward_hooks = None
            if self._backward_hooks or self._backward_pre_hooks or _global_backward_hooks or _global_backward_pre_hooks:
                backward_hooks = _BackwardHooks(self)
                args = backward_hooks.wrap_inputs(args)
            with parallel.computing():
                result = self.forward(*args, **kwargs)
            for hook_id, (hook, with_kwargs, always_call) in self._all_forward_hooks():
                if always_call:
                    called.add(hook_id)
                new = hook(self, args, kwargs, result) if with_kwargs else hook(self, args, result)
                if new is not None:
                    result = new
            if backward_hooks is not None:
                result = backward_hooks.wrap_outputs(result)
            return result
        except Exception:
            for hook_id, (hook, with_kwargs, always_call) in self._all_forward_hooks():
                if always_call and hook_id not in called:
                    try:
                        hook(self, args, kwargs, result) if with_kwargs else hook(self, args, result)
                    except Exception as exc:  # the first error is the one to see
                        warnings.warn("module forward hook with ``always_call=True`` raised an exception that "
                                      f"was silenced as another error was raised in forward: {exc}",
                                      stacklevel=2)
            raise

    def _all_forward_hooks(self):
        """The global forward hooks (register_module_forward_hook), then this module's, as torch runs them."""
        with_kwargs, always = self._forward_hooks_with_kwargs, self._forward_hooks_always_called
        return [*_global_forward_hooks.items(),
                *((hook_id, (hook, hook_id in with_kwargs, hook_id in always))
                  for hook_id, hook in self._forward_hooks.items())]

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """``hook(module, args)`` runs before ``forward`` (``with_kwargs``: ``hook(module, args,
        kwargs)``); returns a handle whose ``remove()`` unregisters it."""
        return self._add_hook("_forward_pre_hooks", hook, prepend,
                              flags={"_forward_pre_hooks_with_kwargs": with_kwargs})

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False, always_call=False):
        """``hook(module, args, output)`` runs after ``forward`` (``with_kwargs``: ``hook(module,
        args, kwargs, output)``; ``always_call``: also when forward raises, with ``output=None``);
        returns a handle whose ``remove()`` unregisters it."""
        return self._add_hook("_forward_hooks", hook, prepend, flags={"_forward_hooks_with_kwargs": with_kwargs,
                                                                      "_forward_hooks_always_called": always_call})

    def register_state_dict_pre_hook(self, hook):
        """``hook(module, prefix, keep_vars)`` runs before ``state_dict()`` collects this module."""
        return self._add_hook("_state_dict_pre_hooks", hook)

    def register_state_dict_post_hook(self, hook):
        """``hook(module, state_dict, prefix, local_metadata)`` runs after this module's entries are in
        ``state_dict`` (and its children's); it may change the dict in place and must return None."""
        return self._add_hook("_state_dict_hooks", hook)

    def register_load_state_dict_pre_hook(self, hook):
        """``hook(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
        error_msgs)`` runs before this module's keys are read: it may rename keys of ``state_dict`` in
        place (``local_metadata`` is ``{}``: minilora writes no metadata)."""
        return self._add_hook("_load_state_dict_pre_hooks", hook)

    def _register_load_state_dict_pre_hook(self, hook, with_module=False):
        """torch's older (private, and much used) form: ``hook(state_dict, prefix, local_metadata, strict,
        missing_keys, unexpected_keys, error_msgs)``, given the module first when ``with_module``."""
        if with_module:
            return self.register_load_state_dict_pre_hook(hook)
        return self.register_load_state_dict_pre_hook(lambda module, *args: hook(*args))

    def register_load_state_dict_post_hook(self, hook):
        """``hook(module, incompatible_keys)`` runs after loading; it may edit the key lists in place
        (an emptied list is no longer an error under ``strict``)."""
        return self._add_hook("_load_state_dict_post_hooks", hook)

    def register_full_backward_hook(self, hook, prepend=False):
        """``hook(module, grad_input, grad_output)`` runs once the gradients with respect to the
        module's positional tensor inputs are computed (tuples, ``None`` where an input is not a
        tensor or needs no gradient); returning a tuple of the same length replaces ``grad_input``.
        When no input requires grad, it runs at the outputs' gradients with ``grad_input`` all None
        (and must return None), as torch's."""
        return self._add_hook("_backward_hooks", hook, prepend)

    def register_full_backward_pre_hook(self, hook, prepend=False):
        """``hook(module, grad_output)`` runs when the gradients with respect to the module's outputs
        are computed; returning a tuple of the same length replaces ``grad_output``."""
        return self._add_hook("_backward_pre_hooks", hook, prepend)

    def register_backward_hook(self, hook):
        raise NotImplementedError("register_backward_hook (deprecated in torch, where it reports the last "
                                  "op's gradients, not the module's): use register_full_backward_hook")

    def _own(self, kind):
        """This module's own dict ``kind`` (made at its first hook: until then the class's empty one)."""
        if kind not in self.__dict__:
            object.__setattr__(self, kind, OrderedDict())
        return self.__dict__[kind]

    def _add_hook(self, kind, entry, prepend=False, flags=None):
        """``entry`` into this module's ``kind`` dict; ``flags`` ({flag dict's name: bool}): the hook's id
        set True in each flag dict whose value is true (the handle removes it from all of them)."""
        hooks = self._own(kind)
        flag_dicts = [self._own(name) for name in (flags or {})]
        handle = RemovableHandle(hooks, extra_dict=flag_dicts or None)
        hooks[handle.id] = entry
        for flags_dict, on in zip(flag_dicts, (flags or {}).values()):
            if on:
                flags_dict[handle.id] = True
        if prepend:
            hooks.move_to_end(handle.id, last=False)
        return handle

    # --- forward and printing -------------------------------------------------------------------
    def forward(self, *input):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def extra_repr(self):
        """One line (or several) shown inside the module's repr: override to describe its settings."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): {_addindent(repr(child), 2)}" for name, child in self._modules.items()]
        lines = extra_lines + child_lines
        text = self._get_name() + "("
        if len(extra_lines) == 1 and not child_lines:
            text += extra_lines[0]
        elif lines:
            text += "\n  " + "\n  ".join(lines) + "\n"
        return text + ")"


# Hooks on every module's call (torch.nn.modules.module.register_module_forward_hook): run before each
# module's own. Entries as Module's own: (hook, with_kwargs) and (hook, with_kwargs, always_call).
_global_forward_pre_hooks = OrderedDict()
_global_forward_hooks = OrderedDict()
_global_backward_pre_hooks = OrderedDict()  # (hook(module, grad_output), run before every module's own)
_global_backward_hooks = OrderedDict()  # (hook(module, grad_input, grad_output), likewise)


def register_module_forward_pre_hook(hook):
    """torch's global ``hook(module, args)``, run before every module's forward (and before its own
    pre-hooks). Returns a handle; ``handle.remove()`` takes the hook out."""
    handle = RemovableHandle(_global_forward_pre_hooks)
    _global_forward_pre_hooks[handle.id] = (hook, False)
    return handle


def register_module_forward_hook(hook, *, with_kwargs=False, always_call=False):
    """torch's global ``hook(module, args, output)``, run after every module's forward (before its own
    forward hooks). Returns a handle; ``handle.remove()`` takes the hook out."""
    handle = RemovableHandle(_global_forward_hooks)
    _global_forward_hooks[handle.id] = (hook, with_kwargs, always_call)
    return handle


def register_module_full_backward_pre_hook(hook):
    """torch's global ``hook(module, grad_output)``, run for every module's call before its own backward pre-hooks
    (torch's ``register_module_full_backward_pre_hook``). Returns a handle."""
    handle = RemovableHandle(_global_backward_pre_hooks)
    _global_backward_pre_hooks[handle.id] = hook
    return handle


def register_module_full_backward_hook(hook):
    """torch's global ``hook(module, grad_input, grad_output)``, run for every module's call before its own full
    backward hooks (torch's ``register_module_full_backward_hook``). Returns a handle."""
    handle = RemovableHandle(_global_backward_hooks)
    _global_backward_hooks[handle.id] = hook
    return handle


def _hooks_with_global(own, global_hooks):
    """The global hooks, then the module's own, as torch's _call_impl lists them."""
    return [*global_hooks.values(), *own.values()]


class _Gate(_Node):
    """The engine node in front of a group of tensors (a module's inputs, or its outputs): its backward
    runs once, after every ``_Carry`` of the group has handed it its gradient, and gives the group's
    gradients -- as ``state.on_grads`` may have replaced them -- to the tensors themselves. Its output
    is a dummy 0-d zero that only links it to the ``_Carry`` nodes."""

    @staticmethod
    def forward(ctx, *arrays, state):
        ctx.state = state
        first = next(a for a, need in zip(arrays, ctx.needs_input_grad) if need)
        return ctx.device.xp.zeros((), dtype=first.dtype)

    @staticmethod
    def backward(ctx, grad):
        return tuple(ctx.state.release())

    @staticmethod
    def backward_graph(ctx, grad):  # (create_graph=True: the hooks see the gradients as tensors in the graph)
        return tuple(ctx.state.release(recorded=True))


class _Carry(_Node):
    """One tensor of a gated group, as seen past the gate: ``value``'s numbers (copied, so an in-place
    change inside the module stays inside), linked in the graph to the gate alone. Its backward hands
    its gradient to the group and a zero to the gate, so the gate runs after all of them."""

    @staticmethod
    def forward(ctx, link, *, value, state, index):
        ctx.state, ctx.index = state, index
        return value.copy()

    @staticmethod
    def refuses_inplace(ctx):
        """torch's BackwardHookFunction returns the module's inputs and outputs as views: one changed in place
        (a ReLU(inplace=True) after a hooked layer, Grad-CAM's) is torch's error, not a copy changed quietly."""
        return f"Output {ctx.index} of BackwardHookFunction"

    @staticmethod
    def backward(ctx, grad):
        ctx.state.grads[ctx.index] = grad
        return ctx.device.xp.zeros((), dtype=grad.dtype)

    @staticmethod
    def backward_graph(ctx, grad):
        ctx.state.grads[ctx.index] = grad  # (a tensor, in the recorded pass's graph)
        return Tensor._make(ctx.device.xp.zeros((), dtype=grad.dtype), ctx.device, False, None)


class _Group:
    """The gradients of a group of tensors on their way back: ``grads`` fills in as the carries run;
    ``release`` turns them into Tensors, lets ``on_grads`` see (and replace) them, and returns arrays."""

    def __init__(self, device, on_grads, count):
        self.device, self.on_grads, self.grads = device, on_grads, [None] * count

    def release(self, recorded=False):
        """``recorded``: a create_graph=True pass, whose gradients are tensors already, and stay ones."""
        grads = tuple(g if g is None or recorded else Tensor._make(g, self.device, False, None) for g in self.grads)
        self.grads = [None] * len(self.grads)
        return [g._array if isinstance(g, Tensor) and not recorded else g for g in self.on_grads(grads)]


def _gate(values, on_grads):
    """``values`` (a tuple) with its tensors routed through one gate (see ``_Gate``), and their indices;
    ``(values, None)`` when no gradient will flow (no tensor requires grad, or grad mode is off)."""
    index = [i for i, v in enumerate(values) if isinstance(v, Tensor)]
    tensors = [values[i] for i in index]
    if not (is_grad_enabled() and any(t.requires_grad for t in tensors)):
        return values, None
    state = _Group(tensors[0].device, on_grads, len(tensors))
    link = _Gate.apply(*tensors, state=state)
    out = list(values)
    for k, i in enumerate(index):
        if values[i].requires_grad:  # the others (token ids, masks) pass as they are: None in the hooks
            out[i] = _Carry.apply(link, value=values[i]._array, state=state, index=k)
    return tuple(out), index


def _with_none(index, values, size):
    """``values`` at positions ``index`` of a ``size``-tuple of Nones (torch's ``_pack_with_none``)."""
    out = [None] * size
    for i, value in zip(index, values):
        out[i] = value
    return tuple(out)


def _run_replacing_hooks(hooks, grads, call, error):
    """Each hook of the list ``hooks`` in turn, as ``call(hook, grads)``: one that returns a tuple
    replaces ``grads`` for the next ones (it must hold as many gradients: else torch's RuntimeError,
    ``error`` and the counts); the gradients after the last."""
    for hook in hooks:
        new = call(hook, grads)
        if new is None:
            continue
        if len(new) != len(grads):
            raise RuntimeError(f"{error}, got {len(new)}, but expected {len(grads)}")
        _check_replacements(grads, new)
        grads = new
    return grads


def _check_replacements(grads, new):
    """torch runs a module's backward hooks inside an autograd hook of its own, named 'hook': each gradient
    a hook returns is a Tensor (or None) of the dtype and shape of the one it replaces, else torch's error
    (a float64 gradient went on into a float32 layer's backward)."""
    for before, after in zip(grads, new):
        if after is not None:
            hook_result("hook", after if before is None else before, after)


class _BackwardHooks:
    """One call's module backward hooks, as torch's ``BackwardHook``: the outputs' gradients go through
    the backward pre-hooks and are kept; when the inputs' gradients arrive, the full backward hooks get
    both and may replace the inputs' gradients."""

    def __init__(self, module):
        self.module, self.grad_outputs = module, None
        self.n_inputs, self.input_index = 0, None

    def wrap_inputs(self, args):
        self.n_inputs = len(args)
        # torch's hooks see zeros (not None) for the tensor inputs that need no gradient: keep their shapes
        self.no_grad_inputs = [(i, a._array.shape, a._array.dtype, a._device) for i, a in enumerate(args)
                               if isinstance(a, Tensor) and not a.requires_grad]
        args, self.input_index = _gate(args, self._on_input_grads)
        return args

    def wrap_outputs(self, result):
        values = result if isinstance(result, tuple) else (result,)
        self.n_outputs = len(values)
        values, self.output_index = _gate(values, self._on_output_grads)
        return values if isinstance(result, tuple) else values[0]

    def _on_output_grads(self, grads):
        grad_outputs = _with_none(self.output_index, grads, self.n_outputs)
        grad_outputs = _run_replacing_hooks(_hooks_with_global(self.module._backward_pre_hooks,
                                                               _global_backward_pre_hooks), grad_outputs,
                                            lambda hook, g: hook(self.module, g),
                                            "Backward pre hook returned an invalid number of grad_output")
        if self.input_index is None:  # no input needs a gradient: the hooks run here, as in torch
            warnings.warn("Full backward hook is firing when gradients are computed with respect to module "
                          "outputs since no inputs require gradients. See https://docs.pytorch.org/docs/main/"
                          "generated/torch.nn.Module.html#torch.nn.Module.register_full_backward_hook for more "
                          "details.", UserWarning, stacklevel=2)  # (torch 2.13's words, its link included)
            grad_inputs = (None,) * self.n_inputs
            for hook in _hooks_with_global(self.module._backward_hooks, _global_backward_hooks):
                new = hook(self.module, grad_inputs, grad_outputs)
                if new is not None and not (isinstance(new, tuple) and all(g is None for g in new)):
                    raise RuntimeError("Backward hook for Modules where no input requires gradient should "
                                       "always return None or None for all gradients.")
        else:
            self.grad_outputs = grad_outputs
        return [grad_outputs[i] for i in self.output_index]

    def _on_input_grads(self, grads):
        if self.grad_outputs is None:  # the gradient reached the inputs without passing the outputs
            return grads
        grad_inputs = list(_with_none(self.input_index, grads, self.n_inputs))
        for i, shape, dtype, dev in self.no_grad_inputs:
            grad_inputs[i] = Tensor._make(dev.xp.zeros(shape, dtype), dev, False, None)
        grad_inputs = _run_replacing_hooks(_hooks_with_global(self.module._backward_hooks, _global_backward_hooks),
                                           tuple(grad_inputs),
                                           lambda hook, g: hook(self.module, g, self.grad_outputs),
                                           "Backward hook returned an invalid number of grad_input")
        self.grad_outputs = None
        return [grad_inputs[i] for i in self.input_index]


class _LoadPlan:
    """What ``load_state_dict`` will do, worked out before anything is written (so that a failure
    changes nothing). ``visit`` follows torch's ``_load_from_state_dict`` module by module: the keys a
    module owns, torch's rule for unexpected keys (under this module's prefix, a dotted name whose
    first part is not a child, or a plain name that is not one of its own tensors), then each child
    with the keys under its prefix."""

    def __init__(self, state_dict, assign=False):
        self.state_dict, self.assign = state_dict, assign
        self.missing, self.unexpected, self.mismatched, self.messages = [], [], [], []
        self.copies, self.extra_states = [], []  # (module, name, target, value), (module, state)
        self.visited = []  # children before parents

    def visit(self, module, local, prefix):
        for hook in module._load_state_dict_pre_hooks.values():
            hook(module, local, prefix, {}, True, self.missing, self.unexpected, self.messages)
        own = OrderedDict((n, p) for n, p in module._parameters.items() if p is not None)
        own.update((n, b) for n, b in module._buffers.items()
                   if b is not None and n not in module._non_persistent_buffers_set)
        for name, target in own.items():
            key = prefix + name
            if key not in local:
                self.missing.append(key)
                continue
            value, shape = local[key], tuple(np.shape(local[key]))
            if target.shape == () and shape == (1,):  # torch's allowance for old checkpoints of 0-d tensors
                value, shape = value[0], ()
            if shape != tuple(target.shape):
                self.mismatched.append((key, shape, tuple(target.shape)))
            elif self.assign or not self._meta_copy(key, target, value):
                self.copies.append((module, name, target, value))
        extra_key = prefix + _EXTRA_STATE_KEY_SUFFIX
        if type(module).set_extra_state is not Module.set_extra_state:
            if extra_key in local:
                self.extra_states.append((module, local[extra_key]))
            else:
                self.missing.append(extra_key)
        elif extra_key in local:
            self.unexpected.append(extra_key)
        for key in local:
            if key.startswith(prefix) and key != extra_key:
                first, *rest = key[len(prefix):].split(".", 1)
                if (rest and first not in module._modules) or (not rest and first not in own):
                    self.unexpected.append(key)
        for name, child in module._modules.items():
            if child is not None:
                child_prefix = f"{prefix}{name}."
                self.visit(child, {k: v for k, v in local.items() if k.startswith(child_prefix)}, child_prefix)
        self.visited.append(module)

    def _meta_copy(self, key, target, value):
        """Is this copy one torch's ``param.copy_(value)`` makes no copy of? Into a meta tensor it writes
        nothing (torch warns when the value had data: ``assign=True`` was meant); out of a meta
        tensor there is nothing to copy: torch's error line."""
        if getattr(target, "is_meta", False):
            if not getattr(value, "is_meta", False):
                warnings.warn(f"for {key}: copying from a non-meta parameter in the checkpoint to a meta parameter in "
                              f"the current model, which is a no-op. (Did you mean to pass `assign=True` to assign "
                              f"items in the state dictionary to their corresponding key in the module instead of "
                              f"copying them in place?)", UserWarning, stacklevel=4)
            return True
        if getattr(value, "is_meta", False):
            self.messages.append(f'While copying the parameter named "{key}", whose dimensions in the model are '
                                 f'{Size(tuple(target.shape))} and whose dimensions in the checkpoint are '
                                 f'{Size(tuple(value.shape))}, an exception occurred : (\'{NO_DATA}\',).')
            return True
        return False

    def write(self, assign):
        # Convert everything first: a value that fails to convert changes nothing.
        converted = [(module, name, target, _assigned(target, value) if assign else
                      target.device.xp.asarray(dtypes.cast(np.asarray(_array(value)), target.dtype)))
                     for module, name, target, value in self.copies]
        with no_grad():
            for module, name, target, value in converted:
                if assign:
                    setattr(module, name, value)
                else:
                    target._array[...] = value
                    target._bump_version()  # an in-place change, as torch's param.copy_(value)
        for module, state in self.extra_states:
            module.set_extra_state(state)


def _assigned(target, value):
    """``load_state_dict(assign=True)``: the tensor that takes ``target``'s place -- the given one
    (its dtype and device; a NumPy array or torch tensor becomes a CPU Tensor), a Parameter keeping
    ``requires_grad`` where the target was a Parameter."""
    if not isinstance(value, Tensor):
        if str(getattr(value, "dtype", "")) == "torch.bfloat16" and not dtypes.HAS_BFLOAT16:
            raise TypeError("load_state_dict(assign=True) of a bfloat16 tensor: minilora has no bfloat16 "
                            "without ml_dtypes (pip install 'minilora[bf16]'); load with assign=False to "
                            "copy it into the model's dtype")
        array = np.asarray(_array(value))
        value = Tensor(array, dtype=array.dtype, device="cpu")
    if isinstance(target, Parameter):
        if isinstance(value, Parameter):
            return value.requires_grad_(target.requires_grad)
        return Parameter(value, requires_grad=target.requires_grad)
    return value


def _typename(value):
    """torch.typename, as torch's Module messages name a value: 'torch.FloatTensor' for a float32 tensor, 'int',
    the qualified class of anything else."""
    from ..type_objects import typename  # (type_objects imports the tensor types: at call time)
    return typename(value)


def _is_dtype(value):
    """Is ``value`` a dtype rather than a device? A string never is: ``model.to("float64")`` is torch's
    "Invalid device string"."""
    return dtypes.is_dtype_object(value)


def _parse_to(args, kwargs):
    """``(device, dtype)`` from ``Module.to``'s arguments, read as torch's ``_parse_to`` reads them."""
    if "copy" in kwargs:
        raise RuntimeError(".to() does not accept copy argument")
    unknown = sorted(set(kwargs) - {"device", "dtype", "non_blocking", "memory_format"})
    if unknown:
        raise TypeError(f"to() got an unexpected keyword argument '{unknown[0]}'")
    if kwargs.get("memory_format") is not None:
        raise NotImplementedError("Module.to(memory_format=...): minilora has no memory formats "
                                  "(its arrays are always contiguous, row-major)")
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    args = list(args)
    if args and isinstance(args[0], Tensor):  # to(tensor): that tensor's device and dtype
        other = args.pop(0)
        device, dtype = other.device, other.dtype
    elif args and _is_dtype(args[0]):
        dtype = args.pop(0)
    elif args:
        device = args.pop(0)
        if args and _is_dtype(args[0]):
            dtype = args.pop(0)
    if args and isinstance(args[0], bool):
        args.pop(0)  # non_blocking: every copy here is synchronous, so the result is the same
    if args:
        raise TypeError(f"to() received an invalid combination of arguments: {args!r} left over")
    return device, dtypes.dtype_argument("to", dtype)


def _empty_in_place(t, dev):
    t._array = dev.xp.empty(t.shape, dtype=t.dtype)
    t._device = dev
    if t.grad is not None:
        t.grad._array, t.grad._device = dev.xp.empty(t.shape, dtype=t.grad.dtype), dev


def _array(value):
    if isinstance(value, Tensor):
        return value.numpy(force=True)
    if dtypes.is_torch_tensor(value):  # bfloat16 stays bfloat16 (widened only without ml_dtypes)
        return dtypes.from_torch(value)
    return value


def _convert(array, dev, dtype, meta=False):
    if dtype is not None and array.dtype != dtype:  # (a meta tensor's cast: zeros nobody writes, see ops/meta.py)
        array = unwritten_zeros(array.shape, dtype) if meta else dtypes.cast(array, dtype)
    if dev is not None:
        if dev.xp is np:
            array = array if isinstance(array, np.ndarray) else array.get()
        else:
            dev.check_dtype(array.dtype)  # bfloat16 needs CuPy >= 14
            with device_errors_as_torch():
                array = dev.xp.asarray(array)
    return array


def _move_in_place(t, dev, dtype):
    """Change a tensor's device/dtype keeping the object (optimizers and modules hold it)."""
    dev = dev if dev is not t.device else None
    if dtype is not None:
        (dev or t.device).check_dtype(dtype)  # bfloat16 on cuda needs CuPy >= 14
    meta = t.is_meta and (dev is None or dev.type == "meta")
    t._array = _convert(t._array, dev, dtype, meta)
    if t.grad is not None:
        t.grad._array = _convert(t.grad._array, dev, dtype, meta)
        if dev is not None:
            t.grad._device = dev
    if dev is not None:
        t._device = dev


# ==================================================================================================
# Containers: ModuleList, ModuleDict, Sequential, ParameterList, ParameterDict -- torch's, method for method
# ==================================================================================================
def _abs_index(index, length):
    """``index`` (any int, negatives from the end) as a position in ``range(length)``, or torch's IndexError."""
    import operator
    index = operator.index(index)
    if not -length <= index < length:
        raise IndexError(f"index {index} is out of range")
    return index % length if length else index


def _renumber(container):
    """Names 0, 1, ... again after a deletion or insertion (as torch)."""
    object.__setattr__(container, "_modules",
                       OrderedDict((str(i), m) for i, m in enumerate(container._modules.values())))


def _insert(container, index, module):
    """Insert before ``index`` (``0 <= index <= len``), shifting the names up, as torch's insert.

    torch's insert misnumbers the list for an index outside ``0..len`` (a negative one raises a
    KeyError after shifting half the list); minilora refuses those with an IndexError instead."""
    n = len(container._modules)
    if not 0 <= index <= n:
        raise IndexError(f"{type(container).__name__}.insert: index {index} must be in 0..{n} "
                         "(torch's insert misnumbers the modules for other indices)")
    modules = list(container._modules.values())
    modules.insert(index, module)
    object.__setattr__(container, "_modules", OrderedDict((str(i), m) for i, m in enumerate(modules)))


def _repeated_block_repr(container):
    """torch's ModuleList repr: a run of identical modules is shown once as ``(0-2): 3 x Linear(...)``."""
    reprs = [repr(module) for module in container]
    if not reprs:
        return container._get_name() + "()"
    blocks = []  # [first index, last index, repr]
    for i, text in enumerate(reprs):
        if blocks and blocks[-1][2] == text:
            blocks[-1][1] = i
        else:
            blocks.append([i, i, text])
    lines = [_addindent(f"({a}): {text}" if a == b else f"({a}-{b}): {b - a + 1} x {text}", 2)
             for a, b, text in blocks]
    return container._get_name() + "(\n  " + "\n  ".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules registered as ``0``, ``1``, ... (``model.layers.3.mlp``)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self += modules

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(list(self._modules.values())[idx])
        return self._modules[str(_abs_index(idx, len(self)))]

    def __setitem__(self, idx, module):
        setattr(self, str(_abs_index(idx, len(self))), module)

    def __delitem__(self, idx):
        if isinstance(idx, slice):
            for k in range(len(self._modules))[idx]:
                delattr(self, str(k))
        else:
            delattr(self, str(_abs_index(idx, len(self))))
        _renumber(self)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        combined = ModuleList()
        for i, module in enumerate(chain(self, other)):
            combined.add_module(str(i), module)
        return combined

    def __dir__(self):
        return [key for key in super().__dir__() if not key.isdigit()]

    def __repr__(self):
        return _repeated_block_repr(self)

    def insert(self, index, module):
        """Insert ``module`` before ``index`` (names stay 0, 1, ..., as torch)."""
        if not isinstance(module, Module):
            raise TypeError(f"{_typename(module)} is not a Module subclass")
        _insert(self, index, module)

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def pop(self, key):
        module = self[key]
        del self[key]
        return module

    def extend(self, modules):
        if not isinstance(modules, Iterable):
            raise TypeError(f"ModuleList.extend should be called with an iterable, but got {type(modules).__name__}")
        offset = len(self)
        for i, module in enumerate(modules):
            self.add_module(str(offset + i), module)
        return self


class ModuleDict(Module):
    """A dict of modules registered under their keys (``lora_A.default``), in insertion order."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def clear(self):
        self._modules.clear()

    def pop(self, key):
        module = self[key]
        del self[key]
        return module

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def update(self, modules):
        """Add or replace from a mapping (keys in its order) or an iterable of ``(key, module)`` pairs."""
        if not isinstance(modules, Iterable):
            raise TypeError(f"ModuleDict.update should be called with an iterable of key/value pairs, but got "
                            f"{type(modules).__name__}")
        if isinstance(modules, (Mapping, ModuleDict)):
            for key, module in modules.items():
                self[key] = module
            return
        for j, pair in enumerate(modules):
            if not isinstance(pair, Iterable):
                raise TypeError(f"ModuleDict update sequence element #{j} should be Iterable; is{type(pair).__name__}")  # (torch's words, no space)
            if len(pair) != 2:
                raise ValueError(f"ModuleDict update sequence element #{j} has length {len(pair)}; 2 is required")
            self[pair[0]] = pair[1]


class Sequential(Module):
    """Modules called one after another: ``Sequential(a, b, c)(x) == c(b(a(x)))``.

    Registered as ``0``, ``1``, ... or, from one ``OrderedDict``, under its keys (as torch).
    Indexing gives a module (a slice: a new Sequential of the same modules); deleting or inserting
    renames them 0, 1, ... again, as torch does.
    """

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for key, module in args[0].items():
                self.add_module(key, module)
        else:
            for i, module in enumerate(args):
                self.add_module(str(i), module)

    def _key(self, idx):
        return list(self._modules)[_abs_index(idx, len(self))]

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(OrderedDict(list(self._modules.items())[idx]))
        return self._modules[self._key(idx)]

    def __setitem__(self, idx, module):
        setattr(self, self._key(idx), module)

    def __delitem__(self, idx):
        keys = list(self._modules)[idx] if isinstance(idx, slice) else [self._key(idx)]
        for key in keys:
            delattr(self, key)
        _renumber(self)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __dir__(self):
        return [key for key in super().__dir__() if not key.isdigit()]

    def __add__(self, other):
        if not isinstance(other, Sequential):
            raise ValueError(f"add operator supports only objects of Sequential class, but {type(other)} is given.")
        combined = Sequential()
        for layer in chain(self, other):
            combined.append(layer)
        return combined

    def __iadd__(self, other):
        if not isinstance(other, Sequential):
            raise ValueError(f"add operator supports only objects of Sequential class, but {type(other)} is given.")
        offset = len(self)
        for i, module in enumerate(other):
            self.add_module(str(i + offset), module)
        return self

    def __mul__(self, other):
        """``seq * n``: the same modules n times over (shared, not copied), as torch."""
        if not isinstance(other, int):
            raise TypeError(f"unsupported operand type(s) for *: {type(self)} and {type(other)}")
        if other <= 0:
            raise ValueError(f"Non-positive multiplication factor {other} for {type(self)}")
        combined = Sequential()
        for _ in range(other):
            for layer in self:
                combined.append(layer)
        return combined

    __rmul__ = __mul__

    def __imul__(self, other):
        if not isinstance(other, int):
            raise TypeError(f"unsupported operand type(s) for *: {type(self)} and {type(other)}")
        if other <= 0:
            raise ValueError(f"Non-positive multiplication factor {other} for {type(self)}")
        layers = list(self)
        for _ in range(other - 1):
            for layer in layers:
                self.append(layer)
        return self

    def pop(self, key):
        module = self[key]
        del self[key]
        return module

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def insert(self, index, module):
        if not isinstance(module, Module):
            raise AssertionError(f"module should be of type: {Module}")
        n = len(self._modules)
        if not -n <= index <= n:
            raise IndexError(f"Index out of range: {index}")
        _insert(self, index + n if index < 0 else index, module)
        return self

    def extend(self, sequential):
        for layer in sequential:
            self.append(layer)
        return self

    def forward(self, input):
        for module in self:
            input = module(input)
        return input


class ParameterList(Module):
    """Parameters in a list, registered as ``0``, ``1``, ...; a plain Tensor put in becomes a
    Parameter (as torch). Other objects may be stored too (as plain attributes, not parameters)."""

    def __init__(self, values=None):
        super().__init__()
        self._size = 0
        if values is not None:
            self += values

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            out = type(self)()
            for i in range(*idx.indices(len(self))):
                out.append(self[i])
            return out
        return getattr(self, str(_abs_index(idx, len(self))))

    def __setitem__(self, idx, param):
        name = str(_abs_index(idx, len(self)))
        if isinstance(param, Tensor) and not isinstance(param, Parameter):
            param = Parameter(param)
        setattr(self, name, param)

    def __len__(self):
        return self._size

    def __iter__(self):
        return iter(self[i] for i in range(len(self)))

    def __iadd__(self, parameters):
        return self.extend(parameters)

    def __dir__(self):
        return [key for key in super().__dir__() if not key.isdigit()]

    def append(self, value):
        self._size += 1
        self[self._size - 1] = value
        return self

    def extend(self, values):
        if not isinstance(values, Iterable) or isinstance(values, Tensor):  # never unpack one Tensor
            raise TypeError(f"ParameterList.extend should be called with an iterable, but got {type(values).__name__}")
        for value in values:
            self.append(value)
        return self

    def extra_repr(self):
        lines = []
        for k, p in enumerate(self):
            if isinstance(p, Tensor):
                size = "x".join(str(s) for s in p.shape)
                kind = "Parameter" if isinstance(p, Parameter) else "Tensor"
                lines.append(f"  ({k}): {kind} containing: [{_dtype_repr(p.dtype)} of size {size}]")
            else:
                lines.append(f"  ({k}): Object of type: {type(p).__name__}")
        return "\n".join(lines)

    def __call__(self, *args, **kwargs):
        raise RuntimeError("ParameterList should not be called.")


def _dtype_repr(dtype):
    """A dtype as torch prints it (``torch.float32``), so reprs read the same."""
    return f"torch.{np.dtype(dtype).name}"


# torch.typename of a tensor of each dtype (ParameterDict's repr names tensors this way)
_TENSOR_TYPENAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor",
                     "bfloat16": "BFloat16Tensor",
                     "int64": "LongTensor", "int32": "IntTensor", "int16": "ShortTensor", "int8": "CharTensor",
                     "uint8": "ByteTensor", "bool": "BoolTensor"}


class ParameterDict(Module):
    """Parameters under string keys, registered under those keys (``named_parameters()`` gives
    ``"alpha"``, not an index); a plain Tensor put in becomes a Parameter (as torch). Keys keep their
    insertion order -- except that ``update`` from a plain dict adds them sorted, as torch's does."""

    def __init__(self, parameters=None):
        super().__init__()
        self._keys = {}
        if parameters is not None:
            self.update(parameters)

    def _key_to_attr(self, key):
        if not isinstance(key, str):
            raise TypeError("Index given to ParameterDict cannot be used as a key as it is not a string "
                            f"(type is '{type(key).__name__}')")
        return key

    def __getitem__(self, key):
        return getattr(self, self._key_to_attr(key))

    def __setitem__(self, key, value):
        self._keys[key] = None
        if isinstance(value, Tensor) and not isinstance(value, Parameter):
            value = Parameter(value)
        setattr(self, self._key_to_attr(key), value)

    def __delitem__(self, key):
        del self._keys[key]
        delattr(self, self._key_to_attr(key))

    def __len__(self):
        return len(self._keys)

    def __iter__(self):
        return iter(self._keys)

    def __reversed__(self):
        return reversed(self._keys)

    def __contains__(self, key):
        return key in self._keys

    def copy(self):
        """A new ParameterDict holding the same Parameters (not copies of them)."""
        return ParameterDict(OrderedDict((k, self[k]) for k in self._keys))

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def clear(self):
        for key in list(self._keys):
            del self[key]

    def pop(self, key):
        value = self[key]
        del self[key]
        return value

    def popitem(self):
        if not self._keys:
            raise KeyError("popitem(): dictionary is empty")
        key = next(reversed(self._keys))  # the last one added, as dict.popitem
        return key, self.pop(key)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def fromkeys(self, keys, default=None):
        return ParameterDict((k, default) for k in keys)

    def keys(self):
        return self._keys.keys()

    def items(self):
        return ((k, self[k]) for k in self._keys)

    def values(self):
        return (self[k] for k in self._keys)

    def update(self, parameters):
        """Add or replace from an OrderedDict or ParameterDict (in order), a plain mapping (sorted by
        key, as torch), or an iterable of ``(key, value)`` pairs."""
        if not isinstance(parameters, Iterable):
            raise TypeError("ParametersDict.update should be called with an iterable of key/value pairs, "
                            f"but got {type(parameters).__name__}")
        if isinstance(parameters, (OrderedDict, ParameterDict)):
            pairs = list(parameters.items())
        elif isinstance(parameters, Mapping):
            pairs = sorted(parameters.items())
        else:
            pairs = []
            for j, pair in enumerate(parameters):
                if not isinstance(pair, Iterable):
                    raise TypeError(f"ParameterDict update sequence element #{j} should be Iterable; "
                                    f"is{type(pair).__name__}")  # (torch's words, no space)
                if len(pair) != 2:
                    raise ValueError(f"ParameterDict update sequence element #{j} has length {len(pair)}; "
                                     "2 is required")
                pairs.append(pair)
        for key, value in pairs:
            self[key] = value

    def extra_repr(self):
        lines = []
        for k, p in self.items():
            if isinstance(p, Tensor):
                size = "x".join(str(s) for s in p.shape)
                kind = "Parameter" if isinstance(p, Parameter) else "Tensor"
                typename = "torch." + _TENSOR_TYPENAMES.get(np.dtype(p.dtype).name, str(p.dtype))
                lines.append(f"  ({k}): {kind} containing: [{typename} of size {size}]")
            else:
                lines.append(f"  ({k}): Object of type: {type(p).__name__}")
        return "\n".join(lines)

    def __call__(self, input):
        raise RuntimeError("ParameterDict should not be called.")

    def __or__(self, other):
        combined = self.copy()
        combined.update(other)
        return combined

    def __ror__(self, other):
        combined = other.copy()
        combined.update(self)
        return combined

    def __ior__(self, other):
        self.update(other)
        return self
