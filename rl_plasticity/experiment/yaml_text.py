"""YAML as configs need it: a duplicate key is an error (PyYAML keeps the last one without a word), and so
is one key spelled two ways (``methods: {redo: ...}`` beside ``methods.redo: ...``); merge keys
(``<<: *defaults``) work; an error fits on one line; a config is written with short lists in flow
style."""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKeyError(ValueError):
    """Two equal keys in one mapping; the message names the key, both lines and the file."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; a config must not lose a section so.
    (Keys a merge key brings in may be overridden: that is what merging is for.)"""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first_lines:
                raise DuplicateKeyError(f"duplicate key {key!r} at lines {first_lines[key]} and {line} of "
                                  f"{key_node.start_mark.name}; a second {key!r} would silently replace "
                                  f"the first: merge them into one")
            first_lines[key] = line
        return super().construct_mapping(node, deep=deep)


def describe_yaml_error(error: yaml.YAMLError) -> str:
    """A YAML error on one line: where and what (PyYAML's own text spans several lines)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def _check_spellings(node: yaml.Node, source: str, prefix: tuple[str, ...] = (),
                     claims: dict[tuple[str, ...], tuple[int, str]] | None = None) -> None:
    """Every dotted path (``methods.redo.tau``) must come from one key: ``methods: {redo: ...}`` and a
    ``methods.redo:`` elsewhere are two spellings of one section, and the loader would keep only one."""
    claims = {} if claims is None else claims
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
            continue
        spelled, line = str(key_node.value), key_node.start_mark.line + 1
        parts = tuple(spelled.split("."))
        for length in range(1, len(parts) + 1):
            path = prefix + parts[:length]
            earlier = claims.get(path)
            if earlier is not None and earlier[1] != spelled:  # equal spellings: a duplicate key
                raise DuplicateKeyError(
                    f"{source}: {'.'.join(path)} is spelled two ways, {earlier[1]!r} at line {earlier[0]} "
                    f"and {spelled!r} at line {line}; one would silently replace the other: merge them into "
                    f"one (nested, e.g. `{parts[0]}:` with the rest indented under it)")
            claims[path] = (line, spelled)
        _check_spellings(value_node, source, prefix + parts, claims)


def read_yaml(text: str, source: str) -> Any:
    """YAML that rejects duplicate keys at any level, and one key spelled two ways, naming both lines."""
    loader = _UniqueKeyLoader(text)
    loader.name = source
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_spellings(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


class _Dumper(yaml.SafeDumper):
    """Block style for sections, flow style for short lists such as ``hidden_sizes: [256, 256]``."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


__all__ = ["DuplicateKeyError", "describe_yaml_error", "dump_yaml", "read_yaml"]
