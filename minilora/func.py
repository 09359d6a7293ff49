"""``torch.func`` as its tutorials use it (per-sample gradients, model ensembling, MAML-style code, Jacobians
and Hessians): ``functional_call``, ``stack_module_state``, ``grad``, ``grad_and_value``, ``vjp``, ``jacrev``,
``jacfwd``, ``hessian``, ``jvp``, ``linearize`` and ``vmap``.

torch.func transforms functions by running them on batched and dual "levels" of its dispatcher.
minilora computes the same values on its one engine: ``grad`` differentiates ``func`` with
``autograd.grad`` (its inputs taken as fresh leaves, or as views where an outer transform follows them,
so ``grad(grad(f))`` and ``vmap(grad(f))`` compose; a result keeps its graph where it reaches a tensor that
requires grad beyond those leaves, a closed-over parameter, as torch's: ``_kept``); the forward-mode
transforms compute the same values by reverse mode (``jacfwd`` is ``jacrev``'s Jacobian, ``jvp`` the
double-vjp trick: float64 results agree with torch's to rounding, a zero's sign may differ; as torch's they hold
its one forward-AD level, so ``torch.autograd.forward_ad`` inside or around them refuses in torch's words), and
``vmap`` calls ``func`` once per index of the mapped dimension and stacks the results: what torch's batching rules
compute, sample by sample (a sum or a product may round in another order than a batched kernel's, an elementwise
function as torch's vectorized loop rounds a short tail). Under ``randomness='error'`` (torch's default) a random
draw from the global generator in ``func`` raises as in torch; 'same' gives every sample the draws of the first, as
torch's; 'different' gives sample i its part of one draw for the whole
batch, laid out as torch's batched random ops draw it (``_BatchedDraws``). While ``func`` runs, ``_Batching``
follows which tensors are batched (torch's BatchedTensor), for torch's refusals (``.item()``, ``if`` on a
batched tensor, an in-place write of one into an unbatched tensor) and so that an unbatched input changed in
place changes once, as torch's.

One thing torch 2.13 computes otherwise, and minilora does not copy: ``hessian`` / ``jacrev(jacrev)`` of
``layer_norm`` with a weight, taken with respect to the input and the weight -- torch's mixed block differs
from its own ``autograd.functional.hessian`` and from finite differences; minilora's agrees with both.
"""
import contextlib
import functools
import math
import sys
import weakref

import numpy as np

from . import autograd, factories, forward_ad, random
from .ops import stack
from .size import torch_spelling
from .tensor import Tensor, enable_grad, is_grad_enabled

_tensor_module = sys.modules[Tensor.__module__]  # (the module: the package's ``tensor`` is the factory function)

__all__ = ["functional_call", "stack_module_state", "grad", "grad_and_value", "vjp", "jacrev", "jacfwd", "hessian",
           "jvp", "linearize", "vmap"]


# ---- pytrees: tensors in (nested) tuples, lists and dicts --------------------------------------------
def _leaves_of(tree):
    if isinstance(tree, Tensor):
        return [tree]
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _leaves_of(item)]
    if isinstance(tree, dict):
        return [leaf for item in tree.values() for leaf in _leaves_of(item)]
    return []


def _map(fn, tree):
    """``tree`` with each tensor ``t`` replaced by ``fn(t)``."""
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, (tuple, list)):
        mapped = [_map(fn, item) for item in tree]
        return type(tree)(*mapped) if hasattr(tree, "_fields") else type(tree)(mapped)
    if isinstance(tree, dict):
        return type(tree)((key, _map(fn, value)) for key, value in tree.items())
    return tree


# ---- functional_call ------------------------------------------------------------------------------------
def _owner(module, name):
    """(the submodule that holds ``name``'s last part, that part)."""
    *path, last = name.split(".")
    for part in path:
        module = getattr(module, part)
    return module, last


def _swap(module, name, value):
    """Put ``value`` where ``module``'s ``name`` (a dotted parameter, buffer or attribute name) is; return
    what was there."""
    owner, last = _owner(module, name)
    for table in (owner._parameters, owner._buffers):
        if last in table:
            old, table[last] = table[last], value
            return old
    old = getattr(owner, last)
    object.__setattr__(owner, last, value)
    return old


def _tied_names(module):
    """{name: every name of the same tensor}, over parameters and buffers (shared weights)."""
    names = {}
    for name, t in list(module.named_parameters(remove_duplicate=False)) + \
            list(module.named_buffers(remove_duplicate=False)):
        names.setdefault(id(t), []).append(name)
    return {name: group for group in names.values() for name in group}


def functional_call(module, parameter_and_buffer_dicts, args=None, kwargs=None, *, tie_weights=True,
                    strict=False):
    """Run ``module(*args, **kwargs)`` with the given tensors in place of its parameters and buffers (by their
    ``state_dict`` names; a dict, or a tuple of dicts), then put its own back."""
    dicts = parameter_and_buffer_dicts
    dicts = dicts if isinstance(dicts, (tuple, list)) else (dicts,)
    repeated = sorted({key for k, values in enumerate(dicts) for key in values
                       if any(key in other for other in dicts[k + 1:])}, key=[k for d in dicts for k in d].index)
    if repeated:
        raise ValueError(f"{repeated} appeared in multiple dictionaries; behavior of functional call is ambiguous")
    given = {key: value for values in dicts for key, value in values.items()}
    if tie_weights:
        tied = _tied_names(module)
        for key, value in list(given.items()):
            for other in tied.get(key, ()):
                if other in given and given[other] is not value:
                    raise ValueError(f"functional_call got multiple values for keys ['{key}', '{other}'], which "
                                     "are tied. Consider using tie_weights=False")
                given.setdefault(other, value)
    if strict:
        expected = {name for name, _ in module.named_parameters(remove_duplicate=False)} | \
            {name for name, _ in module.named_buffers(remove_duplicate=False)}
        missing, unexpected = sorted(expected - set(given)), sorted(set(given) - expected)
        problems = [f"{what} key(s): {', '.join(map(repr, keys))}."
                    for what, keys in (("Unexpected", unexpected), ("Missing", missing)) if keys]
        if problems:
            raise RuntimeError(f"Error(s) in reparametrizing for {type(module).__name__}:\n\t" + "\n\t".join(problems))
    args = () if args is None else (args if isinstance(args, tuple) else (args,))
    saved = {}
    try:
        for name, value in given.items():
            saved[name] = _swap(module, name, value)
        return module(*args, **(kwargs or {}))
    finally:
        for name, value in saved.items():
            _swap(module, name, value)


