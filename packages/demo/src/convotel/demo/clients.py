"""The demo's SDK clients, pointed at the loopback server or at the real APIs, and the bot each
conversation talks to through them."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import openai
from opentelemetry.trace import Tracer

from convotel.demo.bots import ChatBot, LlamaIndexChatBot, MistralChatBot, OpenAIChatBot
from convotel.demo.fake_server import FakeLLMServer
from convotel.demo.script import MISTRAL_MODEL, Provider

__all__ = ["Clients", "build_clients", "make_bot"]


@dataclass
class Clients:
    """The SDK clients, pointed at the loopback server or at the real APIs."""

    openai: openai.OpenAI
    mistral: Any
    openai_live: bool
    mistral_live: bool

    def close(self) -> None:
        self.openai.close()
        with contextlib.suppress(Exception):
            self.mistral.__exit__(None, None, None)


def build_clients(server: FakeLLMServer | None, openai_live: bool, mistral_live: bool) -> Clients:
    from mistralai.client import Mistral
    from mistralai.client.utils import BackoffStrategy, RetryConfig

    retry = RetryConfig("backoff", BackoffStrategy(50, 1000, 2.0, 10_000), True)
    if openai_live:
        openai_client = openai.OpenAI(max_retries=2)
    else:
        assert server is not None
        openai_client = openai.OpenAI(
            base_url=server.openai_base_url, api_key="sk-demo-loopback", max_retries=2
        )
    if mistral_live:
        mistral = Mistral(api_key=os.environ["MISTRAL_API_KEY"], retry_config=retry)
    else:
        assert server is not None
        mistral = Mistral(
            api_key="demo-loopback", server_url=server.mistral_server_url, retry_config=retry
        )
    return Clients(openai_client, mistral, openai_live, mistral_live)


def make_bot(provider: Provider, clients: Clients, tracer: Tracer) -> ChatBot:
    if provider == "mistral":
        return MistralChatBot(clients.mistral, MISTRAL_MODEL)
    if provider == "llama_index":
        return LlamaIndexChatBot(clients.openai)
    return OpenAIChatBot(clients.openai, tracer, live=clients.openai_live)
