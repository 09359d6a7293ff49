"""Imports go downwards, as ARCHITECTURE.md says: device/backend -> autograd -> ops -> nn -> lora ->
optim -> tools. A module-level import of a higher layer fails this test; an import of a higher
layer inside a function (loaded only when used) must be one of the few named below, each with its
reason, so a new circle cannot creep in unnoticed."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minilora"

# (prefix of a module name, its layer); the longest matching prefix wins
LAYERS = [
    ("minilora.device", 0), ("minilora.dtypes", 0), ("minilora.random", 0), ("minilora.profiler", 0),
    ("minilora.blas", 0), ("minilora.parallel", 0), ("minilora.emulator", 0), ("minilora.kernels", 0),
    ("minilora.emulator_kernels", 0), ("minilora.emulator_ptx", 0), ("minilora.emulator_streams", 0),
    ("minilora.emulator_fence", 0), ("minilora.emulator_memory", 0),
    ("minilora.emulator_runtime", 0),  # cupy.cuda.runtime's limits (the device heap's size)
    ("minilora.emulator_attributes", 0), ("minilora.emulator_fusion", 0),  # kernel attributes (nvcc), cupy.fuse
    ("minilora.emulator_subscripts", 0),  # the subscripts the emulator's bounds check lets pass
    ("minilora.checkpoint", 0), ("minilora.size", 0),
    ("minilora.interrupts", 0),  # Ctrl-C held back while a backward pass or an optimizer step runs
    ("minilora.torch_format", 0),  # torch.save's file format read and written (NumPy only; callers build Tensors)
    ("minilora.return_types", 0),
    ("minilora.float32_math", 0),  # torch's float32 kernels on NumPy (parallel, device): the CPU capability
    ("minilora.float32_sums", 0),  # torch's float32 summation order (parallel: the thread count)
    ("minilora.mkl_half_gemm", 0),  # MKL's 16-bit GEMM's order for one query row (dtypes, float32_math)
    ("minilora.mkl_vml", 0),  # torch's MKL math functions from MKL itself, where it is loaded (blas)
    ("minilora.glibc_math", 0),  # C's float32 functions, as torch's "default" build calls them (NumPy only)
    ("minilora.std_sort", 0),  # torch's sort/topk tie order: libstdc++'s algorithms (native/std_sort.cpp, or a port)
    ("minilora.cpu_switches", 0),  # torch.set_flush_denormal / interop threads (blas; parallel reads it)
    ("minilora.native", 0),  # compile C, cache, load with ctypes: float32_math's kernels, the emulator's builds
    ("minilora.gemm_pool", 0),  # lists of BLAS calls on blocks of rows in C threads (blas, native; parallel calls it)
    ("minilora.solutions", 0),  # whether an exercise region is the shipped solution (its fast twins ask; stdlib)
    ("minilora.tensor", 1), ("minilora._tensor_str", 1), ("minilora.factories", 1), ("minilora.serialization", 1),
    ("minilora.pickled", 1),  # torch.save(model): a whole module pickled (serialization's pickle path)
    ("minilora.testing", 1),
    ("minilora.ops", 2), ("minilora", 2),  # the package itself: the engine's public names
    ("minilora.nn", 3), ("minilora.models", 3), ("minilora.utils.checkpoint", 3),
    ("minilora.lora", 4),
    ("minilora.optim", 5),
    ("minilora.data", 6), ("minilora.tokenizer", 6), ("minilora.train", 6), ("minilora.trainer", 6),
    ("minilora.generate", 6),
    ("minilora.memory", 6), ("minilora.pretrain", 6), ("minilora.demo", 6), ("minilora.exercises", 6),
    ("minilora.cli", 6), ("minilora.__main__", 6), ("minilora.serve", 6),
]
# An op is called from a Tensor's methods (x + y is ops.add): the one upward edge at module level.
MODULE_LEVEL_UPWARD = {("minilora.tensor", "minilora.ops")}
# Upward imports inside functions, each loaded only when that function runs.
LAZY_UPWARD = {
    ("minilora.tensor", "minilora.ops"),  # as above
    ("minilora.lora.diagnostics", "minilora.memory"),  # recommend_lora_config checks a memory budget
    ("minilora.nn.utils", "minilora.optim"),  # nn.utils.clip_grad_norm_ is optim's, under torch's name
    ("minilora.compiler", "minilora.nn"),  # torch.compile(model) wraps an nn.Module in nn's OptimizedModule
    ("minilora.serialization", "minilora.nn"),  # a torch file's Parameters are written and rebuilt as nn.Parameter
    ("minilora.utils", "minilora.utils.checkpoint"),  # torch.utils.checkpoint is nn's gradient checkpointing
}


def layer(module):
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path.name == "__init__.py"


def imports(path):
    """(imported module, at module level?) for every minilora import in the file."""
    name, is_package = module_name(path)
    package = name if is_package else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[:len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            for imported in names:
                yield imported, id(node) in top_level
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("minilora"):
                    yield alias.name, id(node) in top_level


def test_imports_go_downwards():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name, _ = module_name(path)
        for imported, at_top in imports(path):
            imported = imported if not imported.endswith(".__version__") else "minilora"
            if layer(imported) <= layer(name):
                continue
            allowed = MODULE_LEVEL_UPWARD if at_top else LAZY_UPWARD
            if not any(name.startswith(a) and imported.startswith(b) for a, b in allowed):
                wrong.append(f"{name} (layer {layer(name)}) imports {imported} (layer {layer(imported)})"
                             f"{'' if at_top else ' inside a function'}")
    assert not wrong, "\n".join(wrong)


def test_the_llama_model_and_generation_no_longer_import_the_tools():
    """The circle nn/llama.py -> generate.py -> models.py is gone: generation is in nn."""
    name_of = {module_name(p)[0]: p for p in PACKAGE.rglob("*.py")}
    for module in ("minilora.nn.llama", "minilora.nn.generation", "minilora.models"):
        assert all(layer(imported) <= 3 or imported == "minilora.ops" for imported, _ in imports(name_of[module]))