def stack_module_state(models):
    """The parameters and the buffers of several models of one architecture, each stacked along a new first
    dimension (the parameters detached and requiring grad again, as torch's): ``(params, buffers)``."""
    models = list(models)
    if not models:
        raise RuntimeError("stack_module_state: Expected at least one model, got 0.")
    if not all(m.training for m in models) and any(m.training for m in models):
        raise RuntimeError("stack_module_state: Expected all models to have the same training/eval mode.")
    if not all(type(m) is type(models[0]) for m in models):
        raise RuntimeError("stack_module_state: Expected all models to be of the same class.")
    first = models[0]
    params = {name: stack([dict(m.named_parameters())[name].detach() for m in models]).requires_grad_()
              for name, _ in first.named_parameters()}
    buffers = {name: stack([dict(m.named_buffers())[name] for m in models])
               for name, _ in first.named_buffers()}
    return params, buffers


# ---- grad, vjp, jacrev --------------------------------------------------------------------------------
def _differentiable(tree):
    """``tree``'s tensors as the variables to differentiate with respect to: fresh leaves, or, for a tensor
    an outer transform follows (it requires grad while grad mode is on), a view of it (torch's levels)."""
    follow = is_grad_enabled()
    return _map(lambda t: _follows(t.view_as(t) if follow and t.requires_grad else t.detach().requires_grad_(), [t]),
                tree)


def _argnums(argnums, count):
    """The argument numbers ``argnums`` names, after torch's checks in its words."""
    if isinstance(argnums, tuple):
        if len(set(argnums)) != len(argnums):
            raise RuntimeError(f"argnums elements must be unique, got {argnums}")
        if not argnums:
            raise RuntimeError("argnums must be non-empty")
    elif not isinstance(argnums, int):
        raise RuntimeError(f"argnums must be int or Tuple[int, ...], got: {type(argnums)}")
    numbers = argnums if isinstance(argnums, tuple) else (argnums,)
    for n in numbers:
        if not isinstance(n, int):
            raise RuntimeError(f"argnum must be int, got: {type(n)}")
        if not -count <= n < count:
            raise RuntimeError(f"Got argnum={n}, but only {count} positional inputs")
    return numbers


def _outer_graph(inputs, outputs, leaves):
    """Whether a result must stay differentiable (grad mode on, as the transform was called): an outer transform
    (or the caller) follows an input, or ``func``'s outputs depend on another tensor that requires grad than
    the transform's own ``leaves`` -- a closed-over parameter, to which torch's result keeps its graph (a
    gradient penalty trains the model through it)."""
    if not is_grad_enabled():
        return False
    return any(t.requires_grad for t in _leaves_of(inputs)) or _reaches_other_leaves(_leaves_of(outputs), leaves)


def _kept(tree, leaves, outer):
    """A transform's results: with their graph only where an outer graph is kept and it reaches past the transform's
    own ``leaves`` (as torch's: the gradient of ``sin(x).sum() + w.sum()`` does not require grad, ``w``'s does not
    enter it)."""
    if not outer:
        return _map(Tensor.detach, tree)
    return _map(lambda t: t if _reaches_other_leaves([t], leaves) else t.detach(), tree)


_finished_leaves = {}  # id -> weak reference: the leaves of transforms that have returned (see _finished)


def _finished(leaves):
    """A transform returns: its own leaves are no tensors an outer graph follows (they are torch's levels that
    ended), so a later transform's graph that reaches them keeps nothing for them."""
    if len(_finished_leaves) > 10000:  # (forget the leaves gone)
        for key in [key for key, ref in _finished_leaves.items() if ref() is None]:
            del _finished_leaves[key]
    for t in _leaves_of(leaves):
        if t._ctx is None:  # (a fresh leaf; a view of a followed input leads on to that input)
            _finished_leaves[id(t)] = weakref.ref(t)


def _is_finished(t):
    ref = _finished_leaves.get(id(t))
    return ref is not None and ref() is t


def _reaches_other_leaves(outputs, leaves):
    """Does the graph of ``outputs`` reach a tensor that requires grad, other than ``leaves`` and the leaves of
    transforms that have returned?"""
    ours = {id(t) for t in _leaves_of(leaves)}
    stack, seen = [t._ctx for t in outputs if t._ctx is not None], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for x, parent in zip(getattr(node, "inputs", ()), getattr(node, "parents", ())):
            if parent is not None:
                stack.append(parent)
            elif isinstance(x, Tensor) and x._requires_grad and id(x) not in ours and not _is_finished(x):
                return True
    return False


def grad_and_value(func, argnums=0, has_aux=False):
    """``func``'s gradient with respect to the argument(s) ``argnums`` (shaped as they are) and its value."""
    def wrapper(*args, **kwargs):
        numbers = _argnums(argnums, len(args))
        given = [args, kwargs]  # (any argument an outer transform follows, chosen or not: the gradient depends on it)
        args = list(args)
        for n in numbers:
            args[n] = _differentiable(args[n])
        with enable_grad():
            output = func(*args, **kwargs)
        aux = None
        if has_aux:
            if not (isinstance(output, tuple) and len(output) == 2):
                raise RuntimeError("grad_and_value(f)(*args): output of function f should be a tuple: (output, aux) "
                                   "if has_aux is True")
            output, aux = output
        if not isinstance(output, Tensor):
            raise RuntimeError(f"grad_and_value(f)(*args): Expected f(*args) to return a Tensor, got {type(output)}")
        if output.ndim != 0:
            raise RuntimeError(f"grad_and_value(f)(*args): Expected f(*args) to return a scalar Tensor, got tensor "
                               f"with {output.ndim} dims. Maybe you wanted to use the vjp or jacrev APIs instead?")
        chosen = [args[n] for n in numbers]
        leaves = _leaves_of(chosen)
        outer = _outer_graph(given, [output, aux], leaves)
        found = autograd.grad(output, leaves, create_graph=outer, allow_unused=True) if output.requires_grad \
            else (None,) * len(leaves)
        found = iter([t.new_zeros(t.shape) if g is None else g for g, t in zip(found, leaves)])
        grads = _map(lambda _: next(found), chosen)
        grads = _kept(tuple(grads) if isinstance(argnums, tuple) else grads[0], leaves, outer)
        _follows(grads, leaves)
        if not outer:  # (torch unwraps the value and aux from grad's level: no graph to the inputs)
            output, aux = output.detach(), _map(Tensor.detach, aux)
        _finished(leaves)
        return (grads, (output, aux)) if has_aux else (grads, output)
    return wrapper


