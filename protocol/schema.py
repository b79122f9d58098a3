"""Message schemas: the generated tables, turned into construct trees on demand.

The modules in :mod:`protocol.messages` are generated from Kafka's JSON
message definitions and contain only facts: for each message, its fields
with their types, version ranges, nullability, defaults and tags.  This
module gives those tables behaviour.  ``Message.struct(version)`` builds the
:class:`~protocol.types.KStruct` tree for one version the first time it is
needed and caches it, so ``import protocol`` stays cheap although Kafka has
close to a thousand (message, version) pairs.

Version ranges are ``(low, high)`` tuples, inclusive; ``high`` is
``MAX_VERSION`` for an open range ("3+").
"""

from __future__ import annotations

import uuid as _uuid
from typing import Any, NamedTuple

import construct

from . import types as T
from .errors import ProtocolError

MAX_VERSION = 0x7FFF

Range = tuple  # (low, high)


def _in(version: int, rng) -> bool:
    return rng is not None and rng[0] <= version <= rng[1]


class F(NamedTuple):
    """One field of a message or struct, as the generator writes it."""

    name: str
    type: str  # "int32", "string", "[]int32", "[]SomeStruct", "SomeStruct", ...
    versions: Range
    nullable: Range | None = None
    default: Any = None  # already a Python value; None means "the type's default"
    has_default: bool = False  # True when the JSON gave a default (it may be null)
    ignorable: bool = False
    tag: int | None = None
    tagged: Range | None = None
    flexible: Any = True  # False: stays classic even in flexible versions (header ClientId)
    fields: tuple = ()  # inline struct definition


_PRIMITIVES = {
    "bool": T.BOOL,
    "int8": T.INT8,
    "int16": T.INT16,
    "uint16": T.UINT16,
    "int32": T.INT32,
    "uint32": T.UINT32,
    "int64": T.INT64,
    "float64": T.FLOAT64,
    "uuid": T.UUID,
}


