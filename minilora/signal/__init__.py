"""``torch.signal``: its window functions (``minilora.signal.windows``)."""
from . import windows  # noqa: F401