def grad(func, argnums=0, has_aux=False):
    """The gradient of a function returning a scalar, with respect to its argument(s) ``argnums``:
    ``grad(f)(x)`` is df/dx, shaped as ``x`` (a dict of tensors gives a dict of gradients)."""
    with_value = grad_and_value(func, argnums, has_aux)

    def wrapper(*args, **kwargs):
        grads, value = with_value(*args, **kwargs)
        return (grads, value[1]) if has_aux else grads
    return wrapper


def vjp(func, *primals, has_aux=False):
    """``(func(*primals), vjp_fn)``: ``vjp_fn(cotangents)`` is the tuple of the vector-Jacobian products with
    respect to each primal."""
    leaves = [_differentiable(p) for p in primals]
    with enable_grad():
        output = func(*leaves)
    aux = None
    if has_aux:
        output, aux = output
    flat_leaves = _leaves_of(leaves)
    outer = _outer_graph(primals, [output, aux], flat_leaves)

    def vjp_fn(cotangents):
        outputs, vectors = _leaves_of(output), _leaves_of(cotangents)
        found = autograd.grad(outputs, flat_leaves, vectors, retain_graph=True, create_graph=outer,
                              allow_unused=True)
        found = iter([t.new_zeros(t.shape) if g is None else g for g, t in zip(found, flat_leaves)])
        return _follows(_kept(tuple(_map(lambda _: next(found), p) for p in leaves), flat_leaves, outer),
                        [outputs, vectors])
    value = output
    if not outer:  # (as grad's: the value and aux leave vjp's level without a graph)
        value, aux = _map(Tensor.detach, output), _map(Tensor.detach, aux)
    _finished(flat_leaves)
    return (value, vjp_fn, aux) if has_aux else (value, vjp_fn)


def _checked_chunk_size(chunk_size, name):
    """torch's check; a chunk size only bounds the memory of torch's batched backward, so minilora's
    one-row-at-a-time Jacobian gives the same values whatever it is."""
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size > 0):
        raise ValueError(f"{name}: `chunk_size` should be greater than 0.")


def _output_tensors(output, words):
    """``output``'s tensors; anything else in it (a number, a string) refused in torch's words."""
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _output_tensors(item, words)]
    if isinstance(output, dict):
        return [t for item in output.values() for t in _output_tensors(item, words)]
    if not isinstance(output, Tensor):
        raise RuntimeError(f"{words}: expected f(*primals) to return only tensors, got unsupported type "
                           f"{type(output)}")
    return [output]


def _split_aux(output, has_aux, words):
    if not has_aux:
        return output, None
    if not (isinstance(output, tuple) and len(output) == 2):
        raise RuntimeError(f"{words}: output of function f should be a tuple: (output, aux) if has_aux is True")
    return output


def _forward_checked(trees):
    """jacfwd's and jvp's check: forward mode differentiates floating point (and complex) primals only."""
    for t in _leaves_of(trees):
        if not (t.is_floating_point() or t.is_complex()):
            raise ValueError(f"Expected primal to be floating point or complex, but got: torch.{t.dtype}")


def _jacobian(func, argnums, has_aux, words, forward):
    """jacrev's and jacfwd's values (the same Jacobian: torch's two modes differ in cost, not in value), by
    reverse mode, one backward per output element: the output's structure with each tensor replaced by
    its Jacobian blocks (``output.shape + input.shape``) in the structure of the chosen argument(s)."""
    def wrapper(*args):
        numbers = _argnums(argnums, len(args))
        if forward:
            _forward_checked([args[n] for n in numbers])
        given = args  # (as grad's: any argument)
        args = list(args)
        for n in numbers:
            args[n] = _differentiable(args[n])
        chosen = [args[n] for n in numbers]
        with enable_grad():
            output, aux = _split_aux(func(*args), has_aux, words)
        outputs, inputs = _output_tensors(output, words), _leaves_of(chosen)
        outer = _outer_graph(given, [outputs, aux], inputs)
        blocks = iter(autograd._jacobians(outputs, inputs, strict=False, create_graph=outer))

        def per_output(_):
            row = iter(next(blocks))
            trees = [_map(lambda _: next(row), tree) for tree in chosen]
            return tuple(trees) if isinstance(argnums, tuple) else trees[0]
        result = _follows(_kept(_map(per_output, output), inputs, outer), inputs)
        _finished(inputs)
        if has_aux:
            return result, (aux if outer else _map(Tensor.detach, aux))
        return result
    return wrapper


def jacrev(func, argnums=0, *, has_aux=False, chunk_size=None, _preallocate_and_copy=False):
    """The Jacobian of ``func`` with respect to the argument(s) ``argnums``, by reverse mode: for each output
    tensor, ``output.shape + input.shape`` (in the arguments' structure: a dict of tensors gives a dict)."""
    _checked_chunk_size(chunk_size, "jacrev")
    return _jacobian(func, argnums, has_aux, "vjp(f, *primals)", forward=False)


def jacfwd(func, argnums=0, has_aux=False, *, randomness="error"):
    """torch's forward-mode Jacobian: the same values as ``jacrev``'s (here computed by reverse mode; a
    float64 Jacobian agrees with torch's to rounding). A random draw in ``func`` follows vmap's
    ``randomness``, as torch's batched forward passes do: 'error' refuses it."""
    if randomness not in ("error", "same", "different"):
        raise RuntimeError(f"Only allowed values for randomness are 'error', 'different', or 'same'. Got {randomness}")
    jacobian = _jacobian(func, argnums, has_aux, "jvp(f, primals, tangents)", forward=True)

    def wrapper(*args):
        with _randomness(randomness), forward_ad.functorch_forward():
            return jacobian(*args)
    return wrapper


def hessian(func, argnums=0):
    """``jacfwd(jacrev(func, argnums), argnums)``, as torch defines it: for one tensor input of shape S and a
    scalar output, an ``S + S`` tensor."""
    return jacfwd(jacrev(func, argnums), argnums)


