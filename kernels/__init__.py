"""CUDA C sources of minilora (installed as ``minilora._kernels``); see README.md here."""
