"""torch's deprecated call signatures (torch/tools/autograd/deprecated.yaml), which old tutorials and
optimizers still use: ``p.data.add_(-lr, p.grad)``, ``exp_avg_sq.addcmul_(1 - beta2, grad, grad)``,
``torch.addmm(beta, M, alpha, mat1, mat2)``. torch 2.13 still accepts them, with a UserWarning it gives once
per process (one ``TORCH_WARN_ONCE`` in its argument parser serves them all; each time after
``torch.set_warn_always(True)``).

Each function or method here is wrapped so that its own signature is tried first; only a call that fails to
bind (TypeError) is read against the deprecated one, then made in the current spelling. A call that fits
neither raises the original error."""
import functools
import numbers
import warnings

from .. import backends
from ..tensor import Tensor

# name: (the scalars before the tensors in the deprecated order, the tensors' names, whether `input`
# comes after the first scalar (the addmm family: ``addmm(beta, input, alpha, mat1, mat2)``))
_SIGNATURES = {
    "add": (("alpha",), ("other",), False),
    "sub": (("alpha",), ("other",), False),
    "addcmul": (("value",), ("tensor1", "tensor2"), False),
    "addcdiv": (("value",), ("tensor1", "tensor2"), False),
    "addmm": (("beta", "alpha"), ("mat1", "mat2"), True),
    "addbmm": (("beta", "alpha"), ("batch1", "batch2"), True),
    "baddbmm": (("beta", "alpha"), ("batch1", "batch2"), True),
    "addmv": (("beta", "alpha"), ("mat", "vec"), True),
    "addr": (("beta", "alpha"), ("vec1", "vec2"), True),
}
# the current signatures with torch's out_dtype form besides (torch's warning lists it)
_OUT_DTYPE_FORMS = {"addmm", "baddbmm"}
_warned = False
_MISSING = object()


def _forms(name):
    """The deprecated parameter orders of ``name`` (its function's, with ``input``): the addmm family has
    two, ``(beta, input, alpha, m1, m2)`` and ``(beta, input, m1, m2)``."""
    scalars, tensors, input_after_first = _SIGNATURES[name]
    if not input_after_first:
        return [("input",) + scalars + tensors]
    return [(scalars[0], "input") + scalars[1:] + tensors, (scalars[0], "input") + tensors]


def _is_number(value):
    """torch's ``Number``: a Python or NumPy number, or a 0-d tensor (read as its value)."""
    return isinstance(value, numbers.Number) or (isinstance(value, Tensor) and value.ndim == 0)


def _bind(params, args, kwargs, method):
    """``args``/``kwargs`` bound to the deprecated ``params`` (``self`` first for a method), or None."""
    if method:  # a method's self is bound first; the order of the rest is the function's without input
        params = ("input",) + tuple(p for p in params if p != "input")
        if "input" in kwargs:
            return None
    if len(args) > len(params):
        return None
    bound = dict(zip(params, args))
    for key, value in kwargs.items():
        if key in bound or key not in params:
            return None
        bound[key] = value
    return bound if len(bound) == len(params) else None


def _typed(bound, name):
    """Whether the bound values have the deprecated signature's types (add's ``other`` may be a number)."""
    scalars, tensors, _ = _SIGNATURES[name]
    if not isinstance(bound["input"], Tensor) or not all(_is_number(bound[s]) for s in scalars if s in bound):
        return False
    return all(isinstance(bound[t], Tensor) or (t == "other" and _is_number(bound[t])) for t in tensors)


def _signature_text(name, params, method, inplace):
    shown = name + "_" if inplace else name
    parts = [f"{'Tensor' if p in ('input',) + _SIGNATURES[name][1] else 'Number'} {p}"
             for p in params if not (method and p == "input")]
    return f"{shown}({', '.join(parts)}{'' if method or inplace else ', *, Tensor out = None'})"


