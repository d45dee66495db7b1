"""Config nodes as plain Python values, and options read from them."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import UserError


def plain(node: Any) -> dict[str, Any]:
    """A config node (or None) as a plain dict, interpolations resolved."""
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node)


def option(node: Any, key: str, where: str) -> Any:
    """``node[key]``; a missing key is a one-line :class:`UserError` naming ``<where>.<key>``.

    The YAML config groups hold every option's default and the code keeps none of its own, so a
    default is written once; a key is missing only where a config or override replaced the whole
    node. ``None`` is a value (``wheel_dir: null``), not a missing key."""
    if node is None or key not in node:
        raise UserError(f"config option {where}.{key} is missing; mer's YAML config holds its default, "
                        f"so a config or override that replaces {where} must set it too")
    return node[key]
