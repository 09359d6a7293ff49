"""torch.distributions: the distributions RL, VAE and sampling code draws from, each drawing its
numbers as torch does (a seeded ``Categorical(logits).sample()`` prints torch's actions), with
``rsample``/``log_prob``/``entropy`` differentiable, ``validate_args`` errors worded as torch's,
and ``kl_divergence`` for the pairs torch registers among them."""
from . import constraints, transforms
from .bernoulli import Bernoulli
from .categorical import Categorical
from .distribution import Distribution, ExponentialFamily
from .exponential import Exponential
from .independent import Independent
from .kl import kl_divergence, register_kl
from .laplace import Laplace
from .multivariate_normal import MultivariateNormal
from .normal import Normal
from .one_hot_categorical import OneHotCategorical, OneHotCategoricalStraightThrough
from .transformed_distribution import LogNormal, TransformedDistribution
from .transforms import (AbsTransform, AffineTransform, ComposeTransform, ExpTransform, SigmoidTransform,
                         SoftplusTransform, TanhTransform, Transform)
from .uniform import Uniform

__all__ = ["Bernoulli", "Categorical", "Distribution", "ExponentialFamily", "Exponential", "Independent",
           "Laplace", "MultivariateNormal", "Normal", "OneHotCategorical", "OneHotCategoricalStraightThrough",
           "Uniform", "constraints", "kl_divergence", "register_kl", "LogNormal", "TransformedDistribution",
           "transforms", "AbsTransform", "AffineTransform", "ComposeTransform", "ExpTransform", "SigmoidTransform",
           "SoftplusTransform", "TanhTransform", "Transform"]
