"""Run under ``opentelemetry-instrument`` with ``OTEL_TRACES_SAMPLER=convotel_session`` and
``OTEL_TRACES_SAMPLER_ARG=0.25`` (``nox -s sampler_env``): OpenTelemetry's configurator loads
convotel's session sampler from its entry point, and it keeps whole sessions at that ratio."""

from __future__ import annotations

import os
import sys

from opentelemetry import trace

from convotel import using_session
from convotel.sampling import SessionSampler, session_bucket


def main() -> int:
    assert os.environ.get("OTEL_TRACES_SAMPLER") == "convotel_session", "run it through nox"
    provider = trace.get_tracer_provider()
    sampler = getattr(provider, "sampler", None)
    if not isinstance(sampler, SessionSampler) or sampler.threshold != 2_500:
        print(f"the configurator installed {sampler!r}, not SessionSampler(0.25)")
        return 1
    tracer = trace.get_tracer("sampler-from-env")
    kept: dict[str, set[bool]] = {}
    for turn in range(2):
        for index in range(400):
            session_id = f"env-session-{index}"
            with (
                using_session(session_id),
                tracer.start_as_current_span(f"turn {turn}") as root,
                tracer.start_as_current_span("ChatCompletion") as child,
            ):
                decisions = {root.is_recording(), child.is_recording()}
            kept.setdefault(session_id, set()).update(decisions)
    split = [s for s, decisions in kept.items() if len(decisions) != 1]
    if split:
        print(f"sessions sampled in part: {split[:5]}")
        return 1
    chosen = {s for s, decisions in kept.items() if True in decisions}
    expected = {s for s in kept if session_bucket(s) < 2_500}
    if chosen != expected:
        print(f"kept {len(chosen)} sessions, the bucket rule keeps {len(expected)}")
        return 1
    print(f"OTEL_TRACES_SAMPLER=convotel_session kept {len(chosen)} of {len(kept)} whole sessions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
