"""Every entry point of the workspace: tests, lint, the demo, benchmarks and the version matrix.

``nox -s tests`` runs the whole suite against the latest SDKs; ``nox -s tests_min`` against the
lowest supported ones; ``nox -s demo`` runs the main job; ``nox -s lint``, ``bench``, ``e2e`` and
``wheels`` do what their names say. uv is used as the virtualenv backend when it is installed
(``pip install "nox[uv]"``), plain virtualenv + pip otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import zipfile
from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.default_venv_backend = "uv|virtualenv"
# uv does not write bytecode by default; without it every test run compiles every import.
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")
nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True
# A session whose Python is not installed fails the run instead of being skipped (nox's default
# outside CI), and nox never downloads one: a green run means every version listed here ran on
# the machine's own interpreters (.ci/run makes pyenv's versions visible).
nox.options.error_on_missing_interpreters = True
nox.options.download_python = "never"

#: Every supported Python. `tests` runs the whole suite on the Python nox runs on (3.11 in CI);
#: `tests_python` runs it on the oldest and the newest, `core_openai` the core and the OpenAI
#: adapter on the one in between, so each version runs at least the core and one adapter.
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
SUITE_PYTHONS = [PYTHONS[0], PYTHONS[-1]]
CORE_AND_ADAPTER_PYTHONS = ["3.12"]

#: The local distributions, core first (installed together so `convotel` resolves locally).
LOCAL_PACKAGES = ["shared", *sorted(f"packages/{p.name}" for p in (ROOT / "packages").iterdir())]

#: Real web stacks for the web-service tests and `convotel demo --serve`: FastAPI/Starlette on
#: uvicorn and a plain WSGI app, each under OpenTelemetry's own server instrumentation.
WEB_TOOLS = [
    "fastapi>=0.135",  # fastapi.sse (server-sent events)
    "uvicorn>=0.29",
    "httpx>=0.27",
    "httpx-sse>=0.4",
    "opentelemetry-instrumentation-fastapi>=0.58b0",
    "opentelemetry-instrumentation-wsgi>=0.58b0",
]

TEST_TOOLS = [
    "pytest>=8",
    "pytest-asyncio>=0.24",
    "vcrpy>=8.5",  # replays httpx2 (openai 3.x); 9.4.2 on Python 3.11, 8.5 on 3.10 verified
    "hypothesis>=6",
    "openinference-instrumentation>=0.1.20",
    "opentelemetry-sdk>=1.27",
    "opentelemetry-exporter-otlp-proto-http>=1.27",
    "numpy",  # dspy's Embedder needs it without declaring it
    *WEB_TOOLS,
]

#: Framework SDKs at their latest supported versions (upper bounds are the tested majors).
#: llama-index-llms-openai pins openai<3, so its integration runs in `tests_llama_openai`.
LATEST_SDKS = [
    "openai>=2.0.0,<4",
    "mistralai>=2.0.0,<4",
    "llama-index-core>=0.14.9,<0.15",
    "dspy>=3.0.0,<4",
]

#: LlamaIndex's OpenAI integration, which pins openai<3 (convotel-openai supports 2.x too).
LLAMA_INDEX_OPENAI_SDKS = [
    "openai>=2,<3",
    "llama-index-core>=0.14.9,<0.15",
    "llama-index-llms-openai>=0.8.3,<0.9",
    "llama-index-embeddings-openai>=0.7,<0.8",
]

#: The other instrumentors the benchmarks compare convotel with (OpenLLMetry has none for DSPy).
BENCH_CONTENDERS = [
    "openinference-instrumentation-openai",
    "openinference-instrumentation-mistralai",
    "openinference-instrumentation-llama-index",
    "openinference-instrumentation-dspy",
    "opentelemetry-instrumentation-openai",
    "opentelemetry-instrumentation-mistralai",
    "opentelemetry-instrumentation-llamaindex",
]

#: The core with rich, which draws the timeline of `convotel sessions show` (core_min and
#: sampler_env install the core alone, so core_min runs the CLI tests without it).
CORE_WITH_CLI = {"shared": "shared[cli]"}

#: The demo's distribution brings what the demo drives (openai, mistralai, llama-index-core);
#: `demo` and `e2e` add its extras for `--serve` and `--otlp`.
DEMO_WITH_EXTRAS = {"packages/demo": "packages/demo[serve,otlp]"}

#: The Phoenix server for `e2e`, in a virtualenv of its own (~850 MB with its dependencies).
PHOENIX_SERVER = ["arize-phoenix==20.26.1", "arize-phoenix-client==3.5.0"]
PHOENIX_VENV = ROOT / ".nox" / "phoenix-server"

#: The framework SDKs at the lowest versions convotel supports.
LOWEST_SDKS = [
    "openai==2.0.0",
    "mistralai==2.0.0",
    "llama-index-core==0.14.9",
    "dspy==3.0.0",
]

#: The core's own dependencies at their floors (mistralai 2.0 needs a newer semconv, so the
#: core's floor is tested on its own in `core_min`).
CORE_FLOORS = [
    "opentelemetry-api==1.37.0",
    "opentelemetry-sdk==1.37.0",
    "opentelemetry-instrumentation==0.58b0",
    "opentelemetry-semantic-conventions==0.58b0",
    "openinference-semantic-conventions==0.1.33",
    "wrapt==1.16.0",
]

LINT_TOOLS = ["ruff>=0.6", "mypy>=1.11", "types-PyYAML"]

# Keep every test run offline and quiet.
OFFLINE_ENV = {
    "OTEL_SDK_DISABLED": "false",
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "DSP_CACHEBOOL": "False",
    "HF_HUB_OFFLINE": "1",
    "PYTHONDONTWRITEBYTECODE": "",
    "TOKENIZERS_PARALLELISM": "false",
}


def install_local(
    session: nox.Session,
    *extra: str,
    editable: bool = True,
    specs: dict[str, str] | None = None,
) -> None:
    """Install every local distribution (``specs`` maps one to a spec with extras; the core comes
    with its ``cli`` extra) and ``extra``."""
    local: list[str] = []
    for package in LOCAL_PACKAGES:
        spec = {**CORE_WITH_CLI, **(specs or {})}.get(package, package)
        local += ["-e", spec] if editable else [spec]
    session.install(*local, *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """All tests (except the Phoenix end-to-end test) against the latest SDKs."""
    install_local(session, *LATEST_SDKS, *TEST_TOOLS)
    session.run("pytest", "-m", "not e2e and not reliability", *session.posargs, env=OFFLINE_ENV)


@nox.session(python=SUITE_PYTHONS)
def tests_python(session: nox.Session) -> None:
    """The whole suite (as `tests`) on the oldest and the newest supported Python."""
    install_local(session, *LATEST_SDKS, *TEST_TOOLS)
    session.run("pytest", "-m", "not e2e and not reliability", *session.posargs, env=OFFLINE_ENV)


@nox.session(python=CORE_AND_ADAPTER_PYTHONS)
def core_openai(session: nox.Session) -> None:
    """The core (context, spans, store, CLI, plugin) and the OpenAI adapter on one more Python."""
    # The tests share helpers with the demo (its loopback wire format), which brings its SDKs.
    install_local(session, *LATEST_SDKS, *TEST_TOOLS)
    suites = ["tests/core", "tests/store", "tests/cli", "tests/testing", "tests/openai"]
    session.run(
        "pytest", "-m", "not e2e and not reliability", *suites, *session.posargs, env=OFFLINE_ENV
    )


@nox.session
def reliability(session: nox.Session) -> None:
    """Load, faults, bad input (hypothesis), secrets and memory across every adapter."""
    install_local(session, *LATEST_SDKS, *TEST_TOOLS)
    suite = ["-m", "reliability", "tests/reliability"]
    session.run("pytest", *suite, *session.posargs, env=OFFLINE_ENV)


@nox.session
def tests_min(session: nox.Session) -> None:
    """All tests against the lowest supported SDK versions."""
    install_local(session, *LOWEST_SDKS, *TEST_TOOLS)
    session.run("pytest", "-m", "not e2e and not reliability", *session.posargs, env=OFFLINE_ENV)


@nox.session
def core_min(session: nox.Session) -> None:
    """The core (context, spans, store, CLI, plugin) on its lowest supported dependencies."""
    session.install("-e", "shared", *CORE_FLOORS, *TEST_TOOLS[:4], "openinference-instrumentation")
    suites = ["tests/core", "tests/store", "tests/cli", "tests/testing"]
    session.run("pytest", *suites, *session.posargs, env=OFFLINE_ENV)


@nox.session
def tests_llama_index_openai(session: nox.Session) -> None:
    """LlamaIndex with its OpenAI integration and both instrumentors (openai 2.x)."""
    install_local(session, *LLAMA_INDEX_OPENAI_SDKS, *TEST_TOOLS)
    session.run("pytest", "tests/llama_index", *session.posargs, env=OFFLINE_ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint + format) and mypy --strict on the distributions."""
    install_local(session, *LATEST_SDKS, *LINT_TOOLS, *TEST_TOOLS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    sources = [f"{package}/src" for package in LOCAL_PACKAGES]
    session.run("mypy", *sources)


#: The documentation site (mkdocs-material, API reference by mkdocstrings) and the runner of
#: every Python example in its guides.
DOCS_TOOLS = [
    "mkdocs>=1.6,<2",
    "mkdocs-material>=9.5",
    "mkdocstrings[python]>=0.26",
    "griffe-sphinx>=0.2",
    "pytest-markdown-docs>=0.9",
]


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site strictly and run every Python example in its guides."""
    install_local(session, *LATEST_SDKS, *TEST_TOOLS, *DOCS_TOOLS, specs=DEMO_WITH_EXTRAS)
    site = ROOT / ".nox" / "site"
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", str(site), env={"NO_MKDOCS_2_WARNING": "1"}
    )
    session.run("pytest", "--markdown-docs", "docs", *session.posargs, env=OFFLINE_ENV)


@nox.session
def sampler_env(session: nox.Session) -> None:
    """convotel's session sampler chosen by OTEL_TRACES_SAMPLER under opentelemetry-instrument
    (opentelemetry-distro's configurator reads it; kept out of the test venvs, where a
    configured global tracer provider would stand in for the tests' own)."""
    session.install("-e", "shared", "opentelemetry-distro>=0.58b0")
    env = {
        **OFFLINE_ENV,
        "OTEL_TRACES_SAMPLER": "convotel_session",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    program = ["python", "tests/packaging/sampler_from_env.py"]
    session.run("opentelemetry-instrument", *program, env=env)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: a multi-user chatbot traced into the embedded store, then its sessions."""
    install_local(session, specs=DEMO_WITH_EXTRAS)
    store = os.environ.get("CONVOTEL_STORE", str(ROOT / ".convotel" / "demo.sqlite3"))
    session.run("convotel", "demo", "--store", store, *session.posargs, env=OFFLINE_ENV)


@nox.session
def e2e(session: nox.Session) -> None:
    """A real Arize Phoenix server on 127.0.0.1 receiving the demo's sessions over OTLP/HTTP."""
    install_local(session, "pytest>=8", "pytest-asyncio>=0.24", specs=DEMO_WITH_EXTRAS)
    phoenix = PHOENIX_VENV / "bin" / "phoenix"
    if not phoenix.exists():
        session.run("python", "-m", "venv", str(PHOENIX_VENV))
        python = str(PHOENIX_VENV / "bin" / "python")
        installer = [python, "-m", "pip", "install", "-q"]
        if importlib.util.find_spec("uv") is not None:  # nox[uv]: much faster
            installer = [sys.executable, "-m", "uv", "pip", "install", "-q", "-p", python]
        session.run(*installer, *PHOENIX_SERVER, external=True)
    env = {**OFFLINE_ENV, "CONVOTEL_PHOENIX_BIN": str(phoenix)}
    session.run("pytest", "-m", "e2e", "tests/e2e", *session.posargs, env=env)


@nox.session
def bench(session: nox.Session) -> None:
    """Per-call overhead of every adapter against the uninstrumented call and other tracers.

    ``nox -s bench -- --rounds 10`` is quicker; ``-- --markdown`` prints the table for README.md.
    """
    # Each other instrumentor is optional: the bench reports one that is missing as not installable.
    try:
        install_local(session, *LATEST_SDKS, *BENCH_CONTENDERS)
    except nox.command.CommandFailed:
        session.warn("The instrumentors do not install together: installing each on its own.")
        install_local(session, *LATEST_SDKS)
        for contender in BENCH_CONTENDERS:
            try:
                install_local(session, *LATEST_SDKS, contender)
            except nox.command.CommandFailed:
                session.warn(f"{contender} is not installable: the bench leaves it out.")
    session.run("python", "benchmarks/run_all.py", *session.posargs, env=OFFLINE_ENV)


@nox.session
def wheels(session: nox.Session) -> None:
    """Build real wheels, install them (no editable paths) and import every adapter."""
    dist = ROOT / ".nox" / "dist"
    session.install("build")
    for package in LOCAL_PACKAGES:
        session.run("python", "-m", "build", "--wheel", "--outdir", str(dist), package)
    wheels = sorted(str(path) for path in dist.glob("convotel*.whl"))
    # The core wheel is the library alone: the demo ships in convotel-demo.
    for core_wheel in dist.glob("convotel-[0-9]*.whl"):
        with zipfile.ZipFile(core_wheel) as archive:
            demo_files = [name for name in archive.namelist() if name.startswith("convotel/demo/")]
        if demo_files:
            session.error(f"{core_wheel.name} holds the demo: {demo_files[:3]}")
    session.install(*wheels, *LATEST_SDKS)
    session.run(
        "python",
        "-c",
        "import convotel, convotel.openai, convotel.mistralai, convotel.llama_index, "
        "convotel.dspy, convotel.demo.app; print('namespace ok:', list(convotel.__path__))",
    )
    session.run("convotel", "demo", "--help", silent=True)


#: Where `dists` builds every distribution's wheel and sdist.
DIST_DIR = ROOT / ".nox" / "distributions"

#: Each adapter: its SDK (what its `instruments` extra names), and another project's instrumentor
#: of the same SDK, registered under the SDK's own name, that must not share convotel's switch.
ALONE = {
    "openai": ("openai>=2.0.0,<4", "openinference-instrumentation-openai"),
    "mistralai": ("mistralai>=2.0.0,<4", "openinference-instrumentation-mistralai"),
    "llama_index": ("llama-index-core>=0.14.9,<0.15", "openinference-instrumentation-llama-index"),
    "dspy": ("dspy>=3.0.0,<4", "openinference-instrumentation-dspy"),
}
DISABLED = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"


@nox.session
def dists(session: nox.Session) -> None:
    """Build each distribution's sdist and its wheel from that sdist, then check them."""
    shutil.rmtree(DIST_DIR, ignore_errors=True)
    session.install("build[uv]>=1.2", "twine>=6.1", "tomli; python_version < '3.11'")
    for package in LOCAL_PACKAGES:
        build = ["python", "-m", "build", "--installer", "uv", "--outdir", str(DIST_DIR)]
        session.run(*build, package, silent=True)
    session.run("twine", "check", "--strict", *sorted(str(p) for p in DIST_DIR.iterdir()))
    session.run("python", "tests/packaging/check_dists.py", str(DIST_DIR), *PYTHONS)


@nox.session(reuse_venv=False, requires=["dists"])
@nox.parametrize("adapter", list(ALONE))
def alone(session: nox.Session, adapter: str) -> None:
    """One adapter's wheel, the core's and its SDK alone in a fresh virtualenv, under
    `opentelemetry-instrument`: it instruments a call; another project's instrumentor of the same
    SDK is switched off by its own name and convotel's by `convotel_<adapter>`, never both."""
    (core,) = DIST_DIR.glob("convotel-[0-9]*.whl")
    (wheel,) = DIST_DIR.glob(f"convotel_{adapter}-[0-9]*.whl")
    sdk, other = ALONE[adapter]
    session.install(str(core), str(wheel), sdk)
    script = str(ROOT / "tests" / "packaging" / "instrument_alone.py")
    run = ["opentelemetry-instrument", "python", script, adapter]
    ours, theirs = f"convotel_{adapter}", adapter
    env = {**OFFLINE_ENV, DISABLED: ""}
    session.run(*run, f"{ours}=on", env=env)
    session.install(f"{other}[instruments]")  # without its extra it is skipped, not disabled
    session.run(*run, f"{ours}=on", f"{theirs}=off", env={**env, DISABLED: theirs})
    session.run(*run, f"{ours}=off", f"{theirs}=on", env={**env, DISABLED: ours})
