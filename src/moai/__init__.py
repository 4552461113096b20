"""moai: Mixture of AI — many LLMs behind one OpenAI-compatible endpoint."""

__version__ = "0.1.0"
