"""YAML as configs need it: a duplicate key is an error (PyYAML keeps the last one without a word), an
error fits on one line, and a config is written with short lists in flow style."""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKeyError(ValueError):
    """Two equal keys in one mapping; the message names the key, both lines and the file."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; a config must not lose a section so."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
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


def read_yaml(text: str, source: str) -> Any:
    """YAML that rejects duplicate keys at any level, naming the key and both lines."""
    loader = _UniqueKeyLoader(text)
    loader.name = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _Dumper(yaml.SafeDumper):
    """Block style for sections, flow style for short lists such as ``hidden_sizes: [256, 256]``."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


__all__ = ["DuplicateKeyError", "describe_yaml_error", "dump_yaml", "read_yaml"]
