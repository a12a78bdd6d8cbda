"""The base layer: what every other layer may use and that uses no other layer but :mod:`tsgu_core.errors`.

* :mod:`~tsgu_core.base.quiet` — silences PyTorch's beta/invariant notices around sparse tensors.
* :mod:`~tsgu_core.base.transforms` — whether ``torch.compile`` or ``torch.func`` is at work.
"""