# ---- jvp, linearize: forward-mode products by the double-vjp trick ---------------------------------------
def _spec(tree, indent=0):
    """A pytree's structure as torch prints its TreeSpec: ``TreeSpec(tuple, None, [*,\n  *])`` (each child after
    the first on a line of its own, indented two more per level; a dict's context: its keys)."""
    if not isinstance(tree, (tuple, list, dict)):
        return "*"
    children = list(tree.values()) if isinstance(tree, dict) else list(tree)
    context = list(tree) if isinstance(tree, dict) else None
    parts = [_spec(child, indent + 2) for child in children]
    body = ",".join([parts[0]] + ["\n" + " " * (indent + 2) + part for part in parts[1:]]) if parts else ""
    return f"TreeSpec({type(tree).__name__}, {context}, [{body}])"


def _checked_tangents(primals, tangents, words):
    if not isinstance(primals, tuple):
        raise RuntimeError(f"{words}: Expected primals to be a tuple. E.g. it should be valid to call f(*primals).")
    if not isinstance(tangents, tuple) or len(tangents) != len(primals):
        raise RuntimeError(f"{words}: Expected primals and tangents to have the same python structure. For example, "
                           f"if primals is a tuple of 3 tensors, tangents also must be. Got primals with structure "
                           f"{_spec(primals)} and tangents with structure {_spec(tangents)}")
    for item in primals:
        if not _leaves_of(item):
            raise RuntimeError(f"{words}: Expected primals to only contain Tensors, got {type(item)}")
    flat_primals, flat_tangents = _leaves_of(primals), _leaves_of(tangents)
    if not flat_primals:
        raise RuntimeError(f"{words}: Expected primals to contain at least one Tensor.")
    _forward_checked(primals)
    for p, t in zip(flat_primals, flat_tangents):
        if tuple(p.shape) != tuple(t.shape):
            raise RuntimeError("Trying to set a forward gradient that has a different size than that of the original "
                               f"Tensor, this is not supported. Tensor is of size {list(p.shape)} while the given "
                               f"forward gradient is of size {list(t.shape)}.")
    return flat_primals, [t.to(p.dtype) for p, t in zip(flat_primals, flat_tangents)]


def jvp(func, primals, tangents, *, strict=False, has_aux=False):
    """``(func(*primals), J @ tangents)``: the Jacobian-vector product, shaped as the output, computed as
    ``torch.autograd.functional.jvp`` does (the vjp ``u -> J^T u`` is linear in ``u``; its own vjp with the
    tangents is ``J t``). With ``has_aux``: ``(output, jvp_out, aux)``."""
    words = "jvp(f, primals, tangents)"
    _, flat_tangents = _checked_tangents(primals, tangents, words)
    leaves = [_differentiable(p) for p in primals]
    with enable_grad(), forward_ad.functorch_forward():
        output, aux = _split_aux(func(*leaves), has_aux, words)
    outputs = _output_tensors(output, words)
    outer = _outer_graph(primals, [outputs, aux], leaves)
    # (torch.func.jvp takes ``strict`` and, unlike autograd.functional.jvp, checks nothing with it)
    products = iter(autograd._jvp_products(outputs, _leaves_of(leaves), flat_tangents, outer, False))
    value = output if outer else _map(Tensor.detach, output)
    jvp_out = _follows(_kept(_map(lambda _: next(products), output), leaves, outer), [primals, tangents])
    _finished(leaves)
    if has_aux:
        return value, jvp_out, (aux if outer else _map(Tensor.detach, aux))
    return value, jvp_out


def linearize(func, *primals):
    """``(func(*primals), jvp_fn)``: ``jvp_fn(*tangents)`` is ``J @ tangents`` at the primals, from one run of
    ``func`` (its graph kept, as torch's traced linearization: a random draw in ``func`` is not redrawn)."""
    leaves = [_differentiable(p) for p in primals]
    with enable_grad(), forward_ad.functorch_forward():
        output = func(*leaves)
    outputs, flat_leaves = _output_tensors(output, "linearize"), _leaves_of(leaves)
    outer = _outer_graph(primals, outputs, flat_leaves)  # (torch's output and products keep their graph)
    dummies = tuple(autograd._zeros_like(o).requires_grad_() for o in outputs)
    transposed = autograd._filled(autograd._grads_of(outputs, flat_leaves, dummies, create_graph=True),
                                  flat_leaves, False, "output")

    def jvp_fn(*tangents):
        if len(tangents) != len(primals):
            raise RuntimeError(f"Expected the tangents to have the same argspec as the primals: {len(primals)} "
                               f"tensors, got {len(tangents)}")
        flat_tangents = _leaves_of(tangents)
        for k, (p, t) in enumerate(zip(flat_leaves, flat_tangents)):
            if tuple(p.shape) != tuple(t.shape):
                raise RuntimeError(f"tangent:{k} with shape {torch_spelling(t.shape)} in flattened pytree doesn't "
                                   f"match the shape {torch_spelling(p.shape)} of the corresponding primal.")
        flat_tangents = [t.to(p.dtype) for p, t in zip(flat_leaves, flat_tangents)]
        products = autograd._filled(autograd._grads_of(transposed, dummies, flat_tangents, outer), outputs,
                                    False, "jvp")
        products = iter(products)
        return _follows(_kept(_map(lambda _: next(products), output), flat_leaves, outer), [outputs, tangents])
    _finished(flat_leaves)
    return (output if outer else _map(Tensor.detach, output)), jvp_fn


# ---- vmap -----------------------------------------------------------------------------------------------
def _function_name(func):
    """How torch's vmap messages name ``func`` (its ``_get_name``): ``__name__``, a partial's, else its repr."""
    if hasattr(func, "__name__"):
        return func.__name__
    if isinstance(func, functools.partial):
        return f"functools.partial({_function_name(func.func)}, ...)"
    return repr(func)


