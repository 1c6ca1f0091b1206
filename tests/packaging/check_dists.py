"""Check the built wheels and sdists of every convotel distribution before they are published.

Run by ``nox -s dists`` after ``python -m build`` (which builds each wheel from its sdist) and
``twine check --strict``::

    python tests/packaging/check_dists.py DIST_DIR 3.10 3.11 3.12 3.13

For each distribution: one wheel and one sdist; the licence file shipped in both; ``py.typed``
shipped; no bytecode; the version written in one place (the module's ``__version__``, or the
pyproject for the demo, which has no module version) and equal to the wheel's; a ``Programming
Language :: Python :: X.Y`` classifier for exactly the Pythons nox tests; instrumentor entry-point
names prefixed with ``convotel_`` (other projects register ``openai``, ``mistralai``...); each
adapter's ``convotel>=`` floor met by the core it is built with. Exits 1 naming every problem.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # nox installs tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]

#: distribution folder -> (normalised name, its package inside ``convotel/``, "" for the core)
DISTRIBUTIONS = {
    "shared": ("convotel", ""),
    "packages/openai": ("convotel_openai", "openai"),
    "packages/mistralai": ("convotel_mistralai", "mistralai"),
    "packages/llama_index": ("convotel_llama_index", "llama_index"),
    "packages/dspy": ("convotel_dspy", "dspy"),
    "packages/demo": ("convotel_demo", "demo"),
}
INSTRUMENTOR_GROUP = "opentelemetry_instrumentor"
VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)


def written_version(folder: str) -> tuple[str | None, list[str]]:
    """The version as written in the distribution's sources, and problems with where it is."""
    project = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]
    static = project.get("version")
    dynamic = "version" in project.get("dynamic", [])
    if static and dynamic:
        return None, [f"{folder}: version both static and dynamic"]
    if static:
        return static, []
    path = (
        ROOT
        / folder
        / tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["tool"]["hatch"]["version"][
            "path"
        ]
    )
    found = VERSION_LINE.findall(path.read_text())
    if len(found) != 1:
        return None, [f"{folder}: {path.name} must write __version__ exactly once"]
    return found[0], []


def check_wheel(folder: str, wheel: Path, package: str, pythons: list[str]) -> list[str]:
    name = wheel.name
    problems: list[str] = []
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
        dist_info = next(f.split("/")[0] for f in files if f.split("/")[0].endswith(".dist-info"))
        metadata = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        entry_points = (
            archive.read(f"{dist_info}/entry_points.txt").decode()
            if f"{dist_info}/entry_points.txt" in files
            else ""
        )
        licence = f"{dist_info}/licenses/LICENSE"
        if licence not in files:
            problems.append(f"{name}: no {licence}")
        elif archive.read(licence) != (ROOT / "LICENSE").read_bytes():
            problems.append(f"{name}: its LICENSE differs from the repository's")
        typed = f"convotel/{package}/py.typed" if package else "convotel/py.typed"
        if typed not in files:
            problems.append(f"{name}: no {typed}")
        if package and "convotel/__init__.py" in files:
            problems.append(f"{name}: ships convotel/__init__.py (only the core may)")
        if any(f.endswith(".pyc") or "__pycache__" in f for f in files):
            problems.append(f"{name}: ships bytecode")
        if package and package != "demo":
            module = archive.read(f"convotel/{package}/version.py").decode()
            if VERSION_LINE.findall(module) != [metadata["Version"]]:
                problems.append(f"{name}: version.py does not hold {metadata['Version']}")
    if metadata["License-Expression"] != "Apache-2.0":
        problems.append(f"{name}: License-Expression is {metadata['License-Expression']!r}")
    classified = sorted(
        c.rsplit(" :: ", 1)[1]
        for c in metadata.get_all("Classifier") or []
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    if classified != sorted(pythons):
        problems.append(f"{name}: Python classifiers {classified}, nox tests {pythons}")
    if metadata["Requires-Python"] != f">={pythons[0]}":
        problems.append(
            f"{name}: Requires-Python {metadata['Requires-Python']}, oldest tested {pythons[0]}"
        )
    in_group = False
    for line in entry_points.splitlines():
        if line.startswith("["):
            in_group = line.strip() == f"[{INSTRUMENTOR_GROUP}]"
        elif in_group and "=" in line and not line.split("=")[0].strip().startswith("convotel_"):
            problems.append(f"{name}: instrumentor entry point {line.strip()!r} is not convotel_*")
    if package and package != "demo" and f"[{INSTRUMENTOR_GROUP}]" not in entry_points:
        problems.append(f"{name}: no {INSTRUMENTOR_GROUP} entry point")
    return problems


def check_sdist(sdist: Path, package: str) -> list[str]:
    problems: list[str] = []
    with tarfile.open(sdist) as archive:
        top = sdist.name.removesuffix(".tar.gz")
        files = {member.name.removeprefix(f"{top}/") for member in archive.getmembers()}
        for required in ("pyproject.toml", "README.md", "LICENSE", "PKG-INFO"):
            if required not in files:
                problems.append(f"{sdist.name}: no {required}")
        typed = f"src/convotel/{package}/py.typed" if package else "src/convotel/py.typed"
        if typed not in files:
            problems.append(f"{sdist.name}: no {typed}")
        if any(f.endswith(".pyc") or "__pycache__" in f for f in files):
            problems.append(f"{sdist.name}: ships bytecode")
    return problems


def main(dist_dir: Path, pythons: list[str]) -> int:
    problems: list[str] = []
    versions: dict[str, str] = {}
    requirements: dict[str, list[str]] = {}
    for folder, (normalised, package) in DISTRIBUTIONS.items():
        wheels = sorted(dist_dir.glob(f"{normalised}-*.whl"))
        sdists = sorted(dist_dir.glob(f"{normalised}-*.tar.gz"))
        if len(wheels) != 1 or len(sdists) != 1:
            problems.append(f"{normalised}: {len(wheels)} wheels and {len(sdists)} sdists")
            continue
        version, where = written_version(folder)
        problems += where
        built = wheels[0].name.split("-")[1]
        if version != built:
            problems.append(f"{normalised}: sources say {version}, the wheel is {built}")
        if sdists[0].name != f"{normalised}-{built}.tar.gz":
            problems.append(f"{sdists[0].name}: not version {built}")
        versions[normalised] = built
        with zipfile.ZipFile(wheels[0]) as archive:
            dist_info = next(
                f.split("/")[0] for f in archive.namelist() if f.endswith(".dist-info/METADATA")
            )
            metadata = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        requirements[normalised] = metadata.get_all("Requires-Dist") or []
        problems += check_wheel(folder, wheels[0], package, pythons)
        problems += check_sdist(sdists[0], package)
    core = versions.get("convotel")
    for normalised, requires in requirements.items():
        for requirement in requires:
            # convotel>=X or with extras, convotel[cli]>=X
            floor = re.fullmatch(r"convotel(?:\[[\w,]+\])?>=([\w.]+)", requirement.replace(" ", ""))
            if (
                floor
                and core
                and tuple(map(int, floor[1].split("."))) > tuple(map(int, core.split(".")))
            ):
                problems.append(f"{normalised} needs convotel>={floor[1]}, the core is {core}")
    for problem in problems:
        print(f"PROBLEM {problem}")
    if not problems:
        print(f"{len(versions)} distributions checked: {versions}")
    return 1 if problems or len(versions) != len(DISTRIBUTIONS) else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))
