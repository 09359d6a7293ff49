"""``import minilora`` does not import ml_dtypes (~0.7 s: NumPy registering its loops), nor does a float32
model's construction, forward and backward: ml_dtypes is imported where bfloat16 is first used, and each
way in to bfloat16 then gives torch's answer (minilora/dtypes.py: ``bfloat16`` by PEP 562 ``__getattr__``).

Every check runs in a fresh interpreter (the test process has long since imported ml_dtypes); the child
prints its results and this process compares them with torch's."""
import json
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ml_dtypes")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUES = [1.0, 2.5, 3.14159, -0.1, 300.7]

# The child's prelude: `imported()` says whether ml_dtypes is loaded; `report` prints the results as JSON.
PRELUDE = """
import json, sys
import numpy as np
def imported():
    return "ml_dtypes" in sys.modules
def report(**results):
    print(json.dumps(results))
"""


# Each child runs as a background run (tests/background_runs.py), queued last, on the core CI's main process leaves
# idle (~8 s of its time): every child's body is known before the tests run (_bodies)
CHILD_ENV = {"PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
_SUBMITTED = []


def _submit_all(runs):
    """Queue every child of this file (once), the BF16 file they read written first."""
    if _SUBMITTED:
        return
    folder = runs.folder("import-time")
    from safetensors.torch import save_file
    save_file({"w": torch_bf16(VALUES)}, str(folder / "bf16.safetensors"))
    for key, body in _bodies(str(folder / "bf16.safetensors")).items():
        runs.submit((__name__, key), "background_runs", "run_commands",
                    (([sys.executable, "-c", PRELUDE + body], CHILD_ENV),), ROOT, 120)
    _SUBMITTED.append(folder)


def start_background_runs(items, runs):
    if any(getattr(getattr(item, "module", None), "__name__", None) == __name__ for item in items):
        _submit_all(runs)


def run_fresh(runs, key):
    """The JSON report of the child ``key`` (a new interpreter that imports this checkout's minilora)."""
    _submit_all(runs)
    [(returncode, stdout, stderr)] = runs.result((__name__, key))
    assert returncode == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1])


def torch_bf16(values):
    return torch.tensor(values, dtype=torch.float32).to(torch.bfloat16)


def test_float32_work_never_imports_ml_dtypes_and_minilora_bfloat16_then_does(background):
    """``import minilora`` (which leaves torch.save's file formats for ``minilora.save``), building a float32 Llama and a LoRA model with ``minilora.nn``, a forward and
    backward, an AdamW step and a gradient-checkpointed step import no ml_dtypes; ``minilora.bfloat16`` then imports it, is ml_dtypes'
    dtype, and rounds as torch's bfloat16."""
    got = run_fresh(background, "float32 work")
    assert got["after_import"] is False
    assert got["file_formats"] == []  # (torch.save / torch.load's formats load with minilora.save / load)
    assert got["after_construction"] is False
    assert got["after_step"] is False
    assert got["touched"] is True and got["is_ml_dtypes"] is True
    assert got["dtype"] == str(torch.ones(1, dtype=torch.bfloat16).dtype).removeprefix("torch.")
    assert got["values"] == torch_bf16(VALUES).float().tolist()


# The first bfloat16 a program meets, each way in, in a fresh interpreter: the result is torch's.
FIRST_TOUCH = {
    "an ml_dtypes array": ("import ml_dtypes\n"
                           "t = ml.from_numpy(np.array(VALUES, dtype=ml_dtypes.bfloat16)) * 3", "times3"),
    "minilora.bfloat16": ("t = ml.tensor(VALUES, dtype=ml.bfloat16) * 3", "times3"),  # (a name: torch's TypeError)
    "BFloat16Tensor": ("t = ml.BFloat16Tensor(VALUES) * 3", "times3"),
    "a BF16 safetensors file": ("from minilora.checkpoint import load_file\n"
                                "t = ml.tensor(load_file(SAFETENSORS)['w'])", "file"),
    "autocast('cpu')": ("with ml.autocast('cpu'):\n"
                        "    t = ml.tensor([VALUES]).mm(ml.tensor([VALUES]).t())", "autocast"),
}


