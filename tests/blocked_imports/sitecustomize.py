"""Makes the modules named in VDSR_BLOCKED_IMPORTS (comma-separated) unimportable, as if not installed, in every
Python process started with this folder on PYTHONPATH (and so in the processes those start).

An import that reaches one raises ModuleNotFoundError with a note naming the chain of imports that led to it,
e.g. `vdsr_jax.train_step -> vdsr_jax.data.patches -> vdsr_jax.data -> … -> tensorflow_datasets` (a package
is counted as imported by the submodule whose import loaded it).
"""
import builtins
import importlib.util
import os
import sys

BLOCKED = frozenset(name for name in os.environ.get("VDSR_BLOCKED_IMPORTS", "").split(",") if name)
_imported_by = {}  # module -> the module whose import statement first loaded it
_import = builtins.__import__


def import_chain(name: str) -> str:
    chain = [name]
    while chain[-1] in _imported_by and _imported_by[chain[-1]] not in chain:
        chain.append(_imported_by[chain[-1]])
    return " -> ".join(reversed(chain))


def _recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__", "?")
    full = importlib.util.resolve_name("." * level + name, globals.get("__package__")) if level else name
    parts = full.split(".")
    for i in range(1, len(parts)):  # the packages above, loaded on behalf of the module below each
        if sys.modules.get(".".join(parts[:i])) is None:
            _imported_by[".".join(parts[:i])] = ".".join(parts[:i + 1])
    for module in [full] + [f"{full}.{item}" for item in fromlist or () if item != "*"]:
        if sys.modules.get(module) is None:  # not loaded, or blocked
            _imported_by[module] = importer
    try:
        return _import(name, globals, locals, fromlist, level)
    except ModuleNotFoundError as e:
        blocked = any(e.name == b or (e.name or "").startswith(b + ".") for b in BLOCKED)
        if blocked and not getattr(e, "chain_noted", False):
            e.add_note(f"blocked import: {import_chain(e.name)}")
            e.chain_noted = True
        raise


for _name in BLOCKED:
    sys.modules[_name] = None  # `import` then raises ModuleNotFoundError, as for a missing package
if BLOCKED:
    builtins.__import__ = _recording_import
