"""Named rules that a :class:`~strategies.settings.SearchSettings` field chooses (as torchvision registers models).

``scoring`` picks a screening ranking rule from :data:`strategies.screener.RANKING_RULES` and
``decision`` an export decision rule from :data:`strategies.decision.DECISIONS`. A rule is a
factory ``(settings) -> rule`` (usually the class itself) registered under its setting value;
the settings check their value against the registry, so a registered rule is a valid setting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from strategies.settings import SearchSettings

T = TypeVar("T")


class Registry(dict[str, Callable[["SearchSettings"], T]], Generic[T]):
    """``name -> factory(settings)`` for the values of one setting (``field``)."""

    def __init__(self, field: str) -> None:
        super().__init__()
        self.field = field

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator: ``@REGISTRY.register("name")`` over a class (or function) taking the settings."""

        def add(factory: Any) -> Any:
            if name in self:
                raise ValueError(f"{self.field}: a rule named {name!r} is already registered ({self[name]})")
            self[name] = factory
            return factory

        return add

    def build(self, name: str, settings: SearchSettings) -> T:
        """The rule ``name`` made for ``settings``."""
        if name not in self:
            raise ValueError(f"{self.field}: must be one of {', '.join(self)}, got {name!r}")
        return self[name](settings)
