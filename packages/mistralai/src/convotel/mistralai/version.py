"""Version of the convotel-mistralai distribution."""

__version__ = "0.1.0"
