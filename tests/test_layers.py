"""The package's layers point down and its modules form no import cycle (docs/ARCHITECTURE.md, "Layers").

Every ``import`` statement counts, at module level or inside a function: a function-level import hides an upward
edge from Python's import order, not from the structure.
"""
import ast
import pathlib
from typing import Dict, List, Set, Tuple

import pytest

import gsr

PACKAGE = pathlib.Path(gsr.__file__).parent

# lowest first; a module may import from a lower layer or from its own package, not from a sibling of its layer
LAYERS: List[Tuple[str, ...]] = [
    ('utils', ),
    ('data', 'archs', 'metrics'),
    ('losses', ),
    ('models', ),
    ('analysis', ),
    ('repro', ),
    ('tools', 'cli', 'train', 'test', 'compat', ''),  # the commands, BasicSR's seams and ``import gsr``
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_name(path: pathlib.Path) -> str:
    parts = ('gsr', ) + path.relative_to(PACKAGE).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports(path: pathlib.Path) -> Set[Tuple[str, int]]:
    """(imported gsr module, line) of every import statement of one file, relative imports resolved."""
    module = module_name(path)
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {(a.name, node.lineno) for a in node.names if a.name.split('.')[0] == 'gsr'}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(anchor + ([base] if base else []))
            if base.split('.')[0] == 'gsr':
                # ``from gsr.x import y`` imports gsr.x.y when y is a module
                found |= {(f'{base}.{a.name}' if module_exists(f'{base}.{a.name}') else base, node.lineno)
                          for a in node.names}
    return found


def module_exists(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split('.')[1:])
    return path.with_suffix('.py').is_file() or (path / '__init__.py').is_file()


def import_graph() -> Dict[str, Set[Tuple[str, int]]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob('*.py'))}


def layer_part(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else ''


def upward_edges(graph: Dict[str, Set[Tuple[str, int]]]) -> List[str]:
    bad = []
    for module, targets in graph.items():
        source = layer_part(module)
        for target, line in sorted(targets):
            dest = layer_part(target)
            if dest == source or RANK[source] == len(LAYERS) - 1:
                continue
            if RANK[dest] >= RANK[source]:
                bad.append(f'{module}:{line} imports {target} ({dest or "gsr"} is not below {source})')
    return bad


def cycles(graph: Dict[str, Set[Tuple[str, int]]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    edges = {m: sorted({t for t, _ in targets if t in graph and t != m}) for m, targets in graph.items()}
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        for t in edges[m]:
            if t not in index:
                visit(t)
                low[m] = min(low[m], low[t])
            elif t in stack:
                low[m] = min(low[m], index[t])
        if low[m] == index[m]:
            component = []
            while True:
                t = stack.pop()
                component.append(t)
                if t == m:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in edges:
        if m not in index:
            visit(m)
    return found


def test_every_package_has_a_layer():
    assert {layer_part(m) for m in import_graph()} <= set(RANK)


def test_imports_point_down():
    assert upward_edges(import_graph()) == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize('planted', [('gsr.utils.image_io', 'gsr.archs.attached_arch'),
                                     ('gsr.data.kernels', 'gsr.archs.attached_arch'),
                                     ('gsr.repro.runner', 'gsr.tools.evaluate')])
def test_a_planted_upward_import_is_found(planted):
    graph = import_graph()
    source, target = planted
    graph[source] = graph[source] | {(target, 999)}
    assert upward_edges(graph) == [f'{source}:999 imports {target} ({layer_part(target)} is not below '
                                   f'{layer_part(source)})']


def test_a_planted_cycle_is_found():
    graph = import_graph()
    graph['gsr.utils.errors'] = graph['gsr.utils.errors'] | {('gsr.utils.checkpoint', 1)}
    assert ['gsr.utils.checkpoint', 'gsr.utils.errors'] in cycles(graph)
