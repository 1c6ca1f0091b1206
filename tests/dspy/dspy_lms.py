"""DSPy language models the tests share: LiteLLM-engine LMs and a custom LM over the OpenAI SDK."""

from __future__ import annotations

import uuid
from typing import Any

import dspy
import openai
from dspy_spans import HAS_NATIVE_ENGINE


def litellm_lm(**kwargs: Any) -> dspy.LM:
    """An LM on the LiteLLM path; a fresh key so LiteLLM builds (and caches) a fresh client."""
    engine = {"engine": "litellm"} if HAS_NATIVE_ENGINE else {}
    return dspy.LM(
        "openai/gpt-4o-mini",
        api_key=f"sk-test-{uuid.uuid4().hex}",
        cache=False,
        num_retries=0,
        **engine,
        **kwargs,
    )


class OpenAIClientLM(dspy.BaseLM):
    """A custom DSPy LM calling the OpenAI SDK's ``chat.completions.create`` itself."""

    def __init__(self, base_url: str) -> None:
        super().__init__(model="openai/gpt-4o-mini", cache=False)
        self.client = openai.OpenAI(api_key="sk-test", base_url=base_url, max_retries=0)

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        return self.client.chat.completions.create(
            model="gpt-4o-mini", messages=messages or [{"role": "user", "content": prompt}]
        )