def _checked_in_dims(func, in_dims, args):
    """One in_dim (or tree of them) per argument, after torch's checks of each mapped input, in its order and
    words: an in_dim that is no int, a mapped input that is no Tensor, an in_dim outside the tensor's dims."""
    where = f"vmap({_function_name(func)}, in_dims={in_dims}, ...)(<inputs>)"
    if not isinstance(in_dims, (int, tuple)):
        raise ValueError(f"{where}: expected `in_dims` to be int or a (potentially nested) tuple matching the "
                         f"structure of inputs, got: {type(in_dims)}.")
    if not args:
        raise ValueError(f"vmap({_function_name(func)})(<inputs>): got no inputs. Maybe you forgot to add inputs, or "
                         f"you are trying to vmap over a function with no inputs. The latter is unsupported.")
    dims = _in_dims_of(in_dims, args, where)
    for leaf, dim in (pair for arg, d in zip(args, dims) for pair in _leaf_dims(arg, d)):
        if dim is not None and not isinstance(dim, int):
            raise ValueError(f"{where}: Got in_dim={dim} for an input but in_dim must be either an integer dimension "
                             f"or None.")
        if dim is not None and not isinstance(leaf, Tensor):
            raise ValueError(f"{where}: Got in_dim={dim} for an input but the input is of type {type(leaf)}. We "
                             f"cannot vmap over non-Tensor arguments, please use None as the respective in_dim")
        if dim is not None and not -leaf.ndim <= dim < leaf.ndim:
            raise ValueError(f"{where}: Got in_dim={dim} for some input, but that input is a Tensor of "
                             f"dimensionality {leaf.ndim} so expected in_dim to satisfy -{leaf.ndim} <= in_dim < "
                             f"{leaf.ndim}.")
    return dims


def _leaf_dims(arg, dim):
    """(leaf, its in_dim) for every leaf of the pytree ``arg`` (tensors and anything else), ``dim`` a tree over it."""
    if isinstance(dim, dict):
        return [pair for key in arg for pair in _leaf_dims(arg[key], dim[key])]
    if isinstance(dim, (tuple, list)):
        return [pair for a, d in zip(arg, dim) for pair in _leaf_dims(a, d)]
    if isinstance(arg, (tuple, list)):
        return [pair for item in arg for pair in _leaf_dims(item, dim)]
    if isinstance(arg, dict):
        return [pair for item in arg.values() for pair in _leaf_dims(item, dim)]
    return [(arg, dim)]


def _in_dims_of(in_dims, args, where):
    """One in_dim (or tree of them) per argument: ``in_dims`` must be a prefix of the arguments' pytree (torch's
    ``_broadcast_to_and_flatten``: a tuple where a tuple is, a dict with the same keys; an int or None covers
    a whole subtree), else torch's error with both structures."""
    if isinstance(in_dims, (int, type(None))):
        return [in_dims] * len(args)
    if not _is_prefix(in_dims, tuple(args)):
        raise ValueError(f"{where}: in_dims is not compatible with the structure of `inputs`. in_dims has "
                         f"structure {_spec(in_dims)} but inputs has structure {_spec(tuple(args))}.")
    return list(in_dims)


def _is_prefix(dims, tree):
    """Does the tree of dims ``dims`` have ``tree``'s structure down to its leaves (each a dim for a subtree)?"""
    if isinstance(dims, (tuple, list)):
        return type(tree) is type(dims) and len(tree) == len(dims) and all(map(_is_prefix, dims, tree))
    if isinstance(dims, dict):
        return isinstance(tree, dict) and set(tree) == set(dims) and all(_is_prefix(dims[k], tree[k]) for k in dims)
    return True


def _pick(arg, dim, i):
    """Sample ``i`` of ``arg`` along its mapped dimension (a pytree: each tensor's; a tree of dims)."""
    if dim is None:
        return arg
    if isinstance(dim, int):
        return _map(lambda t: t.select(dim, i), arg)
    if isinstance(dim, dict):
        return type(arg)((key, _pick(arg[key], dim[key], i)) for key in arg)
    return type(arg)(_pick(a, d, i) for a, d in zip(arg, dim))


def _sizes(arg, dim):
    if dim is None:
        return []
    if isinstance(dim, int):
        return [t.shape[dim] for t in _leaves_of(arg)]
    if isinstance(dim, dict):
        return [s for key in arg for s in _sizes(arg[key], dim[key])]
    return [s for a, d in zip(arg, dim) for s in _sizes(a, d)]


def _mapped(arg, dim):
    """(tensor, its in_dim) for each tensor of ``arg`` that is mapped, in ``_leaves_of``'s order."""
    if dim is None:
        return []
    if isinstance(dim, int):
        return [(t, dim % t.ndim if t.ndim else dim) for t in _leaves_of(arg)]
    if isinstance(dim, dict):
        return [pair for key in arg for pair in _mapped(arg[key], dim[key])]
    return [pair for a, d in zip(arg, dim) for pair in _mapped(a, d)]


def _sample_arrays(args, picked, dims):
    """(sample's array, input's array, in_dim) for each mapped tensor (what _BatchedDraws lays draws out like)."""
    return [(sample._array, full._array, dim) for arg, sample_arg, d in zip(args, picked, dims)
            for (full, dim), (sample, _) in zip(_mapped(arg, d), _mapped(sample_arg, d))]


def _batch_in_front(args, dims):
    """Is every mapped tensor mapped along its first dimension and laid out in index order (so torch's batched
    tensors, and what elementwise ops make of them, hold the batch in front)?"""
    return all(dim == 0 and factories._memory_order(t._array) == tuple(range(t.ndim))
               for arg, d in zip(args, dims) for t, dim in _mapped(arg, d))


def _generator_state():
    return bytes(random.get_rng_state().numpy())


@contextlib.contextmanager
def _randomness(mode):
    """torch's 'error' randomness for one sample's call: a draw from the global generator is refused."""
    state = _generator_state()
    yield
    if mode == "error" and _generator_state() != state:
        raise RuntimeError("vmap: called random operation while in randomness error mode. Please either use the "
                           "'same' or 'different' randomness flags on vmap or perform the randomness operation "
                           "out of vmap")


# torch's draws under randomness='different': one per random op for the whole batch (bernoulli of a tensor of
# probabilities: one uniform per element of the batch's probabilities, as for a shape), or, for the samplers whose
# draws per element vary (poisson's rejection loop) or that draw per sample (randperm), the samples' draws one
# after another, in the stream's order
_SHAPED_DRAWS = ("uniform", "normal", "exponential", "cauchy", "log_normal", "geometric", "integers", "random_",
                 "bernoulli", "bernoulli_tensor")
_SEQUENTIAL_DRAWS = ("poisson", "randperm")
_OTHER_DRAWS = ("random_bits", "random64")


