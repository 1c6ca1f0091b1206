"""Version of the convotel-openai distribution."""

__version__ = "0.1.0"
