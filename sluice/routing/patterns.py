"""Model name patterns: a public name with one `*` (`claude-*`, `openrouter/*`) matches many requested
names; a target's model may say `*` (the matched part) or `{model}` (the whole requested name) to
rewrite it for the upstream; suffixes clients add (`[1m]`) can be stripped per rule before matching.
"""

from __future__ import annotations


def is_pattern(name: str) -> bool:
    return "*" in name


def match(pattern: str, name: str) -> str | None:
    """The part of `name` the pattern's `*` stands for (maybe empty), or None when it does not match."""
    head, star, tail = pattern.partition("*")
    if not star:
        return "" if name == pattern else None
    if len(name) < len(head) + len(tail) or not name.startswith(head) or not name.endswith(tail):
        return None
    return name[len(head):len(name) - len(tail)]


def candidates(name: str, strip: list[str]) -> list[str]:
    """The name without a suffix the rule strips (the label never reaches the upstream); else the name."""
    return [name[:-len(s)] for s in strip if s and name.endswith(s) and len(name) > len(s)] or [name]


def upstream_name(template: str, requested: str, star: str) -> str:
    """The model to ask the upstream for: `{model}` is the (stripped) requested name, `*` the matched part."""
    return template.replace("{model}", requested).replace("*", star)


def public_name(pattern: str, template: str, upstream_id: str) -> str | None:
    """The inverse, for listing what an upstream offers under a pattern; None when it cannot be named."""
    if template == "{model}":
        return upstream_id if match(pattern, upstream_id) is not None else None
    if "*" in template and "{model}" not in template:
        star = match(template, upstream_id)
        return None if star is None else pattern.replace("*", star, 1)
    return None
