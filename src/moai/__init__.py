"""moai: Mixture of AI — many LLMs behind one OpenAI-compatible endpoint."""

__version__ = "0.1.0"

__all__ = ["Mixture", "__version__"]


def __getattr__(name: str) -> object:
    """``from moai import Mixture`` without importing the engine (and its dependencies) at ``import moai``."""
    if name == "Mixture":
        from moai.mixture import Mixture

        return Mixture
    raise AttributeError(f"module 'moai' has no attribute {name!r}")
