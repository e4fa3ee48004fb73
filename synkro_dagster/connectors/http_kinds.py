"""One map from a spec model class (an auth or pagination kind) to the code implementing that kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from pydantic import BaseModel

from synkro_dagster.connectors.http_errors import HttpSourceError

_Impl = TypeVar("_Impl")


class KindMap(Generic[_Impl]):
    """Joins each spec model to its implementation; `register` is used as a class decorator."""

    def __init__(self, what: str, register_with: str) -> None:
        self._what = what  # "auth", "pagination"
        self._register_with = register_with  # named in the error for a kind without code
        self._by_model: dict[type[BaseModel], _Impl] = {}

    def register(self, model: type[BaseModel]) -> Callable[[_Impl], _Impl]:
        """Decorator: the class implements the kind of spec model `model`."""

        def add(implementation: _Impl) -> _Impl:
            if model in self._by_model:
                raise ValueError(f"{self._what} model {model.__name__} is registered twice")
            self._by_model[model] = implementation
            return implementation

        return add

    def models(self) -> frozenset[type[BaseModel]]:
        return frozenset(self._by_model)

    def implementation(self, spec: BaseModel, where: str = "") -> _Impl:
        """What implements `spec`'s kind; `where` ("integration 'x', stream 'y': ") starts the
        error for a kind nothing implements."""
        found = self._by_model.get(type(spec))
        if found is None:
            kind = getattr(spec, "kind", type(spec).__name__)
            raise HttpSourceError(
                f"{where}{self._what} kind '{kind}' has no implementation "
                f"(register one with {self._register_with})"
            )
        return found
