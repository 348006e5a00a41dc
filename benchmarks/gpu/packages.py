"""The GPU run's package lists: which wheels travel (wheels.txt), what the GPU image has (image-packages.txt),
and the checks that they fit together.

    python benchmarks/gpu/packages.py pins [--optional]      # name==version lines, for wheels.sh
    python benchmarks/gpu/packages.py check [--wheels DIR]   # list consistency (+ the wheel folder, if given)
    python benchmarks/gpu/packages.py installed [--optional] # on the GPU machine: carried wheels' requirements met

Standard library plus `packaging` (present here and on the GPU image).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import sys
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WHEELS_TXT = HERE / "wheels.txt"
IMAGE_TXT = HERE / "image-packages.txt"
CONSTRAINTS_TXT = REPO / "constraints.txt"
TIERS = ("required", "optional")
# What travels with one device call: tracked files + carried wheels, 64 MiB together.
CARRY_LIMIT_BYTES = 64 * 2**20
# The GPU machine, for environment markers and wheel tags.
GPU_MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "platform_machine": "x86_64",
    "platform_system": "Linux",
    "sys_platform": "linux",
    "os_name": "posix",
    "extra": "",
}

__all__ = [
    "CARRY_LIMIT_BYTES",
    "blocked_modules",
    "check_installed",
    "check_lists",
    "check_wheel_folder",
    "read_image_list",
    "read_pins",
    "read_wheel_list",
]


def read_wheel_list(path: Path = WHEELS_TXT) -> Dict[str, Dict[str, str]]:
    """{tier: {canonical name: version}} from wheels.txt; raises ValueError on a line that is not `name==version`."""
    tiers: Dict[str, Dict[str, str]] = {}
    tier: Optional[str] = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            tier = header.group(1)
            if tier not in TIERS:
                raise ValueError(f"{path}:{number}: unknown section [{tier}], expected one of {TIERS}")
            tiers.setdefault(tier, {})
            continue
        if tier is None:
            raise ValueError(f"{path}:{number}: {line!r} before any [required] / [optional] section")
        req = Requirement(line)
        pins = [s for s in req.specifier if s.operator == "=="]
        if len(pins) != 1 or len(req.specifier) != 1:
            raise ValueError(f"{path}:{number}: {line!r} must pin one exact version (name==version)")
        name = canonicalize_name(req.name)
        if any(name in t for t in tiers.values()):
            raise ValueError(f"{path}:{number}: {req.name} listed twice")
        tiers[tier][name] = pins[0].version
    return tiers


def pin_exceptions(path: Path = WHEELS_TXT) -> Dict[str, str]:
    """{canonical name: reason} for wheels.txt lines marked `# pin differs: <reason>` (a version other than
    constraints.txt's, e.g. where the tested version has no wheel for the GPU machine's Python)."""
    out: Dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line, _, comment = raw.partition("#")
        if line.strip() and comment.strip().startswith("pin differs:"):
            out[canonicalize_name(Requirement(line.strip()).name)] = comment.strip()[len("pin differs:") :].strip()
    return out


def read_image_list(path: Path = IMAGE_TXT) -> Dict[str, Optional[str]]:
    """{canonical name: version or None (version not read there)} of the GPU image's distributions."""
    out: Dict[str, Optional[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canonicalize_name(name)] = version or None
    return out


def read_pins(path: Path = CONSTRAINTS_TXT) -> Dict[str, str]:
    """{canonical name: version} of constraints.txt (`==` and `===` pins)."""
    out: Dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*={2,3}\s*(\S+)", line)
        if m:
            out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def _requires_from_wheel(wheel: Path) -> List[str]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        meta = Parser().parsestr(zf.read(name).decode("utf-8"))
    return meta.get_all("Requires-Dist") or []


def _requires_installed(name: str, version: str) -> Optional[List[str]]:
    """Requires-Dist of the installed distribution, or None if it is not installed at that version."""
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return None
    if Version(dist.version) != Version(version):
        return None
    return list(dist.requires or [])


def _applicable(requires: Iterable[str]) -> List[Requirement]:
    """The requirements that hold on the GPU machine (markers evaluated there, no extras)."""
    out = []
    for text in requires:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(GPU_MARKERS):
            out.append(req)
    return out


def _wheels_by_name(folder: Path) -> Dict[str, List[Path]]:
    out: Dict[str, List[Path]] = {}
    for wheel in sorted(folder.glob("*.whl")):
        name = canonicalize_name(parse_wheel_filename(wheel.name)[0])
        out.setdefault(name, []).append(wheel)
    return out


def _carried(tiers: Dict[str, Dict[str, str]], optional: bool) -> Dict[str, str]:
    carried = dict(tiers.get("required", {}))
    if optional:
        carried.update(tiers.get("optional", {}))
    return carried


def check_lists(
    wheel_folder: Optional[Path] = None, optional: bool = False
) -> tuple[List[str], List[str]]:
    """(problems, notes) of the wheel list against constraints.txt and the image.

    Problems: a pin that differs from constraints.txt (unless marked `# pin differs:`); a carried package that the
    image already has at the same version; a requirement of a [required] package that neither another carried
    wheel nor the image meets (by name, and by version where the image's version is known). Requirements are read
    from the wheel folder if given, else from this environment's installed copy of the same version.
    """
    problems: List[str] = []
    notes: List[str] = []
    tiers = read_wheel_list()
    image = read_image_list()
    pins = read_pins()
    exceptions = pin_exceptions()
    for tier, entries in tiers.items():
        for name, version in entries.items():
            if name in pins and Version(pins[name]) != Version(version):
                if name in exceptions:
                    notes.append(f"{name}=={version} (constraints.txt: {pins[name]}): {exceptions[name]}")
                else:
                    problems.append(f"wheels.txt pins {name}=={version} but constraints.txt has {pins[name]}")
            if name not in pins:
                notes.append(f"{name} is not in constraints.txt (not tested on CPU at that version)")
            if image.get(name) is not None and Version(image[name]) == Version(version):
                problems.append(f"{name}=={version} is on the GPU image already: drop it from wheels.txt")
    carried = _carried(tiers, optional)
    wheels = _wheels_by_name(wheel_folder) if wheel_folder is not None else {}
    if optional:
        notes.append("[optional] wheels install without their declared requirements (nerfstudio's need open3d, "
                     "~400 MB): the dry run imports what the step imports instead")  # fmt: skip
    for name, version in tiers.get("required", {}).items():
        if name in wheels:
            requires = _requires_from_wheel(wheels[name][0])
        else:
            requires = _requires_installed(name, version)
            if requires is None:
                notes.append(f"{name}=={version}: not installed here at that version, requirements not checked")
                continue
        for req in _applicable(requires):
            dep = canonicalize_name(req.name)
            if dep in carried:
                if not req.specifier.contains(carried[dep], prereleases=True):
                    problems.append(f"{name} needs {req}, wheels.txt carries {dep}=={carried[dep]}")
            elif dep in image:
                if image[dep] is not None and not req.specifier.contains(image[dep], prereleases=True):
                    problems.append(f"{name} needs {req}, the GPU image has {dep}=={image[dep]}: carry a wheel")
            else:
                problems.append(f"{name} needs {req}: neither carried (wheels.txt) nor on the GPU image")
    return problems, notes


def check_wheel_folder(folder: Path, optional: bool = False) -> tuple[List[str], int]:
    """(problems, total bytes) of a built wheel folder: one wheel per carried package at its pinned version,
    installable on CPython 3.12 / Linux x86_64, nothing else, and small enough to travel with the repository."""
    problems: List[str] = []
    carried = _carried(read_wheel_list(), optional)
    wheels = _wheels_by_name(folder)
    for name, version in carried.items():
        found = wheels.get(name, [])
        if len(found) != 1:
            problems.append(f"{name}: expected one wheel in {folder}, found {len(found)}")
            continue
        _, wheel_version, _, tags = parse_wheel_filename(found[0].name)
        if wheel_version != Version(version):
            problems.append(f"{found[0].name}: version {wheel_version}, wheels.txt pins {version}")
        if not any(_tag_fits(tag) for tag in tags):
            problems.append(f"{found[0].name}: no tag installs on CPython 3.12, Linux x86_64")
    for name in sorted(set(wheels) - set(carried)):
        problems.append(f"{wheels[name][0].name} is not listed in wheels.txt ({'all' if optional else 'required'})")
    total = sum(w.stat().st_size for ws in wheels.values() for w in ws)
    return problems, total


def _tag_fits(tag) -> bool:
    interp, abi, plat = tag.interpreter, tag.abi, tag.platform
    py_ok = interp in ("py3", "cp312") or (interp.startswith("cp3") and abi == "abi3" and int(interp[3:]) <= 12)
    abi_ok = abi in ("none", "abi3", "cp312")
    plat_ok = plat == "any" or (plat.startswith("manylinux") and plat.endswith("_x86_64"))
    return py_ok and abi_ok and plat_ok


def check_installed(optional: bool = False) -> List[str]:
    """On the GPU machine, after the install: every carried package imports as the pinned version and its
    requirements are met by what is installed there (a `pip check` restricted to what we carried)."""
    problems: List[str] = []
    for name, version in _carried(read_wheel_list(), optional).items():
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            problems.append(f"{name}=={version} is not installed")
            continue
        if Version(dist.version) != Version(version):
            problems.append(f"{name}: {dist.version} installed, wheels.txt pins {version}")
        for req in _applicable(dist.requires or []):
            try:
                have = md.version(req.name)
            except md.PackageNotFoundError:
                problems.append(f"{name} needs {req}: not installed")
                continue
            if not req.specifier.contains(have, prereleases=True):
                problems.append(f"{name} needs {req}: {have} installed")
    return problems


def _installed_closure(names: set) -> set:
    """`names` plus, transitively, what their copies installed here require. The image's packages can be at other
    versions here (huggingface_hub 2.x needs httpx2, 1.x on the image does not): what a local version needs is
    allowed, since the image's own version brings its own requirements."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate():
                todo.append(canonicalize_name(req.name))
    return seen


def blocked_modules(optional: bool = False) -> Dict[str, List[str]]:
    """Top-level module names installed here whose distributions are neither on the GPU image nor carried:
    {module: [distributions]}. Standard-library names are never blocked."""
    allowed = _installed_closure(set(read_image_list())) | set(_carried(read_wheel_list(), optional))
    allowed |= {"difix-ns", "pip", "setuptools", "wheel"}
    blocked: Dict[str, List[str]] = {}
    for module, dists in md.packages_distributions().items():
        # the standard library, the repository's own folders (tests/...) and stand-ins (shims/) stay importable
        if module in sys.stdlib_module_names or (REPO / module).exists() or (HERE / "shims" / module).exists():
            continue
        names = sorted({canonicalize_name(d) for d in dists})
        if not any(n in allowed for n in names):
            blocked[module] = names
    return blocked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["pins", "check", "installed"])
    parser.add_argument("--optional", action="store_true", help="include the [optional] wheels")
    parser.add_argument("--wheels", type=Path, default=None, help="a built wheel folder to check as well")
    args = parser.parse_args()
    if args.command == "pins":
        for name, version in _carried(read_wheel_list(), args.optional).items():
            print(f"{name}=={version}")
        return 0
    if args.command == "installed":
        problems = check_installed(args.optional)
        print("\n".join(problems) if problems else "carried packages installed, their requirements met")
        return 1 if problems else 0
    problems, notes = check_lists(args.wheels, args.optional)
    if args.wheels is not None:
        folder_problems, total = check_wheel_folder(args.wheels, args.optional)
        problems += folder_problems
        notes.append(f"wheel folder {args.wheels}: {total / 2**20:.1f} MiB")
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("wheel list consistent" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