# The overloads torch's parser shows for the arithmetic beside these (read off torch 2.13's messages): the method's
# (``self`` left out; the in-place method's are the same), then the function's. Their deprecated forms torch hides
# are those of add and sub, which share these parsers' words: ``x.subtract(2, y)`` is refused, not computed.
_TENSOR_OR_NUMBER = (("(Tensor other)", "(Number other)"),
                     ("(Tensor input, Tensor other, *, Tensor out = None)", "(Tensor input, Number other)"))
_WITH_ROUNDING = ("(Tensor other)", "(Tensor other, *, str rounding_mode)")
_FUNCTION_WITH_ROUNDING = ("(Tensor input, Tensor other, *, Tensor out = None)",
                           "(Tensor input, Tensor other, *, str rounding_mode, Tensor out = None)")
_NUMBER_FIRST = ("(Tensor input, Tensor other, *, Tensor out = None)", "(Number self, Tensor other, *, Tensor out = None)",
                 "(Tensor input, Number other, *, Tensor out = None)")
_OVERLOAD_TEXTS = {
    "subtract": (("(Tensor other, *, Number alpha = 1)", "(Number other, Number alpha = 1)"),
                 ("(Tensor input, Tensor other, *, Number alpha = 1, Tensor out = None)",
                  "(Tensor input, Number other, Number alpha = 1)")),
    "rsub": ((), ("(Tensor input, Tensor other, *, Number alpha = 1)", "(Tensor input, Number other, Number alpha = 1)")),
    "mul": (("(Tensor other)",), ("(Tensor input, Tensor other, *, Tensor out = None)",)),
    "multiply": _TENSOR_OR_NUMBER, "true_divide": _TENSOR_OR_NUMBER, "floor_divide": _TENSOR_OR_NUMBER,
    "div": (_WITH_ROUNDING + ("(Number other, *, str rounding_mode)",),
            _FUNCTION_WITH_ROUNDING + ("(Tensor input, Number other, *, str rounding_mode)",)),
    "divide": (_WITH_ROUNDING + ("(Number other)", "(Number other, *, str rounding_mode)"),
               _FUNCTION_WITH_ROUNDING + ("(Tensor input, Number other)",
                                          "(Tensor input, Number other, *, str rounding_mode)")),
    "remainder": (_TENSOR_OR_NUMBER[0], ("(Tensor input, Tensor other, *, Tensor out = None)",
                                         "(Number self, Tensor other)",
                                         "(Tensor input, Number other, *, Tensor out = None)")),
    "fmod": (_TENSOR_OR_NUMBER[0], ("(Tensor input, Tensor other, *, Tensor out = None)",
                                    "(Tensor input, Number other, *, Tensor out = None)")),
    "xlogy": (_TENSOR_OR_NUMBER[0], _NUMBER_FIRST),
    "pow": (("(Tensor exponent)", "(Number exponent)"),
            tuple(text.replace("other", "exponent") for text in _NUMBER_FIRST)),
    "sort": (("(*, bool stable, int dim = -1, bool descending = False)", "(int dim = -1, bool descending = False)"),
             ("(Tensor input, *, bool stable, int dim = -1, bool descending = False, tuple of Tensors out = None)",
              "(Tensor input, int dim = -1, bool descending = False, *, tuple of Tensors out = None)")),
    "argsort": (("(*, bool stable, int dim = -1, bool descending = False)", "(int dim = -1, bool descending = False)"),
                ("(Tensor input, *, bool stable, int dim = -1, bool descending = False, Tensor out = None)",
                 "(Tensor input, int dim = -1, bool descending = False)")),
}
# torch's overloads that take this keyword take every other argument but the input as a keyword too:
# ``torch.sort(x, 0, stable=True)`` fits neither of sort's signatures (``sort(x, dim=0, stable=True)`` does)
_KEYWORD_ONLY_OVERLOAD = {"sort": "stable", "argsort": "stable"}
# torch's parsers that have one signature in all raise its first problem directly (``mul() takes 1 positional
# argument but 2 were given``); the others list their overloads unless one alone fits the argument count
_SINGLE_SIGNATURE = {"mul"}
# the Tensor parameters of these take a Python number too (python_arg_parser's should_allow_numbers_as_tensors)
_NUMBERS_AS_TENSORS = {"add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "floor_divide"}


def _current_texts(name, method, inplace):
    if name in _OVERLOAD_TEXTS:
        return list(_OVERLOAD_TEXTS[name][0 if method or inplace else 1])
    scalars, tensors, _ = _SIGNATURES[name]
    shown = name + "_" if inplace else name
    head = ([] if method else ["Tensor input"]) + [f"Tensor {t}" for t in tensors]
    tail = [f"Number {s} = 1" for s in scalars] + ([] if method or inplace else ["Tensor out = None"])
    texts = [f"{shown}({', '.join(head)}, *, {', '.join(tail)})"]
    if name in _OUT_DTYPE_FORMS and not method and not inplace:
        texts.append(f"{shown}({', '.join(head)}, torch.dtype out_dtype, *, {', '.join(tail)})")
    return texts


def _warn_once(name, params, method, inplace):
    global _warned
    if _warned and not backends.is_warn_always_enabled():
        return
    _warned = True
    current = "".join(f"\n\t{text}" for text in _current_texts(name, method, inplace))
    warnings.warn(f"This overload of {name + '_' if inplace else name} is deprecated:\n\t"
                  f"{_signature_text(name, params, method, inplace)}\nConsider using one of the following "
                  f"signatures instead:{current}", UserWarning, stacklevel=3)


def _scalar(value):
    return value.item() if isinstance(value, Tensor) else value


def accepting_deprecated(fn, name, *, method, inplace=False):
    """``fn`` (the function or method ``name``, in-place if ``inplace``) also accepting torch's deprecated
    signatures. The current signature is tried first: the common call costs one frame, no checks."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TypeError as error:
            out = kwargs.pop("out", None) if not (method or inplace) else None
            for params in _forms(name):
                bound = _bind(params, args, kwargs, method)
                if bound is not None and _typed(bound, name):
                    break
            else:
                refusal = _torch_refusal(name, method, inplace, args[1:] if method else args, dict(kwargs, **(
                    {} if out is None else {"out": out})))
                if refusal is None:
                    raise error
                raise TypeError(refusal) from None
        _warn_once(name, params, method, inplace)
        scalars, tensors, _ = _SIGNATURES[name]
        given = {s: _scalar(bound[s]) for s in scalars if s in bound}
        if out is not None:
            given["out"] = out
        return fn(bound["input"], *(bound[t] for t in tensors), **given)
    return call


# ---- a call that fits no signature: torch's TypeError (python_arg_parser's print_error) -------------------
def _parameters(text):
    """The parameters of a signature text ``(Tensor other, *, Number alpha = 1)``: (type, name, keyword only,
    required) each."""
    parameters, keyword_only = [], False
    for entry in text[text.index("(") + 1:-1].split(", "):
        if entry == "*":
            keyword_only = True
            continue
        declared, _, default = entry.partition(" = ")
        kind, _, parameter = declared.rpartition(" ")
        parameters.append((kind, parameter, keyword_only, not default))
    return parameters


def _torch_refusal(name, method, inplace, args, kwargs):
    """torch's message for a call that fits none of ``name``'s signatures (the deprecated ones are hidden from
    it): one signature that the argument count fits reports its first problem, else all are listed (ATen's
    format_invalid_args). None where this reading finds no problem (the original error stands)."""
    shown = name + "_" if inplace else name
    texts = _current_texts(name, method, inplace)
    if name in _SINGLE_SIGNATURE:
        return _first_problem(shown, _parameters(texts[0]), args, kwargs, name in _NUMBERS_AS_TENSORS)
    count = len(args) + len(kwargs)
    plausible = [t for t in texts if sum(r for *_, r in _parameters(t)) <= count <= len(_parameters(t))]
    if len(plausible) == 1:
        return _first_problem(shown, _parameters(plausible[0]), args, kwargs, name in _NUMBERS_AS_TENSORS)
    return _invalid_combination(shown, [t[len(shown):] if t.startswith(shown) else t for t in texts], args, kwargs)


def _fits(kind, value, numbers_as_tensors):
    """Whether torch's parser takes ``value`` for a parameter of ``kind`` (a 0-d tensor is a Number)."""
    if kind == "Tensor":
        return isinstance(value, Tensor) or (numbers_as_tensors and _is_number(value))
    if kind == "Number":
        return _is_number(value)
    if kind == "str":
        return isinstance(value, str)
    return True


def _first_problem(shown, parameters, args, kwargs, numbers_as_tensors=False):
    """torch's FunctionSignature::parse errors, in its order: too many positional arguments; then parameter by
    parameter a missing or mistyped one; then a keyword left over (unknown, or given twice)."""
    positional = [p for p in parameters if not p[2]]
    if len(args) > len(positional):
        # (torch's fewest counts the required keywords too: div(x, y, z, rounding_mode=m) "takes from 3 to 2", and
        # that form says "were" whatever the count)
        fewest, most = sum(required for *_, required in parameters), len(positional)
        if fewest != most:
            return f"{shown}() takes from {fewest} to {most} positional arguments but {len(args)} were given"
        plural = "" if most == 1 else "s"
        return (f"{shown}() takes {most} positional argument{plural} but {len(args)} "
                f"{'was' if len(args) == 1 else 'were'} given")
    for position, (kind, parameter, _, required) in enumerate(parameters):
        by_position = position < len(args)
        given = args[position] if by_position else kwargs.get(parameter, _MISSING)
        if given is _MISSING:
            if not required:
                continue
            missing = [f'"{p[1]}"' for p in parameters[position:] if p[3]]
            # (torch's plural is the other way round: "1 ... arguments", "2 ... argument")
            return (f"{shown}() missing {len(missing)} required positional argument{'s' if len(missing) == 1 else ''}: "
                    f"{', '.join(missing)}")
        if given is None or _fits(kind, given, numbers_as_tensors):
            continue
        where = f" (position {position + 1})" if by_position else ""
        return f"{shown}(): argument '{parameter}'{where} must be {kind}, not {type(given).__name__}"
    names = [p[1] for p in parameters]
    for key in kwargs:
        if key not in names:
            return f"{shown}() got an unexpected keyword argument '{key}'"
        if names.index(key) < len(args):
            return f"{shown}() got multiple values for argument '{key}'"
    return None


def _invalid_combination(shown, options, args, kwargs):
    """ATen's format_invalid_args (torch/csrc/utils/invalid_arguments.cpp), quirks kept: it splits a signature
    at ", " so that ``*`` and ``Number alpha = 1`` count as arguments (named ``*`` and ``1``), and marks each
    argument whose Python type name is not the declared type between ``!``."""
    message = f"{shown}() received an invalid combination of arguments - "
    if len(options) == 1:
        arguments = _split_option(options[0])
        unmatched = _unmatched_keywords(arguments, kwargs)
        if unmatched:
            return message + "got unrecognized keyword arguments: " + ", ".join(unmatched)
        described = _marked(arguments, args, kwargs) if len(arguments) == _count(args, kwargs) else \
            _described(args, kwargs)
        return message + f"got {described}, but expected {options[0]}"
    message += f"got {_described(args, kwargs)}, but expected one of:\n"
    for option in options:
        message += f" * {option}\n"
        arguments = _split_option(option)
        if len(arguments) == _count(args, kwargs):
            unmatched = _unmatched_keywords(arguments, kwargs)
            message += ("      didn't match because some of the keywords were incorrect: " + ", ".join(unmatched)
                        if unmatched else "      didn't match because some of the arguments have invalid types: "
                        + _marked(arguments, args, kwargs)) + "\n"
    return message


def _count(args, kwargs):
    return len(args) + len(kwargs)


def _split_option(option):
    """(type, name) of each ", "-separated piece of ``(...)``, as ATen's _parseOption reads it."""
    pieces = []
    for piece in option[1:-1].split(", "):
        kind, _, parameter = piece.rpartition(" ")
        pieces.append((kind or piece, parameter))
    return pieces


def _unmatched_keywords(arguments, kwargs):
    """ATen's _tryMatchKwargs: a keyword matches only among the last ``len(kwargs)`` argument names."""
    names = [parameter for _, parameter in arguments[max(len(arguments) - len(kwargs), 0):]]
    return [key for key in kwargs if key not in names]


def _marked(arguments, args, kwargs):
    """ATen's _formattedArgDesc: each argument's type name, ``!``-marked where it is not the declared type (a
    keyword one is read under the name at its position: _unmatched_keywords found none amiss)."""
    given = [("", a) for a in args] + [(f"{name}=", kwargs[name]) for _, name in arguments[len(args):]]
    parts = [prefix + type(value).__name__ for prefix, value in given]
    marked = [text if type(value).__name__ == kind else f"!{text}!"
              for text, (kind, _), (_, value) in zip(parts, arguments, given)]
    return f"({', '.join(marked)})"


def _described(args, kwargs):
    """ATen's _argDesc (its ", " after the last keyword left when there are no positional arguments)."""
    text = "".join(f"{type(a).__name__}, " for a in args) + "".join(f"{k}={type(v).__name__}, "
                                                                     for k, v in kwargs.items())
    return f"({text[:-2] if args else text})"


def refusing_as_torch(fn, name, *, method, inplace=False):
    """``fn`` (``name``'s function or method) whose calls that fail to bind are refused in torch's parser's words
    (``_torch_refusal``) rather than Python's (which count ``self``), as are those that give a keyword-only
    overload's keyword beside positional arguments (``_KEYWORD_ONLY_OVERLOAD``). The common call costs one frame."""
    keyword = _KEYWORD_ONLY_OVERLOAD.get(name)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            if keyword in kwargs and len(args) > 1:  # (the input, or a method's self, is args[0])
                raise TypeError(f"{name}() takes {keyword} only with the other arguments as keywords")
            return fn(*args, **kwargs)
        except TypeError as error:
            refusal = _torch_refusal(name, method, inplace, args[1:] if method else args, kwargs)
            if refusal is None:
                raise error
            raise TypeError(refusal) from None
    return call


def install(namespace):
    """Wraps the top-level functions in ``namespace`` (minilora's: ``addmv_`` is torch's one top-level in-place
    form of these) and the Tensor methods, in-place included."""
    for name in _SIGNATURES:
        namespace[name] = accepting_deprecated(namespace[name], name, method=False)
        if name + "_" in namespace:
            namespace[name + "_"] = accepting_deprecated(namespace[name + "_"], name, method=False, inplace=True)
        setattr(Tensor, name, accepting_deprecated(getattr(Tensor, name), name, method=True))
        setattr(Tensor, name + "_", accepting_deprecated(getattr(Tensor, name + "_"), name, method=True,
                                                         inplace=True))
    for name in _OVERLOAD_TEXTS:
        if name in namespace:
            namespace[name] = refusing_as_torch(namespace[name], name, method=False)
        if _OVERLOAD_TEXTS[name][0]:
            for method_name, inplace in ((name, False), (name + "_", True)):
                if hasattr(Tensor, method_name):  # (sort has no in-place form)
                    setattr(Tensor, method_name, refusing_as_torch(getattr(Tensor, method_name), name, method=True,
                                                                   inplace=inplace))
