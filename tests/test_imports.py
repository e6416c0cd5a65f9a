"""The package's modules form layers: no import cycle, no project import inside a function.

Read from the source (the `ast` of each module), so the check sees what a reader sees.
"""

import ast
import os

from tests.conftest import REFERENCE_INSTALLS, REPO

PACKAGE = 'srgan_jax'


def _modules() -> dict:
  """{'srgan_jax.models.vgg': path} for every module of the package."""
  found = {}
  root = os.path.join(REPO, PACKAGE)
  for folder, _, files in os.walk(root):
    for name in files:
      if name.endswith('.py'):
        relative = os.path.relpath(os.path.join(folder, name), REPO)[:-3].split(os.sep)
        if relative[-1] == '__init__':
          relative = relative[:-1]
        found['.'.join(relative)] = os.path.join(folder, name)
  return found


def _project_imports(tree: ast.AST, modules: dict) -> list[tuple[str, ast.AST]]:
  """(imported project module, node) for each import statement in `tree`."""
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from srgan_jax.models import vgg` imports srgan_jax.models and, if it is a
      # module, srgan_jax.models.vgg.
      names = [node.module] + [f'{node.module}.{alias.name}' for alias in node.names]
    else:
      continue
    for name in names:
      if name in modules:
        out.append((name, node))
  return out


def _graph():
  modules = _modules()
  graph, nested = {}, []
  for name, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    imports = _project_imports(tree, modules)
    # A package imports its parents' __init__ too, as Python runs them first.
    graph[name] = {target for target, _ in imports if target != name}
    for function in ast.walk(tree):
      if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        nested += [(name, function.name, target) for target, _ in
                   _project_imports(function, modules)]
  for name in graph:  # Importing a.b runs a/__init__.py first.
    parts = name.split('.')
    for i in range(1, len(parts)):
      parent = '.'.join(parts[:i])
      graph.setdefault(parent, set())
      for importer, targets in graph.items():
        if name in targets and parent != importer and not importer.startswith(parent + '.'):
          targets.add(parent)
  return graph, nested


def _cycle(graph: dict):
  """One import cycle as a list of modules, or None."""
  state = {}
  stack = []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for target in sorted(graph.get(node, ())):
      if state.get(target) == 'open':
        return stack[stack.index(target):] + [target]
      if target not in state:
        found = visit(target)
        if found:
          return found
    stack.pop()
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_the_package_has_no_import_cycle_and_no_function_level_project_import():
  graph, nested = _graph()
  assert len(graph) >= 15 and 'srgan_jax.train' in graph
  assert _cycle(graph) is None, ' -> '.join(_cycle(graph))
  assert nested == [], f'project modules imported inside functions: {nested}'
  # Inference never imports training.
  for module in ('srgan_jax.upscale', 'srgan_jax.evaluate', 'srgan_jax.run_folder'):
    reachable, todo = set(), [module]
    while todo:
      for target in graph.get(todo.pop(), ()):
        if target not in reachable:
          reachable.add(target)
          todo.append(target)
    assert not reachable & {'srgan_jax.train', 'srgan_jax.train_step'}, module
  # The demo page sits above the library: nothing imports it.
  assert not [name for name, targets in graph.items() if 'srgan_jax.demo' in targets]


def test_what_data_workers_unpickle_imports_no_jax_at_module_level():
  """Grain's workers import data_sources and what it imports; none may need JAX to load
  (Grain imports JAX itself, but the reading code must not touch a device)."""
  graph, _ = _graph()
  reachable, todo = {'srgan_jax.data_sources'}, ['srgan_jax.data_sources']
  while todo:
    for target in graph.get(todo.pop(), ()):
      if target not in reachable:
        reachable.add(target)
        todo.append(target)
  modules = _modules()
  for name in sorted(reachable):
    if name not in modules:
      continue
    with open(modules[name]) as f:
      tree = ast.parse(f.read())
    top_level = [alias.name for node in tree.body if isinstance(node, ast.Import)
                 for alias in node.names] + [
        node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module]
    assert not [m for m in top_level if m.split('.')[0] in ('jax', 'flax', 'tensorflow')], name


def test_the_check_finds_a_cycle_and_a_nested_import():
  """The checks above can fail."""
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert _cycle({'a': {'b'}, 'b': set()}) is None
  tree = ast.parse('def f():\n  from srgan_jax import train\n')
  function = tree.body[0]
  assert [t for t, _ in _project_imports(function, {'srgan_jax', 'srgan_jax.train'})] == [
      'srgan_jax', 'srgan_jax.train']


def test_library_and_configs_carry_no_run_logs():
  """Measured figures live in benchmarks/RESULTS.md; the code says why, not what one run took."""
  import re
  pattern = re.compile(r'H100|H200|sixth run|RESULTS\.md')
  found = []
  for top in ('srgan_jax', 'configs'):
    for folder, _, files in os.walk(os.path.join(REPO, top)):
      for name in files:
        if name.endswith('.py'):
          with open(os.path.join(folder, name)) as f:
            found += [f'{name}:{i}' for i, line in enumerate(f, 1) if pattern.search(line)]
  assert found == []


def _reference_imports(tree: ast.AST) -> list[str]:
  """Each import of a reference package (`REFERENCE_INSTALLS`) in `tree` not made through
  `import_reference`: import statements, and calls such as pytest.importorskip('torch')."""
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      names = [node.module]
    elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
          and isinstance(node.args[0].value, str)
          and getattr(node.func, 'attr', getattr(node.func, 'id', '')) in (
              'importorskip', 'import_module', '__import__')):
      names = [node.args[0].value]
    else:
      continue
    found += [f'line {node.lineno}: {name}' for name in names
              if name.split('.')[0] in REFERENCE_INSTALLS]
  return found


def test_test_modules_import_reference_packages_only_through_import_reference():
  """A test that imports torch (or lpips, basicsr, cv2) directly fails with ImportError on a
  machine without the references, where the README's test command must pass."""
  found = []
  for name in sorted(os.listdir(os.path.join(REPO, 'tests'))):
    if name.endswith('.py'):
      with open(os.path.join(REPO, 'tests', name)) as f:
        found += [f'tests/{name} {hit}' for hit in _reference_imports(ast.parse(f.read()))]
  assert found == []
  # The check itself sees each form.
  assert len(_reference_imports(ast.parse(
      'import torch\nfrom cv2 import imread\ndef f():\n  import torch.nn.functional as F\n'
      'pytest.importorskip("lpips")\nimportlib.import_module("basicsr.data")\n'
      'import_reference("torch")\nimport numpy'))) == 5
