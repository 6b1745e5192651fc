"""``Samples``: a result's long float lists (a value per request or per sample), kept compact.

A long run logs millions of requests. As Python lists of floats, its latencies cost about 32
bytes a value, and a result used to hold each list twice over (the summary's copy and the
model's), then once more in the JSON dump. ``Samples`` holds them as ``array('d')``, 8 bytes a
value, and a view over the folded state's arrays costs nothing at all: ``Samples.view`` shares
the array and remembers its length. The fold only ever appends, so a view stays the snapshot it
was even while a tailed log keeps growing.

To the models a ``SamplesField`` is a list of numbers: the same JSON Schema, the same validation
(a list of numbers in, from Python or JSON), the same dump (``model_dump`` gives lists). A
``Samples`` compares equal to a list or tuple with the same values. For the streamed result
file (``store.exporters``), a dump with a ``SampleSink`` as its context puts a placeholder
string where each ``Samples`` goes and collects the values, so that they can be written out in
chunks instead of as one list of Python floats.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any, overload

from pydantic import (
    PlainSerializer,
    SerializationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)

__all__ = ["FreeForm", "SampleSink", "Samples", "SamplesField", "dump_samples"]


class Samples(Sequence[float]):
    """A read-only sequence of floats over an ``array('d')``: 8 bytes a value, shared, not copied.

    ``Samples(values)`` copies ``values`` into a new array; ``Samples.view(arr)`` shares ``arr``
    and sees only its first ``len(arr)`` values, whatever is appended to it later.
    """

    __slots__ = ("_length", "_values")
    __hash__ = None  # type: ignore[assignment]  # a sequence compared by value, as a list is

    _values: array[float]
    _length: int

    def __init__(self, values: Iterable[float] = ()) -> None:
        self._values = array("d", values)
        self._length = len(self._values)

    @classmethod
    def view(cls, values: array[float]) -> Samples:
        """The values ``values`` holds now, without copying them.

        Only for an array that is appended to and never changed otherwise (the fold's arrays):
        a later append does not show in the view, a change in place would.
        """
        if values.typecode != "d":
            raise TypeError(f"Samples.view needs an array('d'), got typecode {values.typecode!r}")
        view = cls.__new__(cls)
        view._values = values
        view._length = len(values)
        return view

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> float: ...
    @overload
    def __getitem__(self, index: slice) -> Samples: ...
    def __getitem__(self, index: int | slice) -> float | Samples:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._length)
            if step == 1:
                return Samples(self._values[start:stop])
            return Samples(self._values[i] for i in range(start, stop, step))
        if not -self._length <= index < self._length:
            raise IndexError("Samples index out of range")
        return self._values[index % self._length]

    def __iter__(self) -> Iterator[float]:
        if self._length == len(self._values):
            return iter(self._values)
        return itertools.islice(self._values, self._length)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Samples):
            return self._length == other._length and self.as_array() == other.as_array()
        if isinstance(other, list | tuple | array):
            return self._length == len(other) and self.tolist() == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Samples({self.tolist()!r})"

    def __reduce__(self) -> tuple[type[Samples], tuple[array[float]]]:
        # A copy pickles only the values in view, as an array (8 bytes a value).
        return (Samples, (self.as_array(),))

    def as_array(self) -> array[float]:
        """The values as an ``array('d')``: the shared array itself when the view covers all of it.

        Read it, never change it: it may be the folded state's own array.
        """
        if self._length == len(self._values):
            return self._values
        return self._values[: self._length]

    def lists(self, size: int) -> Iterator[list[float]]:
        """The values as lists of at most ``size`` floats each, one list alive at a time."""
        for start in range(0, self._length, size):
            yield self._values[start : min(start + size, self._length)].tolist()

    def tolist(self) -> list[float]:
        """The values as a new list of Python floats (32 bytes a value: for small uses)."""
        return self.as_array().tolist()

    def memoryview(self) -> memoryview:
        """A read-only memoryview of the values (for numpy), without copying.

        While it is alive the array it views cannot grow (``BufferError``), so release it (a
        ``with`` block) before the fold appends again.
        """
        return memoryview(self._values)[: self._length].toreadonly()


class SampleSink:
    """The serialization context of a streamed dump: each ``Samples`` becomes a placeholder.

    ``placeholder(i)`` is the string dumped in place of the ``i``-th ``Samples`` collected; the
    caller picks a ``prefix`` that no other string of the document can hold.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.collected: list[Samples] = []

    def placeholder(self, index: int) -> str:
        """The string that stands for ``collected[index]`` in the dump."""
        return f"{self.prefix}{index}"

    def collect(self, samples: Samples) -> str:
        """Keep ``samples`` for the writer and return its placeholder."""
        self.collected.append(samples)
        return self.placeholder(len(self.collected) - 1)


def dump_samples(value: Any, context: Any) -> Any:
    """``value`` as it is dumped: a ``Samples`` as a list, or as a placeholder into a sink.

    Anything else is returned unchanged, so that free-form fields (``latency_measurements``) can
    pass their values through here.
    """
    if not isinstance(value, Samples):
        return value
    if isinstance(context, SampleSink):
        return context.collect(value)
    return value.tolist()


def _validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Samples:
    if isinstance(value, Samples):
        return value
    if isinstance(value, array) and value.typecode == "d":
        return Samples(value)
    return Samples(handler(value))


def _serialize(value: Samples, info: SerializationInfo) -> Any:
    return dump_samples(value, info.context)


if TYPE_CHECKING:
    # To a type checker the field is a read-only sequence: a list or a ``Samples`` goes in.
    SamplesField = Sequence[float]
else:
    # To pydantic it is ``list[float]`` (its validation and JSON Schema), held as ``Samples``;
    # the schema is spelled out because the serializer's return type cannot say "a list".
    SamplesField = Annotated[
        list[float],
        WrapValidator(_validate),
        PlainSerializer(_serialize, return_type=Any),
        WithJsonSchema({"items": {"type": "number"}, "type": "array"}),
    ]
"""A model field holding a list of floats as ``Samples`` (its schema: an array of numbers)."""


def _serialize_free_form(value: Any, info: SerializationInfo) -> Any:
    if isinstance(value, dict):
        return {key: dump_samples(item, info.context) for key, item in value.items()}
    return dump_samples(value, info.context)


FreeForm = Annotated[Any, PlainSerializer(_serialize_free_form, return_type=Any)]
"""A free-form field (``Any``) whose value, or a dict's values, may be ``Samples``.

``latency_measurements`` is such a dict: its keys are LLenergyMeasure's, so it has no model of
its own, and its sample lists are ``Samples`` when the result comes from a replay.
"""
