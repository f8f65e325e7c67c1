"""Reading the YAML an operator writes (scenarios, emulator profiles): safely and within bounds.

- Safe types only (PyYAML's SafeLoader), and a duplicate key is an error (PyYAML silently keeps
  the last one).
- Aliases are bounded: a "billion laughs" document (anchors that refer to anchors) is a few
  lines of text that expand to billions of values once validated or copied. The document's
  size with every alias expanded is counted on the composed node graph (each node once, in
  linear time) before any object is built; above `MAX_VALUES` the file is refused.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_VALUES = 1_000_000  # scalars, lists and mappings of the document with its aliases expanded


class TooLarge(yaml.YAMLError):
    """The document expands to more values than allowed."""

    def __init__(self) -> None:
        super().__init__()
        self.problem = f"the document expands to more than {MAX_VALUES:,} values once its aliases are resolved"
        self.problem_mark = None

    def __str__(self) -> str:
        return self.problem


class Recursive(yaml.YAMLError):
    """An alias inside the very value its anchor names: the value would be infinite."""

    def __init__(self, mark: Any) -> None:
        super().__init__()
        self.problem = "an alias refers to a value that contains it (a recursive anchor)"
        self.problem_mark = mark

    def __str__(self) -> str:
        return self.problem


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # the default constructor reports unhashable keys
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key].line + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def expanded_size(root: yaml.Node, limit: int = MAX_VALUES) -> int:
    """How many values the node graph holds with every alias expanded (stops counting past `limit`)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()  # nodes whose children are being counted: the current path
    # iterative post-order: a deep document must not exhaust Python's recursion
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done or not children:
            on_path.discard(id(node))
            sizes[id(node)] = min(limit + 1, 1 + sum(sizes[id(child)] for child in children))
            continue
        if id(node) in on_path:
            raise Recursive(node.start_mark)
        on_path.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load(text: str) -> Any:
    """The document in `text` (None if empty). Raises yaml.YAMLError, TooLarge included."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        size = expanded_size(root)
        if size > MAX_VALUES:
            raise TooLarge()
        return loader.construct_document(root)
    finally:
        loader.dispose()