class _BatchedDraws:
    """torch's ``randomness='different'``: a random op in ``func`` runs once on the batched tensor, drawing
    ``(batch,) + its sample's shape`` from the global generator. minilora runs the samples one by one, so
    sample 0's k-th draw takes that whole batch's numbers (the generator moves as torch's) and keeps them;
    sample i's k-th draw is row i of it. A draw laid out like a sample of a mapped input (``randn_like``, an
    in-place fill: factories tells ``laid_out_like``) is drawn, as torch's, in that input's own layout, its
    mapped dimension where ``in_dims`` put it, and sample i takes its slice; like any other tensor while an input
    is mapped along another dimension than 0, it is refused (torch's batching rules decide where that tensor's
    batch dimension lies). Dropout's mask and ``bernoulli`` of a tensor of probabilities (its uniforms, each
    sample comparing its row with its own probabilities) are drawn with the batch in front whatever the
    layout, as torch's batching rules for them do. ``poisson`` and ``randperm`` draw sample after
    sample in torch too, so each sample draws its own -- in torch's order only when no batched draw follows
    them in ``func`` (refused by name otherwise). A raw draw (``random_bits``, a seed) is refused by name."""

    def __init__(self, size, front):
        self.generator, self.size, self.front = random.default_generator, size, front
        self.draws, self.sample, self.next, self.inside = [], 0, 0, False
        self.sequential_drawn = None  # the sequential sampler sample 0 called, if any
        self.samples, self.like = [], None  # (this sample's array, its input's, in_dim); (array, axis order)

    def __enter__(self):
        if any(name in vars(self.generator) for name in _SHAPED_DRAWS):
            raise NotImplementedError("vmap(randomness='different') inside another vmap(randomness='different'): "
                                      "minilora batches one level of random draws")
        for name in _SHAPED_DRAWS:
            setattr(self.generator, name, self._batched(getattr(type(self.generator), name), name))
        for name in _SEQUENTIAL_DRAWS:
            setattr(self.generator, name, self._sequential(getattr(type(self.generator), name), name))
        for name in _OTHER_DRAWS:
            setattr(self.generator, name, self._refused(name, getattr(type(self.generator), name)))
        factories._like_draws = self
        return self

    def __exit__(self, *exc):
        factories._like_draws = None
        for name in _SHAPED_DRAWS + _SEQUENTIAL_DRAWS + _OTHER_DRAWS:
            delattr(self.generator, name)

    def start(self, sample, samples):
        """Sample ``sample`` runs next; ``samples``: (its array, the input's array, in_dim) per mapped tensor."""
        self.sample, self.next, self.samples = sample, 0, samples

    @contextlib.contextmanager
    def laid_out_like(self, array, order):
        """The draws inside are laid out as ``array``, its axes taken in ``order`` (factories' hook)."""
        before, self.like = self.like, (array, order)
        try:
            yield
        finally:
            self.like = before

    def _batched(self, method, name):
        def draw(shape, *args, **kwargs):
            if self.inside:
                return method(self.generator, shape, *args, **kwargs)
            if name == "bernoulli_tensor":  # (the probabilities: this sample's; the uniforms: the batch's, drawn
                probs = np.asarray(shape)  # with the batch in front whatever the layout, as torch's)
                return self._batched_uniforms(probs) < self._probabilities(probs)
            return self._row(lambda batch_shape: method(self.generator, batch_shape, *args, **kwargs), shape, name)
        return draw

    def _row(self, draw, shape, name):
        """This sample's part of the batch's k-th draw (drawn at sample 0 by ``draw(a batched shape)``), in the
        axis order ``shape`` asks for."""
        if self.sample == 0:
            if self.sequential_drawn is not None:
                raise NotImplementedError(f"vmap(randomness='different'): a batched random draw ({name}) after "
                                          f"{self.sequential_drawn}(): torch draws it for the whole batch after every "
                                          f"sample's {self.sequential_drawn}, which minilora's one-sample-at-a-time "
                                          "vmap cannot order so; draw it before, or outside vmap")
            self.inside = True
            try:
                self.draws.append(self._batch(draw, tuple(shape)))
            finally:
                self.inside = False
        elif self.next >= len(self.draws):
            raise RuntimeError(f"vmap(randomness='different'): sample {self.sample} made more random draws than "
                               "sample 0; minilora batches a random op by the order the samples call it")
        self.next += 1
        batch, dim, order = self.draws[self.next - 1]
        return batch.take(self.sample, axis=dim).transpose(order)

    def _batch(self, draw, shape):
        """(the batch's draw in index order, the dimension that holds the samples, the axis order of ``shape``):
        laid out as the batched input when the draw is like one of its samples, else with the batch in front."""
        like = self._mapped_input_like(shape)
        if like is None:
            if self.like is not None and not self.front:
                raise NotImplementedError("vmap(randomness='different') with an input mapped along a dimension other "
                                          "than 0 (or laid out otherwise than in index order): a random op like a "
                                          "tensor computed in func draws in the layout torch's batching rules gave "
                                          "that tensor, which minilora does not reproduce; move that dimension to "
                                          "the front (contiguous)")
            return draw((self.size,) + shape), 0, tuple(range(len(shape)))
        full, dim, order = like
        physical = factories._memory_order(full)  # (torch's batched tensor is the input itself)
        drawn = draw(tuple(full.shape[axis] for axis in physical))
        return drawn.transpose(tuple(np.argsort(physical))), dim, order

    def _mapped_input_like(self, shape):
        """(the input's array, its in_dim, the draw's axis order) when the draw is laid out like this sample of a
        mapped input, else None."""
        if self.like is None:
            return None
        array, order = self.like
        if tuple(array.shape[axis] for axis in order) != shape:  # (a complex draw's extra axis: not the sample's)
            return None
        for sample, full, dim in self.samples:
            if sample is array or (sample.shape == array.shape and sample.strides == array.strides and
                                   sample.__array_interface__["data"][0] == array.__array_interface__["data"][0]):
                return full, dim, order
        return None

    def _batched_uniforms(self, probs):
        """``bernoulli_tensor``'s uniforms for the whole batch, as random.Generator.bernoulli_tensor draws them."""
        unit = self.generator._unit_doubles if probs.dtype == np.float64 else self.generator._unit_floats
        return self._row(lambda shape: unit(math.prod(shape)).reshape(shape), probs.shape, "bernoulli")

    @staticmethod
    def _probabilities(probs):
        probs = np.asarray(probs)
        return probs if probs.dtype == np.float64 else probs.astype(np.float32)

    def _sequential(self, method, name):
        def draw(*args, **kwargs):
            if self.inside:
                return method(self.generator, *args, **kwargs)
            if self.sample == 0:
                self.sequential_drawn = name
            self.inside = True  # (its own raw draws are its)
            try:
                return method(self.generator, *args, **kwargs)
            finally:
                self.inside = False
        return draw

    def _refused(self, name, method):
        def draw(*args, **kwargs):
            if not self.inside:
                raise NotImplementedError(f"vmap(randomness='different'): a raw random draw by {name}() (a seed, "
                                          "random_()) has no batched form in minilora; draw it outside vmap or use "
                                          "randomness='same'")
            return method(self.generator, *args, **kwargs)
        return draw


