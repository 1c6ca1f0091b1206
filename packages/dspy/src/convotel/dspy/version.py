"""Version of the convotel-dspy distribution."""

__version__ = "0.1.0"
