"""Every public function and class has a runnable ``Examples:`` section, and every example runs.

"Public" is what the packages export (their ``__all__``): the names users import. Each
docstring's examples run here with doctest, in a fresh namespace, in a temporary folder (examples
that write files write there).
"""

import doctest
import importlib
import inspect

import pytest

PACKAGES = [
    "gscnn_ops",
    "gscnn_ops.ops",
    "gscnn_ops.nn",
    "gscnn_ops.metrics",
    "gscnn_ops.filters",
    "gscnn_ops.models",
    "gscnn_ops.data",
    "gscnn_ops.engine",
    "gscnn_ops.reference",
]


def public_objects():
    seen = {}
    for name in PACKAGES:
        package = importlib.import_module(name)
        exported = getattr(package, "__all__", None) or [
            n for n in dir(package) if not n.startswith("_")
        ]
        for attr in exported:
            obj = getattr(package, attr)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith(
                "gscnn_ops"
            ):
                seen.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return seen


OBJECTS = public_objects()


def test_the_public_api_is_found():
    assert len(OBJECTS) > 60
    assert "gscnn_ops.ops.gated_conv2d.gated_conv2d" in OBJECTS


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_examples_run(name, tmp_path, monkeypatch):
    obj = OBJECTS[name]
    doc = inspect.getdoc(obj) or ""
    assert "Examples:" in doc and ">>>" in doc, f"{name}: no runnable Examples: section"
    monkeypatch.chdir(tmp_path)
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    tests = finder.find(obj, name, globs={})
    assert tests and tests[0].examples, name
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
