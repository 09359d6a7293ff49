"""``minilora.nn.modules.module``: where torch's code finds the global module hooks
(``torch.nn.modules.module.register_module_forward_hook``); the same ``minilora.nn.module``."""
from .. import module  # noqa: F401