# torch's names for an in-place op refused inside vmap (None: its batching rule broadcasts first, so torch's
# words are the broadcast error's), by minilora's op function; others are "aten::<name>_"
_INPLACE_WORDS = {"add": None, "atan2": None, "sub": "inplace arithmetic", "mul": "inplace arithmetic",
                  "div": "inplace arithmetic", "_copy_from": "inplace arithmetic", "index_put": "inplace arithmetic",
                  "_replace_values": "fill_", "fill": "fill_"}


class _Level:
    """One running vmap: its batch size, {id(tensor): (weak reference, batched?)}, the unmapped inputs, and
    the values they had before func first changed one in place (restored before each later sample)."""

    def __init__(self, size, unmapped):
        self.size, self.states, self.unmapped, self.saved = size, {}, unmapped, {}

    def state(self, t):
        entry = self.states.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def save_before_write(self, t):
        """``t`` (known unbatched) is about to change in place: keep the unmapped inputs it may write into."""
        for given in self.unmapped:
            if id(given) not in self.saved and np.may_share_memory(given._array, t._array):
                self.saved[id(given)] = (given, given._array.copy())

    def restore(self):
        """torch runs func once for the batch, so an in-place change of an unbatched tensor happens once: each
        sample starts from the values the first one saw."""
        for given, values in self.saved.values():
            given._array[...] = values


class _Batching:
    """Which tensors are batched, at each running vmap level (outermost first): what torch's BatchedTensor knows of
    itself, for torch's refusals -- ``.item()`` or ``if`` on a batched tensor, an in-place op writing a batched
    tensor into an unbatched one, a batched output where out_dims is None. minilora runs ``func`` sample by
    sample, so tensor.py hands it each op call while a vmap runs (``Function.apply``): a result is batched at the
    levels of its batched inputs, unbatched (known so) at the others. The samples are batched; the unmapped inputs
    and factories' tensors are known unbatched; ``*_like`` tensors are as their input. A tensor made otherwise
    (``detach``, ``new_zeros``) is of unknown batching and is never refused."""

    def __init__(self):
        self.levels = []
        self.busy = False

    @contextlib.contextmanager
    def level(self, size, unmapped):
        self.levels.append(_Level(size, [t for t in unmapped if isinstance(t, Tensor)]))
        try:
            yield self.levels[-1]
        finally:
            self.levels.pop()

    def mark(self, tree, level, batched):
        for t in _leaves_of(tree):
            level.states[id(t)] = (weakref.ref(t), batched)

    def batched_levels(self, tensors):
        return [level for level in self.levels if any(level.state(t) for t in tensors)]

    def apply(self, cls, inputs, options):
        """tensor.py's hook: one op call, its result batched where an input is."""
        self.busy = True
        try:
            result = cls.apply(*inputs, **options)
        finally:
            self.busy = False
        return self.follow(result, inputs)

    def follow(self, result, inputs):
        """``result`` (a tensor or a tree of them) of ``inputs``: batched at the levels where one of them is,
        unbatched where all are known to be, else unknown."""
        inputs = _leaves_of(list(inputs))
        for level in self.levels:
            states = [level.state(t) for t in inputs]
            if True in states or states and None not in states:
                self.mark(result, level, True in states)
        return result

    def made(self, t, like=None):
        """factories' hook: ``t`` is new, of no input (unbatched) or laid out ``like`` a tensor (batched as it)."""
        for level in self.levels:
            self.mark(t, level, like is not None and level.state(like))
        return t

    def physical_shape(self, tensors, shape):
        """``shape`` with the batch sizes in front where one of ``tensors`` is batched (torch's batched tensor)."""
        return [level.size for level in self.batched_levels(tensors)] + list(shape)

    def check_scalar(self, t, what):
        """torch's refusal of reading a batched tensor's value (``item``, ``float``, ``if``)."""
        if not self.batched_levels([t]):
            return
        if what == "bool":
            raise RuntimeError("vmap: It looks like you're attempting to use a Tensor in some data-dependent control "
                               "flow. We don't support that yet, please file an issue at "
                               "https://github.com/pytorch/pytorch/issues .")
        raise RuntimeError("vmap: It looks like you're calling .item() on a Tensor. We don't support vmap over "
                           "calling .item() on a Tensor, please try to rewrite what you're doing with other "
                           "operations. If error is occurring somewhere inside PyTorch internals, please file a bug "
                           "report.")

    def check_inplace(self, t, op_name, others):
        """Before an in-place op on ``t``: torch's refusal where ``t`` is known unbatched and an operand is batched
        (the samples would all write one tensor); else, for a known unbatched ``t``, its old values kept."""
        others = _leaves_of(list(others))
        batched = self.batched_levels(others)
        for number, level in enumerate(self.levels, 1):
            if level.state(t) is not False:
                continue
            if level not in batched:
                level.save_before_write(t)
                continue
            words = _INPLACE_WORDS.get(op_name, f"aten::{op_name}_")
            if words is None:
                raise RuntimeError(f"output with shape {self.physical_shape([t], t.shape)} doesn't match the "
                                   f"broadcast shape {self.physical_shape([t] + others, _broadcast(t, others))}")
            where = f"at level {number}" if words.startswith("aten::") else "in a vmap"
            raise RuntimeError(f"vmap: {words}(self, *extra_args) is not possible because there exists a Tensor "
                               "`other` in extra_args that has more elements than `self`. This happened due to "
                               f"`other` being vmapped over but `self` not being vmapped over {where}. Please try to "
                               f"use out-of-place operators instead of {words}. If said operator is being called "
                               "inside the PyTorch framework, please file a bug report instead.")