def torch_answer(kind, values):
    if kind == "times3":
        return torch_bf16(values) * 3
    if kind == "file":
        return torch_bf16(values)
    with torch.autocast("cpu"):
        return torch.tensor([values]).mm(torch.tensor([values]).t())


@pytest.mark.parametrize("way", list(FIRST_TOUCH))
def test_the_first_bfloat16_a_program_meets_imports_ml_dtypes_then(way, background):
    code, kind = FIRST_TOUCH[way]
    got = run_fresh(background, way)
    expected = torch_answer(kind, VALUES)
    assert got["before"] is False
    assert got["after"] is True
    assert got["dtype"] == str(expected.dtype).removeprefix("torch.")
    assert got["values"] == expected.float().tolist()


def test_without_ml_dtypes_a_disabled_autocast_region_and_gradient_checkpointing_work(background):
    """Without ml_dtypes the CPU's autocast dtype (bfloat16) cannot exist, but a region that does not compute
    in it needs none: ``autocast("cpu", enabled=False)`` and ``checkpoint`` (which re-enters the forward's
    region) work as torch's, where both raised minilora's bfloat16 TypeError. An enabled region still does."""
    got = run_fresh(background, "no ml_dtypes")
    x = torch.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    with torch.autocast("cpu", enabled=False):
        y = torch.utils.checkpoint.checkpoint(lambda t: (t * t).tanh(), x, use_reentrant=False)
    y.sum().backward()
    assert got["values"] == y.tolist()
    assert got["grad"] == x.grad.tolist()
    assert "bfloat16 is not supported" in got["enabled"] and "ml_dtypes" in got["enabled"]


# The children's bodies (after PRELUDE)
FLOAT32_WORK = """
import minilora as ml
after_import = imported()
file_formats = [name for name in ("minilora.serialization", "minilora.torch_format") if name in sys.modules]
from minilora.models import LlamaConfig, LlamaForCausalLM
from minilora.lora import LoraConfig, get_peft_model
config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                     num_attention_heads=4, num_key_value_heads=2)
model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
linear = ml.nn.Linear(3, 2)
after_construction = imported()
ids = ml.tensor([[1, 5, 7, 2]])
loss = model(ids, labels=ids).loss + linear(ml.ones(2, 3)).sum() * ml.tensor(2, dtype=ml.int64) / 3
loss.backward()
ml.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3).step()
model.gradient_checkpointing_enable()  # (its regions record the autocast state: bfloat16 on the CPU, unread)
model(ids, labels=ids).loss.backward()
after_step = imported()
bf16 = ml.bfloat16
import ml_dtypes
report(after_import=after_import, file_formats=file_formats, after_construction=after_construction, after_step=after_step,
       touched=imported(), is_ml_dtypes=bf16 == np.dtype(ml_dtypes.bfloat16) and bf16 is ml.dtypes.bfloat16,
       values=ml.tensor(%r).to(bf16).float().tolist(), dtype=str(ml.ones(1, dtype=bf16).dtype))
""" % VALUES

NO_ML_DTYPES = """
sys.modules["ml_dtypes"] = None  # `import ml_dtypes` now raises ImportError
import minilora as ml
from minilora.nn.checkpointing import checkpoint
x = ml.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
with ml.autocast("cpu", enabled=False):
    y = checkpoint(lambda t: (t * t).tanh(), x, use_reentrant=False)
y.sum().backward()
try:
    with ml.autocast("cpu"):
        pass
    enabled = "no error"
except TypeError as exc:
    enabled = str(exc)
report(values=y.tolist(), grad=x.grad.tolist(), enabled=enabled)
"""


def _bodies(safetensors):
    """{key: body} of every child: the float32 work, each way in to bfloat16 (FIRST_TOUCH), no ml_dtypes."""
    bodies = {"float32 work": FLOAT32_WORK, "no ml_dtypes": NO_ML_DTYPES}
    for way, (code, _) in FIRST_TOUCH.items():
        bodies[way] = (f"import minilora as ml\nVALUES, SAFETENSORS = {VALUES!r}, {safetensors!r}\n"
                       f"before = imported()\n{code}\n"
                       "report(before=before, after=imported(), dtype=str(t.dtype), values=t.float().tolist())\n")
    return bodies
