"""``minilora.nn.modules.module``: where torch's code finds the global module hooks
(``torch.nn.modules.module.register_module_forward_hook``); the same ``minilora.nn.module``."""
import sys

from .. import module

sys.modules[__name__ + ".module"] = module  # so `from minilora.nn.modules.module import ...` works too
