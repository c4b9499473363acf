"""hcmbench: train, sweep, evaluate and promote generative models of HCM cardiac MRI."""

from hcmbench.errors import HcmbenchError

__version__ = "0.1.0"
__all__ = ["HcmbenchError", "__version__"]
