"""Backend ``torch``: CG, BiCGSTAB, MINRES and restarted GMRES in pure torch.

The same code runs on CPU and CUDA. All right-hand-side columns iterate
together, each with its own scalars and its own convergence test.
"""

from tsgu_backends.torch_backend.backend import TorchBackend

__all__ = ["TorchBackend"]
