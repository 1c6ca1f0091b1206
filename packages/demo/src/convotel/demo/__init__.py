"""The ``convotel demo`` command: a small traced multi-user chatbot and its loopback LLM server.

* :mod:`convotel.demo.app`: the command (``add_arguments`` / ``run``, called by ``convotel demo``).
* :mod:`convotel.demo.conversations`: the scripted conversations held, in process or over HTTP,
  with :mod:`convotel.demo.clients` (the SDK clients and bots) and :mod:`convotel.demo.summary`
  (the closing sessions table); :mod:`convotel.demo.user_feedback` (the users' feedback afterwards).
* :mod:`convotel.demo.telemetry`: where the spans go (SQLite store, OTLP) and the instrumentors.
* :mod:`convotel.demo.script`: who says what, through which SDK.
* :mod:`convotel.demo.bots`: the chatbot over the OpenAI, Mistral and LlamaIndex SDKs.
* :mod:`convotel.demo.fake_server`: the in-process server speaking the OpenAI and Mistral wire
  formats on 127.0.0.1 (faults included); :mod:`convotel.demo.fake_answers` writes its bodies,
  with :mod:`convotel.demo.fake_replies` as its deterministic "model" (built from
  :mod:`convotel.demo.fake_tokens`, :mod:`convotel.demo.fake_topics` and
  :mod:`convotel.demo.fake_tool_calls`).
* :mod:`convotel.demo.wire`: the OpenAI and Mistral wire formats as plain data, shared with the
  tests and the benchmarks.

This package is the ``convotel-demo`` distribution: it brings the SDKs and adapters the demo drives
(``openai``, ``mistralai``, ``llama-index-core``, ``convotel-openai``, ``convotel-mistralai``,
``convotel-llama-index``; ``[serve]`` and ``[otlp]`` for the web service and OTLP export), so the
core ``convotel`` holds the library only.
"""
