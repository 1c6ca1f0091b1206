"""A tiny SDK-shaped module for instrumentor tests."""

from __future__ import annotations


class Completions:
    def create(self, *, prompt: str) -> str:
        return prompt[::-1]

    async def acreate(self, *, prompt: str) -> str:
        return prompt.upper()

    @staticmethod
    def helper(*, prompt: str) -> str:
        return prompt * 2


def module_function(*, prompt: str) -> str:
    return prompt + "!"
