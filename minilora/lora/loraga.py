"""LoRA-GA, gradient-aligned LoRA (PEFT's ``init_lora_weights="lora_ga"``): the adapter starts along the singular
vectors of each weight's gradient on sample batches, so its first steps move as full fine-tuning would.

    config = LoraConfig(r=8, target_modules=[...], init_lora_weights="lora_ga", lora_ga_config=LoraGAConfig())
    preprocess_loraga(model, config, train_step=lambda: [model(**b).loss.backward() for b in batches])
    model = get_peft_model(model, config)

``preprocess_loraga`` (PEFT 0.21's ``peft.tuners.lora.loraga``): only the target Linears' weights require grad
while ``train_step()`` runs; each one's accumulated gradient over its backward count is left on the layer
(``_peft_loraga_grad``), or read from / written to ``cache_file`` (minilora's torch.save format).
``inits.lora_ga_init`` then takes a randomised SVD of the gradient (2r of 4r components) and splits it between
A and B as ``direction`` says, scales B as ``scale`` says, and the base keeps ``W - s B A``. The SVDs are
float32 LAPACK (NumPy's, not torch's MKL): a singular pair may come out with the other sign, and since A and
B take different pairs, such an adapter is PEFT's with that row of A (and its part of W) negated.
"""
import os

from ..tensor import enable_grad, no_grad
from .corda import _target_modules, cached_entry  # (the target Linears, as PEFT's CorDA and LoRA-GA both pick them)

__all__ = ["preprocess_loraga"]


def preprocess_loraga(model, lora_config, train_step, cache_file=None):
    """PEFT's: each target Linear's mean gradient over ``train_step()``'s backward passes (or ``cache_file``)."""
    if lora_config.lora_ga_config is None:  # PEFT's words
        raise ValueError("If you want to use LoRA-GA, please initialize the LoraConfig with "
                         "init_lora_weights='lora_ga' and lora_ga_config=LoraGAConfig(...).")
    if lora_config.target_modules is None:  # (PEFT resolves the model type's default here, before get_peft_model)
        from .model import DEFAULT_TARGET_MODULES, _model_type
        targets = DEFAULT_TARGET_MODULES.get(_model_type(model))
        if targets is None:
            raise ValueError("Please specify `target_modules` in `peft_config`")
        lora_config.target_modules = sorted(targets)
    with no_grad():
        if cache_file is not None and os.path.exists(cache_file) and os.path.getsize(cache_file) > 0:
            from ..serialization import load
            cache = load(cache_file)
            for name, module in _target_modules(model, lora_config):
                module._peft_loraga_grad = cached_entry(cache, cache_file, f"{name}._peft_loraga_grad",
                                                        tuple(module.weight.shape))
            return
        _estimate_gradients(model, lora_config, train_step)
        if cache_file is not None:
            from ..serialization import save
            os.makedirs(os.path.dirname(cache_file) or ".", exist_ok=True)  # (PEFT's makedirs("") fails on "a.pt")
            save({f"{name}._peft_loraga_grad": module._peft_loraga_grad
                  for name, module in _target_modules(model, lora_config)}, cache_file)


def _estimate_gradients(model, lora_config, train_step):
    was_training = model.training
    model.train()
    targets = list(_target_modules(model, lora_config))
    if not targets:  # PEFT's words
        raise ValueError("No supported layers found for LoRA-GA initialization. LoRA-GA only supports nn.Linear and "
                         "Conv1D layers. Please ensure your model contains at least one of these layer types in "
                         "target_modules.")
    counts = {id(module): 0 for _, module in targets}

    def count_backward(module, grad_input, grad_output):
        counts[id(module)] += 1
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad = False
    for _, module in targets:  # only the target weights get a gradient
        module.weight.requires_grad = True
    hooks = [module.register_full_backward_hook(count_backward) for _, module in targets]
    try:
        with enable_grad():
            train_step()
    finally:
        for hook in hooks:
            hook.remove()
        for name, p in model.named_parameters():
            if name in requires_grad:
                p.requires_grad = requires_grad[name]
    for _, module in targets:
        if counts[id(module)] > 0:
            module._peft_loraga_grad = module.weight.grad.detach() / counts[id(module)]
        module.weight.grad = None
    if not was_training:
        model.eval()