def _broadcast(t, others):
    return np.broadcast_shapes(tuple(t.shape), *(tuple(x.shape) for x in others))


@contextlib.contextmanager
def _batching_level(size, unmapped):
    """A vmap level for tensor.py's hooks (one _Batching for the outermost vmap and the ones inside it)."""
    outermost = _tensor_module._batching is None
    if outermost:
        _tensor_module._batching = _Batching()
    try:
        with _tensor_module._batching.level(size, unmapped) as level:
            yield _tensor_module._batching, level
    finally:
        if outermost:
            _tensor_module._batching = None


def _follows(result, inputs):
    """Inside vmap: ``result`` (a transform's, computed by autograd rather than by ops) is batched as ``inputs``."""
    if _tensor_module._batching is not None:
        _tensor_module._batching.follow(result, inputs)
    return result


def vmap(func, in_dims=0, out_dims=0, randomness="error", *, chunk_size=None):
    """``func`` over a batch: ``vmap(f)(x)[i] == f(x[i])`` along ``in_dims`` (one per argument, None for an
    argument shared by every sample), the results stacked along ``out_dims``. ``chunk_size`` only bounds torch's
    memory: minilora runs one sample at a time whatever it is."""
    if randomness not in ("error", "same", "different"):
        raise RuntimeError(f"Only allowed values for randomness are 'error', 'different', or 'same'. Got {randomness}")
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size > 0):
        raise ValueError(f"vmap: chunk_size should be None or greater than 0. (got {chunk_size})")

    def wrapper(*args, **kwargs):
        dims = _checked_in_dims(func, in_dims, args)
        sizes = [s for arg, dim in zip(args, dims) for s in _sizes(arg, dim)]
        if not sizes:
            raise ValueError("vmap: Expected at least one Tensor to vmap over")
        if len(set(sizes)) > 1:
            raise ValueError(f"vmap: Expected all tensors to have the same size in the mapped dimension, got sizes "
                             f"{sizes} for the mapped dimension")
        first_state = random.get_rng_state()
        results = []
        batched_draws = randomness == "different" and _BatchedDraws(sizes[0], _batch_in_front(args, dims))
        unmapped = [leaf for arg, dim in zip(args, dims) for leaf, d in _leaf_dims(arg, dim) if d is None]
        with batched_draws or contextlib.nullcontext() as batched, forward_ad.vmapped(), \
                _batching_level(sizes[0], unmapped) as (tracking, level):
            tracking.mark(list(args), level, False)  # (the mapped ones too: func sees their samples)
            for i in range(sizes[0]):
                if randomness == "same":
                    random.set_rng_state(first_state)
                level.restore()
                picked = [_pick(arg, dim, i) for arg, dim in zip(args, dims)]
                for sample, dim in zip(picked, dims):
                    tracking.mark([leaf for leaf, d in _leaf_dims(sample, dim) if d is not None], level, True)
                if batched is not None:
                    batched.start(i, _sample_arrays(args, picked, dims))
                with _randomness(randomness):
                    results.append(func(*picked, **kwargs))
            return _stacked(func, results, out_dims, level.state)
    return wrapper


def _leaves_and_rebuild(tree):
    """(``tree``'s leaves -- tensors and anything else not a tuple, list or dict --, a function that builds the
    same tree from a list of new leaves)."""
    if isinstance(tree, (tuple, list)):
        parts = [_leaves_and_rebuild(item) for item in tree]
        counts = [len(leaves) for leaves, _ in parts]

        def rebuild(leaves):
            items, at = [], 0
            for (_, build), count in zip(parts, counts):
                items.append(build(leaves[at:at + count]))
                at += count
            return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
        return [leaf for leaves, _ in parts for leaf in leaves], rebuild
    if isinstance(tree, dict):
        keys = list(tree)
        leaves, build = _leaves_and_rebuild([tree[k] for k in keys])
        return leaves, lambda new: type(tree)(zip(keys, build(new)))
    return [tree], lambda new: new[0]


def _flat_out_dims(out_dims, output):
    """One out_dim per leaf of ``output`` (torch's ``_broadcast_to_and_flatten``), or None where the trees do not
    fit (a lone tensor output also takes a 1-tuple)."""
    if isinstance(output, Tensor) and isinstance(out_dims, tuple) and len(out_dims) == 1:
        out_dims = out_dims[0]
    if not _is_prefix(out_dims, output):
        return None
    if isinstance(out_dims, (tuple, list)):
        return [d for dims, item in zip(out_dims, output) for d in _flat_out_dims(dims, item)]
    if isinstance(out_dims, dict):
        return [d for key in output for d in _flat_out_dims(out_dims[key], output[key])]
    return [out_dims] * len(_leaves_and_rebuild(output)[0])


def _stacked(func, results, out_dims, batched):
    """The samples' results as torch's vmap returns them: each leaf stacked along its out_dim; where that is None,
    the leaf as is (refused when batched: ``batched(t)`` says)."""
    name = _function_name(func)
    for dim in _leaves_and_rebuild(out_dims)[0]:
        if dim is not None and not isinstance(dim, int):
            raise ValueError(f"vmap({name}, ..., out_dims={out_dims}): `{name}` must be have one dimension per output "
                             f"(an int or None), got {dim}.")
    first, rebuild = _leaves_and_rebuild(results[0])
    dims = _flat_out_dims(out_dims, results[0])
    if dims is None:
        raise ValueError(f"vmap({name}, ..., out_dims={out_dims})(<inputs>): out_dims is not compatible with the "
                         f"structure of `outputs`. out_dims has structure {_spec(out_dims)} but outputs has structure "
                         f"{_spec(results[0])}.")
    samples = [_leaves_and_rebuild(r)[0] for r in results]
    leaves = []
    for k, (leaf, dim) in enumerate(zip(first, dims)):
        if dim is None:
            if isinstance(leaf, Tensor) and batched(leaf):
                raise ValueError(f"vmap({name}, ...): `{name}` can not return a BatchedTensor when out_dim is None")
            leaves.append(leaf)
        elif not isinstance(leaf, Tensor):
            raise ValueError(f"vmap({name}, ...): `{name}` must only return Tensors, got type {type(leaf)}. Did you "
                             "mean to set out_dims= to None for output?")
        else:
            leaves.append(stack([sample[k] for sample in samples], dim))
    return rebuild(leaves)
