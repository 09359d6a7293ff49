"""``torch._dynamo.eval_frame.OptimizedModule``: what ``torch.compile(model)`` returns for a module.

minilora compiles nothing (it runs every op eagerly, as NumPy/CuPy calls); the wrapper is kept for
what scripts rely on: the model sits at ``._orig_mod``, so ``state_dict()`` keys start with
``_orig_mod.`` (nanoGPT strips that prefix when it loads a checkpoint), parameters and buffers are
the original module's own (an optimizer built on either trains both), ``train()``/``eval()`` reach the
original, and any other attribute read or written is the original module's.

The one thing eager running cannot give is inductor's random numbers: torch's default backend draws a
compiled model's dropout masks with its own generator (seeded from torch's), so torch's compiled training
run with dropout draws other masks than torch's eager one (``backend="eager"``/``"aot_eager"``, or
``torch._inductor.config.fallback_random = True``, give eager's). minilora draws eager torch's masks, and
says so once per process (a UserWarning) when an inductor-compiled module with a Dropout that drops runs
in training mode, rather than differ from torch's compiled numbers silently.
"""
import warnings

from .layers import Dropout
from .module import Module

INDUCTOR_RANDOM_NOTE = (
    "torch.compile's inductor backend draws a compiled model's dropout masks with its own random numbers: "
    "minilora runs the model eagerly, so a seeded training run draws eager torch's masks, not compiled torch's "
    "(torch draws eager's too with backend='eager' or torch._inductor.config.fallback_random = True)")
_inductor_random_noted = False


def _note_inductor_random(module):
    """Warn once per process that ``module`` (training, with a Dropout of p > 0) draws eager torch's masks."""
    global _inductor_random_noted
    if any(isinstance(m, Dropout) and m.p > 0 for m in module.modules()):
        _inductor_random_noted = True
        warnings.warn(INDUCTOR_RANDOM_NOTE, stacklevel=4)


class OptimizedModule(Module):
    """The original module, called through unchanged (see the module docstring: no compiling)."""
    _opt_mod_attributes = {"_orig_mod", "dynamo_ctx", "forward", "_super_module_initialized", "_inductor"}

    def __init__(self, mod, dynamo_ctx=None, *, _inductor=False):
        object.__setattr__(self, "_orig_mod", mod)  # (read by ``training`` while Module.__init__ runs)
        object.__setattr__(self, "_super_module_initialized", False)
        super().__init__()
        object.__setattr__(self, "_super_module_initialized", True)
        del self.__dict__["_orig_mod"]
        self._orig_mod = mod  # registered as the child module: ``_orig_mod.`` in every key
        self.dynamo_ctx = dynamo_ctx
        self._inductor = _inductor  # (compiled by torch's default backend: its random numbers are its own)

    def forward(self, *args, **kwargs):
        if self._inductor and not _inductor_random_noted and self.training:
            _note_inductor_random(self._orig_mod)
        return self._orig_mod(*args, **kwargs)  # (through __call__: the original's hooks run)

    @property
    def training(self):
        return self._orig_mod.training

    @training.setter
    def training(self, value):
        if self._super_module_initialized:  # (Module.__init__'s default is not the original's mode)
            self._orig_mod.training = value

    def __len__(self):
        if not hasattr(type(self._orig_mod), "__len__"):
            raise TypeError(f"{type(self._orig_mod).__name__} does not support len()")
        return len(self._orig_mod)

    def __getattr__(self, name):
        modules = self.__dict__.get("_modules")
        if modules is None:  # (not initialised yet: copy and pickle probe before __init__ ran)
            raise AttributeError(f"'OptimizedModule' object has no attribute '{name}'")
        if name == "_orig_mod":
            return modules["_orig_mod"]
        return getattr(self._orig_mod, name)

    def __reduce__(self):
        return _rewrapped, (self._orig_mod, self.dynamo_ctx, self._inductor)  # (as torch's: copies wrap a copy)

    def __setattr__(self, name, value):
        if hasattr(type(self), name) or name in self._opt_mod_attributes:
            return super().__setattr__(name, value)
        return setattr(self._orig_mod, name, value)

    def __delattr__(self, name):
        if hasattr(type(self), name) or name in self._opt_mod_attributes:
            return super().__delattr__(name)
        return delattr(self._orig_mod, name)

    def __dir__(self):
        own = dir(self._orig_mod)
        return own + [name for name in super().__dir__() if name not in own]


def _rewrapped(mod, dynamo_ctx, inductor):
    return OptimizedModule(mod, dynamo_ctx, _inductor=inductor)
