"""Probability distributions with sparse parameters, as ``torch.distributions`` objects.

* :class:`GaussianMarkovRandomField` — a Gaussian given by its mean and a
  sparse precision matrix: exact ``log_prob`` (differentiable in the mean,
  the value and the precision's stored values), ``rsample`` through a sparse
  factor, marginal variances by selected inversion.

>>> from tsgu_core.distributions import GaussianMarkovRandomField
"""

from tsgu_core.distributions.gmrf import GaussianMarkovRandomField

__all__ = ["GaussianMarkovRandomField"]