class Message:
    """A message (request, response, header, data or record schema) in all its versions."""

    def __init__(
        self,
        name: str,
        kind: str,
        *,
        valid: Range,
        flexible: Range | None,
        fields: tuple,
        structs: dict | None = None,
        api_key: int | None = None,
        listeners: tuple = (),
        latest_unstable: bool = False,
    ):
        self.name = name
        self.kind = kind
        self.api_key = api_key
        self.valid = valid
        self.flexible_versions = flexible
        self.fields = fields
        self.listeners = listeners
        self.latest_unstable = latest_unstable
        self._structs = dict(structs or {})
        # Inline struct definitions may be referenced by name elsewhere in the file.
        self._collect(fields)
        self._cache: dict[int, T.KStruct] = {}
        self._arrays: dict[tuple[int, str], T.Array] = {}

    def __repr__(self) -> str:
        return f"<Message {self.name} v{self.valid[0]}-{self.valid[1]}>"

    def _collect(self, fields):
        for f in fields:
            if f.fields:
                self._structs.setdefault(_struct_name(f.type), f.fields)
                self._collect(f.fields)

    def is_flexible(self, version: int) -> bool:
        return _in(version, self.flexible_versions)

    def supports(self, version: int) -> bool:
        return self.valid[0] <= version <= self.valid[1]

    def struct(self, version: int) -> T.KStruct:
        """The construct for this message in ``version`` (cached)."""
        s = self._cache.get(version)
        if s is None:
            if not self.supports(version):
                raise ProtocolError(
                    f"{self.name} has no version {version} (valid: {self.valid[0]}-{self.valid[1]})"
                )
            s = self._build_struct(self.name, self.fields, version)
            self._cache[version] = s
        return s

    # -- building construct trees ----------------------------------------
    def _build_struct(self, name: str, fields: tuple, version: int) -> T.KStruct:
        flexible = self.is_flexible(version)
        present, absent, tagged = [], {}, []
        for f in fields:
            if not _in(version, f.versions):
                absent[f.name] = (self._default_factory(f, version), f.ignorable)
                continue
            is_tagged = f.tag is not None and _in(version, f.tagged or f.versions)
            if is_tagged and not flexible:
                absent[f.name] = (self._default_factory(f, version), True)
                continue
            con = self._field_con(f, version, flexible)
            factory = self._default_factory(f, version)
            con_default = _DefaultCarrier(con, factory)
            if is_tagged:
                tagged.append(T.TaggedField(f.name, f.tag, con, factory, _is_default_fn(factory)))
            else:
                present.append((f.name, con_default))
        return T.KStruct(name, present, absent, tagged, flexible)

    def _field_con(self, f: F, version: int, flexible: bool) -> construct.Construct:
        compact = flexible and f.flexible is not False
        nullable = _in(version, f.nullable)
        typ = f.type
        if typ.startswith("[]"):
            elem = typ[2:]
            if elem in _PRIMITIVES:
                elem_con = _PRIMITIVES[elem]
            elif elem == "string":
                elem_con = T.String(compact, False)
            elif elem in ("bytes", "records"):
                elem_con = T.Bytes(compact, False)
            else:
                elem_con = self._struct_con(elem, version)
            return T.Array(elem_con, compact, nullable)
        if typ in _PRIMITIVES:
            return _PRIMITIVES[typ]
        if typ == "string":
            return T.String(compact, nullable)
        if typ == "bytes":
            return T.Bytes(compact, nullable)
        if typ == "records":
            return T.Bytes(compact, nullable, zero_copy=True)
        con = self._struct_con(typ, version)
        if nullable:
            return _NullableStruct(con)
        return con

    def _struct_con(self, struct_name: str, version: int) -> T.KStruct:
        fields = self._structs.get(struct_name)
        if fields is None:
            raise KeyError(f"{self.name}: unknown struct type {struct_name}")
        return self._build_struct(struct_name, fields, version)

    def _default_factory(self, f: F, version: int):
        typ = f.type
        if typ.startswith("[]"):
            if f.has_default and f.default is None:
                return _none
            return list
        if typ in _PRIMITIVES or typ in ("string", "bytes", "records"):
            if f.has_default:
                value = f.default
            elif typ == "records":
                value = None
            elif typ == "bytes":
                value = b""
            elif typ == "string":
                value = ""
            else:
                value = _PRIMITIVES[typ].default
            return _constant(value)
        # A struct: its default is every field at its own default.
        if f.has_default and f.default is None:
            return _none
        sub = self._structs.get(typ)
        if sub is None:
            raise KeyError(f"{self.name}: unknown struct type {typ}")
        factories = [(g.name, self._default_factory(g, version)) for g in sub]

        def make():
            c = construct.Container()
            for n, fac in factories:
                c[n] = fac()
            return c

        return make

    def default(self, version: int | None = None) -> construct.Container:
        """A body with every field at its default (for building messages by hand)."""
        c = construct.Container()
        for f in self.fields:
            c[f.name] = self._default_factory(f, version or self.valid[1])()
        return c

    # -- encoding and decoding -------------------------------------------
    def decode(self, data, version: int, *, exact: bool = True):
        """Decode ``data`` (bytes-like or a :class:`BufferReader`) as this message in ``version``."""
        reader = data if isinstance(data, T.BufferReader) else T.BufferReader(data)
        con = self.struct(version)
        try:
            obj = con._parse(reader, None, "")
        except ProtocolError as e:
            e.message = f"{self.name} v{version}: {e.message}"
            raise
        if exact and reader.pos != reader.end:
            raise ProtocolError(
                f"{self.name} v{version}: {reader.end - reader.pos} unexpected bytes after the message "
                f"at offset {reader.pos}"
            )
        return obj

    def encode_into(self, obj, version: int, writer: T.ChunkWriter) -> None:
        con = self.struct(version)
        try:
            con._build(obj, writer, None, "")
        except ProtocolError as e:
            e.message = f"{self.name} v{version}: {e.message}"
            raise

    def array_field(self, version: int, path: str) -> T.Array:
        """The array construct of the field at ``path`` in ``version``.

        ``path`` names fields from the top, dot-separated; each name before
        the last must be an array of structs or a struct ("topics.partitions").
        Tagged fields count too.
        """
        cached = self._arrays.get((version, path))
        if cached is not None:
            return cached
        con: Any = self.struct(version)
        for name in path.split("."):
            if isinstance(con, T.Array):
                con = con.element
            if not isinstance(con, T.KStruct):
                raise ProtocolError(f"{self.name} v{version}: {path!r} does not lead through structs")
            found = dict(con.fields).get(name)
            if found is None and name in con.tagged_by_name:
                found = con.tagged_by_name[name].con
            if found is None:
                raise ProtocolError(f"{self.name} v{version} has no field {path!r}")
            while isinstance(found, (_DefaultCarrier, _NullableStruct)):
                found = found.subcon
            con = found
        if not isinstance(con, T.Array):
            raise ProtocolError(f"{self.name} v{version}: {path!r} is not an array")
        self._arrays[(version, path)] = con
        return con

    def encode_elements(self, version: int, path: str, items) -> T.EncodedElements:
        """Encode ``items`` as elements of the array at ``path`` (see :meth:`array_field`).

        The result can stand in for that field's list when this message is
        encoded in the same version (:class:`~protocol.types.EncodedElements`).
        """
        element = self.array_field(version, path).element
        w = T.ChunkWriter()
        build = element._build
        items = list(items)
        i = 0
        try:
            for i, item in enumerate(items):
                build(item, w, None, "")
        except ProtocolError as e:
            e.path.insert(0, f"[{i}]")
            e.message = f"{self.name} v{version} {path}: {e.message}"
            raise
        return T.EncodedElements(element, len(items), w.getvalue())

    def encode(self, obj, version: int) -> bytes:
        w = T.ChunkWriter()
        self.encode_into(obj, version, w)
        return w.getvalue()


def _struct_name(typ: str) -> str:
    return typ[2:] if typ.startswith("[]") else typ


def _none():
    return None


def _constant(value):
    if isinstance(value, (list, dict, bytearray)):
        raise TypeError("mutable constant default")
    return lambda: value


def _is_default_fn(factory):
    def is_default(value):
        d = factory()
        if isinstance(d, _uuid.UUID) and isinstance(value, (bytes, bytearray)):
            return bytes(value) == d.bytes
        return value == d

    return is_default


class _DefaultCarrier(construct.Subconstruct):
    """Wraps a field's construct to remember its default for encoding.

    KStruct asks ``default_factory`` when a body leaves a field out.
    Parsing and building go straight to the wrapped construct.
    """

    def __init__(self, subcon, factory):
        super().__init__(subcon)
        self.default_factory = factory
        self._parse = subcon._parse
        self._build = subcon._build


class _NullableStruct(construct.Subconstruct):
    """A nullable struct field: int8 -1 for null, 1 then the struct (Kafka's encoding)."""

    def _parse(self, stream, context, path):
        marker = T.INT8._parse(stream, context, path)
        if marker < 0:
            return None
        return self.subcon._parse(stream, context, path)

    def _build(self, obj, stream, context, path):
        if obj is None:
            T.INT8._build(-1, stream, context, path)
            return obj
        T.INT8._build(1, stream, context, path)
        return self.subcon._build(obj, stream, context, path)
