"""Imports run one way: helpers <- resources <- assets <- sensors <- definitions <- CLI. Read from the
source (ast), so the unit layer imports nothing of the code location to check it."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Each package may import only from packages on lower layers.
LAYERS = {
    "yolo_assets.core": 0,
    "yolo_assets.data": 1,
    "yolo_assets.release": 1,
    "yolo_assets.detector": 2,
    "resources": 3,
    "yolo_assets.assets": 4,
    "yolo_assets.serving": 4,
    "yolo_assets.history": 5,
    "sensors": 6,
    "yolo_assets.definitions": 7,
    "yolo_assets.ops": 8,
}


def package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "yolo_assets" and len(parts) > 1 else parts[0]


def imported(source: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return {module for module in modules if module.split(".")[0] in ("yolo_assets", "resources", "sensors")}


def test_every_package_has_a_layer() -> None:
    sources = [p for root in ("yolo_assets", "resources", "sensors") for p in (REPO / root).rglob("*.py")]
    found = {package(".".join(p.relative_to(REPO).with_suffix("").parts)) for p in sources} - {"yolo_assets.__init__"}
    assert found == set(LAYERS)


def test_imports_run_one_way() -> None:
    back_arrows = []
    for root in ("yolo_assets", "resources", "sensors"):
        for source in (REPO / root).rglob("*.py"):
            here = package(".".join(source.relative_to(REPO).with_suffix("").parts))
            if here not in LAYERS:
                continue
            for module in imported(source):
                there = package(module)
                if there != here and LAYERS.get(there, -1) >= LAYERS[here]:
                    back_arrows.append(f"{source.relative_to(REPO)} imports {module}")
    assert back_arrows == []


def test_the_domain_packages_import_no_dagster() -> None:
    """The dataset build, the training lifecycle and the release rules run and test without Dagster."""
    dagster_imports = []
    for root in ("core", "data", "release", "detector"):
        for source in (REPO / "yolo_assets" / root).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names] if isinstance(node, ast.Import) else []
                dagster_imports += [f"{source.relative_to(REPO)} imports {name}" for name in names if name.split(".")[0].startswith("dagster")]
    assert dagster_imports == []
